//! End-to-end: the real `postern` binary, real sockets, real sled on disk.

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Pki, Postern, Rng, eventually, run_to_exit};

/// Every rule acknowledged with 201 is still there after SIGKILL, over several kill rounds
/// at random points under 16 concurrent writers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_right_after_201_loses_nothing() {
    let mut rng = Rng::from_env();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("tls"));
    let acknowledged: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut next_name = 0u64;
    for round in 0..4 {
        let postern = Postern::control(dir.path(), &pki);
        let token = postern.admin_token();
        let http = postern.client();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..16 {
            let (base, token, acked, stop, http) = (
                postern.base.clone(),
                token.clone(),
                acknowledged.clone(),
                stop.clone(),
                http.clone(),
            );
            let first = next_name + w * 1_000_000;
            writers.push(tokio::spawn(async move {
                let mut n = first;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let m = format!("r{round}-{n}.example");
                    n += 1;
                    let sent = http
                        .post(format!("{base}/v1/policy/inbound/rules"))
                        .bearer_auth(&token)
                        .json(&json!({"match": m, "level": "encrypt"}))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 201 => {
                            let body: Value = r.json().await.unwrap_or(Value::Null);
                            if let Some(id) = body["id"].as_str() {
                                acked.lock().unwrap().push((id.to_string(), m));
                            }
                        }
                        Ok(r) => panic!("unexpected status {}", r.status()),
                        Err(_) => break, // the process is gone
                    }
                }
            }));
        }
        next_name += 100;
        let wait = 100 + rng.below(400);
        eprintln!("round {round}: killing after {wait} ms");
        tokio::time::sleep(Duration::from_millis(wait)).await;
        postern.kill();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in writers {
            w.await.unwrap();
        }
    }
    let acked = acknowledged.lock().unwrap().clone();
    assert!(
        acked.len() > 20,
        "too few writes to mean anything: {}",
        acked.len()
    );
    let postern = Postern::control(dir.path(), &pki);
    let http = postern.client();
    let list: Value = http
        .get(format!(
            "{}/v1/policy/inbound/rules?limit=100000",
            postern.base
        ))
        .bearer_auth(postern.admin_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored: HashSet<(String, String)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["match"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let lost: Vec<_> = acked.iter().filter(|a| !stored.contains(a)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged rules lost: {lost:?}",
        lost.len(),
        acked.len()
    );
    eprintln!(
        "{} acknowledged rules all survived 4 SIGKILLs ({} stored)",
        acked.len(),
        stored.len()
    );
    // The version history is intact and contiguous (version 1 is the initial policy).
    let versions: Value = http
        .get(format!("{}/v1/policy/versions?limit=1", postern.base))
        .bearer_auth(postern.admin_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        versions["current"].as_u64().unwrap() as usize,
        stored.len() + 1
    );
}

#[test]
fn admin_token_file_is_private_and_made_once() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("tls"));
    let first = {
        let p = Postern::control(dir.path(), &pki);
        p.admin_token()
    };
    let meta = std::fs::metadata(dir.path().join("admin-token")).unwrap();
    #[cfg(unix)]
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    assert!(first.starts_with("pst_") && first.len() == 68);
    let second = Postern::control(dir.path(), &pki).admin_token();
    assert_eq!(first, second, "a restart made a new admin token");
}

#[test]
fn startup_errors_are_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("tls"));
    let d = dir.path().to_str().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    let (cert, key, ca) = (
        pki.path("control.pem"),
        pki.path("control.key"),
        pki.path("ca.pem"),
    );
    let control = |extra: &[&str], tls: bool| -> Vec<String> {
        let mut args = vec!["control", "--data-dir", d];
        args.extend_from_slice(extra);
        if tls {
            args.extend_from_slice(&["--tls-cert", &cert, "--tls-key", &key, "--client-ca", &ca]);
        }
        args.into_iter().map(String::from).collect()
    };
    let any = [
        "--http-listen",
        "127.0.0.1:0",
        "--grpc-listen",
        "127.0.0.1:0",
    ];
    let dev = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["dev", "--data-dir", d];
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect()
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (control(&["--bogus"], true), "--bogus"),
        (
            control(
                &["--http-listen", "nope", "--grpc-listen", "127.0.0.1:0"],
                true,
            ),
            "nope",
        ),
        (
            control(
                &["--http-listen", &busy_addr, "--grpc-listen", "127.0.0.1:0"],
                true,
            ),
            &busy_addr,
        ),
        (
            control(
                &["--http-listen", "127.0.0.1:0", "--grpc-listen", &busy_addr],
                true,
            ),
            &busy_addr,
        ),
        // gRPC always uses mutual TLS: without its flags there is no control plane.
        (control(&any, false), "--tls-cert"),
        (
            control(
                &[
                    &any[..],
                    &["--tls-cert", missing, "--tls-key", &key, "--client-ca", &ca],
                ]
                .concat(),
                false,
            ),
            "--tls-cert",
        ),
        (
            control(
                &[
                    &any[..],
                    &["--tls-cert", &cert, "--tls-key", &ca, "--client-ca", &ca],
                ]
                .concat(),
                false,
            ),
            "--tls-key",
        ),
        (dev(&["--http-listen", "0.0.0.0:0"]), "--insecure-http"),
        (
            dev(&["--http-listen", "127.0.0.1:0", "--smtp-listen", &busy_addr]),
            &busy_addr,
        ),
        (vec!["frobnicate".into()], "frobnicate"),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stderr) = run_to_exit(&args, &[]);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{args:?} printed more than one line: {stderr}"
        );
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    // POSTERN_* variables stand in for flags.
    let (code, stderr) = run_to_exit(
        &["control", "--data-dir", d, "--grpc-listen", "127.0.0.1:0"],
        &[
            ("POSTERN_HTTP_LISTEN", &busy_addr),
            ("POSTERN_TLS_CERT", &cert),
            ("POSTERN_TLS_KEY", &key),
            ("POSTERN_CLIENT_CA", &ca),
        ],
    );
    assert_eq!(code, 2);
    assert!(stderr.contains(&busy_addr), "{stderr}");
}

#[test]
fn a_second_process_on_the_same_data_dir_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("tls"));
    let _first = Postern::control(dir.path(), &pki);
    let d = dir.path().to_str().unwrap();
    let (cert, key, ca) = (
        pki.path("control.pem"),
        pki.path("control.key"),
        pki.path("ca.pem"),
    );
    let (code, stderr) = run_to_exit(
        &[
            "control",
            "--data-dir",
            d,
            "--http-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--client-ca",
            &ca,
        ],
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("store"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

/// `postern dev` runs the control plane and a worker with generated certificates; the worker
/// gets the policy that trusts loopback, and SIGTERM stops both cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_runs_control_and_worker_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("postern-data");
    let p = Postern::dev(&data, "dev.test");
    let get = |path: &str| {
        let (base, token, http) = (p.base.clone(), p.admin_token(), p.client());
        let path = path.to_string();
        async move {
            let r = http
                .get(format!("{base}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()
        }
    };
    assert_eq!(
        get("/v1/relay").await["networks"],
        json!(["127.0.0.0/8", "::1/128"])
    );
    let version = get("/v1/policy").await["version"].as_u64().unwrap();
    let worker = support::eventually(
        "the dev worker to apply the policy",
        Duration::from_secs(30),
        || async {
            let workers = get("/v1/workers").await;
            workers["items"]
                .as_array()
                .unwrap()
                .first()
                .filter(|w| w["applied_version"] == version)
                .cloned()
        },
    )
    .await;
    assert_eq!(worker["id"], "dev-worker");
    let smtp = worker["smtp_addr"].as_str().unwrap();
    assert_eq!(
        support::smtp_greeting(smtp).await,
        "220 dev.test ESMTP Postern"
    );
    for f in [
        "tls/ca.pem",
        "tls/control.key",
        "tls/worker.key",
        "spool/policy/last-known-good.pb",
        "admin-token",
    ] {
        assert!(data.join(f).exists(), "{f}");
    }
    let status = p.terminate();
    assert!(status.success(), "{status:?}");
}

/// `postern control` serves its REST API over HTTPS with its certificate (docs/src/interfaces.md).
#[tokio::test]
async fn control_serves_rest_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("tls"));
    let p = Postern::control(dir.path(), &pki);
    assert!(p.base.starts_with("https://"));
    let r = p
        .client()
        .get(format!("{}/healthz", p.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let plain = p.base.replacen("https://", "http://", 1);
    let r = reqwest::Client::new()
        .get(format!("{plain}/healthz"))
        .send()
        .await;
    assert!(
        r.is_err() || r.unwrap().status() != 200,
        "plain HTTP was served"
    );
    // A client that does not trust the CA is refused by the handshake.
    assert!(
        reqwest::Client::new()
            .get(format!("{}/healthz", p.base))
            .send()
            .await
            .is_err()
    );
}

/// Far more silent connections than the cap (1,024) to the REST (HTTPS) and health listeners
/// hold nothing past their first-byte deadline: both still answer, and the server closes every
/// one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_and_the_api_still_answers() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard.min(8192), hard).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("tls"));
    pki.client("w", &["w"]);
    let control = Postern::control(&dir.path().join("control"), &pki);
    let worker = Postern::worker(&dir.path().join("spool"), &pki, &control.other, "w", "w");
    control.wait_applied().await;
    let token = control.admin_token();
    for (base, path, client) in [
        (&control.base, "/v1/policy", control.client()),
        (&worker.base, "/healthz", reqwest::Client::new()),
    ] {
        let addr = base.rsplit("://").next().unwrap().to_string();
        let mut silent = Vec::new();
        for _ in 0..1500 {
            silent.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
        }
        let url = format!("{base}{path}");
        eventually(
            &format!("{url} to answer beside 1,500 silent connections"),
            Duration::from_secs(90),
            || async {
                let r = client
                    .get(&url)
                    .bearer_auth(&token)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                    .ok()?;
                (r.status() == 200).then_some(())
            },
        )
        .await;
        for tcp in &mut silent {
            let mut buf = [0u8; 16];
            let read = tokio::time::timeout(
                Duration::from_secs(60),
                tokio::io::AsyncReadExt::read(tcp, &mut buf),
            )
            .await
            .expect("a silent connection was never closed");
            assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        }
        eprintln!("{url}: answered, and 1,500 silent connections closed");
    }
}

/// The data directory and the spool, even made 0755 beforehand, and everything written in them
/// are the owner's alone (directories 0700, files 0600); the token file is never written through
/// a symlink planted at its temporary name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_and_spool_are_private_and_no_planted_symlink_is_followed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (data, spool) = (dir.path().join("control"), dir.path().join("spool"));
    for d in [&data, &spool] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    std::os::unix::fs::symlink(&victim, data.join("admin-token.tmp")).unwrap();
    let pki = Pki::new(&dir.path().join("tls"));
    pki.client("w", &["w"]);
    let control = Postern::control(&data, &pki);
    let _worker = Postern::worker(&spool, &pki, &control.other, "w", "w");
    control.wait_applied().await;
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    let token = std::fs::symlink_metadata(data.join("admin-token")).unwrap();
    assert!(token.is_file());
    let mut seen = 0;
    for top in [&data, &spool] {
        let mut dirs = vec![top.clone()];
        while let Some(d) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
                    continue; // removed meanwhile
                };
                let mode = meta.permissions().mode() & 0o777;
                if meta.is_dir() {
                    assert_eq!(mode, 0o700, "{}", entry.path().display());
                    dirs.push(entry.path());
                } else {
                    assert_eq!(mode, 0o600, "{}", entry.path().display());
                    seen += 1;
                }
            }
        }
        let mode = std::fs::metadata(top).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", top.display());
    }
    assert!(seen >= 5, "too few files to mean anything: {seen}");
}

/// The README's production walk-through (issue 13, point 4): `postern pki init`, one
/// `postern pki worker` per worker, then `postern control` and two `postern worker` processes
/// with only those files; both workers connect and enforce the policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_setup_from_postern_pki_alone() {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    let pki_arg = pki_dir.to_str().unwrap();
    let init = [
        "pki",
        "init",
        "--dir",
        pki_arg,
        "--name",
        "localhost,127.0.0.1",
    ];
    let (code, err) = run_to_exit(&init, &[]);
    assert_eq!(code, 0, "{err}");
    let (code, err) = run_to_exit(&init, &[]);
    assert_eq!(code, 2, "init twice must refuse: {err}");
    assert!(err.contains("refusing to overwrite"), "{err}");
    for id in ["w1", "w2"] {
        let (code, err) = run_to_exit(&["pki", "worker", id, "--dir", pki_arg], &[]);
        assert_eq!(code, 0, "{err}");
    }
    let (code, err) = run_to_exit(&["pki", "worker", "bad id", "--dir", pki_arg], &[]);
    assert_eq!(code, 2, "{err}");
    let pki = Pki::made_by_postern(&pki_dir);
    let control = Postern::control(&dir.path().join("control"), &pki);
    let workers: Vec<Postern> = ["w1", "w2"]
        .iter()
        .map(|id| {
            let spool = dir.path().join(format!("spool-{id}"));
            Postern::worker(&spool, &pki, &control.other, id, &format!("worker-{id}"))
        })
        .collect();
    let version = control
        .rest(reqwest::Method::GET, "/v1/policy", Value::Null)
        .await["version"]
        .clone();
    eventually(
        "both workers to apply the policy",
        Duration::from_secs(30),
        || async {
            let list = control
                .rest(reqwest::Method::GET, "/v1/workers", Value::Null)
                .await;
            let applied: HashSet<String> = list["items"]
                .as_array()?
                .iter()
                .filter(|w| w["connected"] == true && w["applied_version"] == version)
                .filter_map(|w| w["id"].as_str().map(str::to_string))
                .collect();
            (applied.len() == 2).then_some(())
        },
    )
    .await;

    // Renewals without a restart. The control plane's certificate: both listeners serve the
    // new one from the next handshake, and the workers' streams in flight are not dropped.
    let rest = control.base.trim_start_matches("https://").to_string();
    let client = Some(("worker-w2.pem", "worker-w2.key"));
    let (rest_before, grpc_before) = (
        served_certificate(&rest, &pki, None).await,
        served_certificate(&control.other, &pki, client).await,
    );
    let renew = [
        "pki",
        "control",
        "--dir",
        pki_arg,
        "--name",
        "localhost,127.0.0.1",
    ];
    let (code, err) = run_to_exit(&renew, &[]);
    assert_eq!(code, 0, "{err}");
    eventually(
        "both listeners to serve the renewed certificate",
        Duration::from_secs(30),
        || async {
            let rest_now = served_certificate(&rest, &pki, None).await;
            let grpc_now = served_certificate(&control.other, &pki, client).await;
            (rest_now != rest_before && grpc_now != grpc_before).then_some(())
        },
    )
    .await;
    for w in &workers {
        let page = reqwest::get(format!("{}/metrics", w.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            page.contains("postern_worker_control_connects_total 1\n"),
            "a stream was dropped:\n{page}"
        );
    }
    // A worker's client certificate: read again for its next connection (here, after the
    // control plane restarts on the same gRPC address).
    let (code, err) = run_to_exit(&["pki", "worker", "w1", "--dir", pki_arg], &[]);
    assert_eq!(code, 0, "{err}");
    let grpc = control.other.clone();
    control.terminate();
    let control = Postern::control_on(&dir.path().join("control"), &pki, &grpc);
    eventually(
        "w1 to reconnect with its renewed certificate",
        Duration::from_secs(30),
        || async {
            let list = control
                .rest(reqwest::Method::GET, "/v1/workers", Value::Null)
                .await;
            let back = list["items"]
                .as_array()?
                .iter()
                .any(|w| w["id"] == "w1" && w["connected"] == true);
            (back && workers[0].logged("control plane client certificate reloaded") > 0)
                .then_some(())
        },
    )
    .await;
    drop(workers);
}

/// The certificate a TLS listener presents now (a new handshake), with a client certificate
/// (`client`: PEM files in the PKI directory) when it wants one.
async fn served_certificate(addr: &str, pki: &Pki, client: Option<(&str, &str)>) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap() {
        roots.add(der.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(pki.path(cert))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = PrivateKeyDer::from_pem_file(pki.path(key)).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .unwrap()
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}
