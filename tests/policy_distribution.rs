//! Policy distribution end to end (issue 3): real control plane and worker processes, mutual
//! TLS on loopback, real sled and real spool directories.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Pki, Postern, eventually, run_to_exit, smtp_greeting};

const NO_POLICY: &str = "421 4.3.2 Service not available: no policy";
const WAIT: Duration = Duration::from_secs(60);

struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    fn new(control: &Postern) -> Api {
        Api {
            base: control.base.clone(),
            token: control.admin_token(),
            http: control.client(),
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap_or(Value::Null)
    }

    async fn add_rule(&self, m: &str) -> u64 {
        self.send(
            reqwest::Method::POST,
            "/v1/policy/inbound/rules",
            Some(json!({"match": m, "level": "encrypt"})),
        )
        .await;
        self.version().await
    }

    async fn version(&self) -> u64 {
        self.send(reqwest::Method::GET, "/v1/policy", None).await["version"]
            .as_u64()
            .unwrap()
    }

    async fn workers(&self) -> Vec<Value> {
        self.send(reqwest::Method::GET, "/v1/workers", None).await["items"]
            .as_array()
            .unwrap()
            .clone()
    }

    async fn worker(&self, id: &str) -> Option<Value> {
        self.workers().await.into_iter().find(|w| w["id"] == id)
    }

    /// Waits until worker `id` is connected and reports `version`.
    async fn until_applied(&self, id: &str, version: u64) -> Value {
        eventually(
            &format!("{id} to apply version {version}"),
            WAIT,
            || async {
                self.worker(id)
                    .await
                    .filter(|w| w["connected"] == true && w["applied_version"] == version)
            },
        )
        .await
    }
}

async fn ready_version(worker: &Postern) -> Option<u64> {
    let r = reqwest::get(format!("{}/readyz", worker.base)).await.ok()?;
    let text = r.text().await.ok()?;
    text.trim()
        .strip_prefix("ready: policy version ")?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_change_reaches_every_worker() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("tls"));
    let control = Postern::control(&dir.path().join("control"), &pki);
    let api = Api::new(&control);
    let mut workers = Vec::new();
    for i in 0..3 {
        let id = format!("worker-{i}");
        pki.client(&id, &[&id]);
        workers.push((
            id.clone(),
            Postern::worker(&dir.path().join(&id), &pki, &control.other, &id, &id),
        ));
    }
    let v = api.add_rule("192.0.2.0/24").await;
    for (id, worker) in &workers {
        let w = api.until_applied(id, v).await;
        assert_eq!(w["smtp_addr"], worker.other.as_str());
        assert_eq!(w["last_nack"], Value::Null);
        assert_eq!(ready_version(worker).await, Some(v));
        assert_eq!(
            smtp_greeting(&worker.other).await,
            "220 mx.test ESMTP Postern"
        );
    }
    // A second change follows at once.
    let v2 = api.add_rule("198.51.100.0/24").await;
    for (id, _) in &workers {
        api.until_applied(id, v2).await;
    }
    // SIGTERM stops the control plane although workers hold their streams open, and then the
    // workers themselves.
    assert!(control.terminate().success());
    for (_, worker) in workers {
        assert!(worker.terminate().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_is_shown_and_the_worker_keeps_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("tls"));
    pki.client("w", &["w"]);
    let control = Postern::control(&dir.path().join("control"), &pki);
    let api = Api::new(&control);
    let spool = dir.path().join("w");
    let worker = Postern::worker(&spool, &pki, &control.other, "w", "w");
    let good = api.version().await;
    api.until_applied("w", good).await;
    // The worker cannot save a new last-known-good (a directory stands where its temporary
    // file goes), so it must refuse the next snapshot and keep enforcing the old one.
    let blocker = spool.join("policy/last-known-good.pb.tmp");
    std::fs::create_dir_all(&blocker).unwrap();
    let refused = api.add_rule("203.0.113.0/24").await;
    let w = eventually("the NACK", WAIT, || async {
        api.worker("w").await.filter(|w| !w["last_nack"].is_null())
    })
    .await;
    assert_eq!(w["applied_version"], good);
    let nack = w["last_nack"].as_str().unwrap();
    assert!(
        nack.starts_with(&format!("version {refused}:")) && nack.contains("last-known-good"),
        "{nack}"
    );
    assert_eq!(ready_version(&worker).await, Some(good));
    // Once the disk is fixed the next version is applied and the NACK clears.
    std::fs::remove_dir(&blocker).unwrap();
    let next = api.add_rule("203.0.114.0/24").await;
    let w = api.until_applied("w", next).await;
    assert_eq!(w["last_nack"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_outlive_a_control_plane_restart_and_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("tls"));
    pki.client("w", &["w"]);
    let data = dir.path().join("control");
    let control = Postern::control(&data, &pki);
    let grpc = control.other.clone();
    let api = Api::new(&control);
    let spool = dir.path().join("w");
    let worker = Postern::worker(&spool, &pki, &grpc, "w", "w");
    let v = api.add_rule("192.0.2.0/24").await;
    api.until_applied("w", v).await;

    control.kill();
    // The worker keeps enforcing while the control plane is gone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        smtp_greeting(&worker.other).await,
        "220 mx.test ESMTP Postern"
    );
    assert_eq!(ready_version(&worker).await, Some(v));

    // A worker restarted while the control plane is down uses its last-known-good policy.
    drop(worker);
    let worker = Postern::worker(&spool, &pki, &grpc, "w", "w");
    assert_eq!(
        smtp_greeting(&worker.other).await,
        "220 mx.test ESMTP Postern"
    );
    assert_eq!(ready_version(&worker).await, Some(v));

    // The control plane comes back on the same address; the worker reconnects and follows.
    let control = Postern::control_on(&data, &pki, &grpc);
    let api = Api::new(&control);
    api.until_applied("w", v).await;
    let v2 = api.add_rule("198.51.100.0/24").await;
    api.until_applied("w", v2).await;
    assert_eq!(ready_version(&worker).await, Some(v2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_policy_answers_421() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("tls"));
    pki.client("w", &["w"]);
    // Nothing listens on this address: the worker never gets a policy.
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let worker = Postern::worker(&dir.path().join("w"), &pki, &unused, "w", "w");
    assert_eq!(smtp_greeting(&worker.other).await, NO_POLICY);
    let r = reqwest::get(format!("{}/readyz", worker.base))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let metrics = reqwest::get(format!("{}/metrics", worker.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("postern_worker_smtp_sessions_total{outcome=\"refused_no_policy\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_the_wrong_worker_and_the_wrong_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("tls"));
    let other = Pki::new(&dir.path().join("other-tls"));
    pki.client("alice", &["alice"]);
    other.client("mallory", &["mallory"]);
    let control = Postern::control(&dir.path().join("control"), &pki);
    let api = Api::new(&control);

    // A certificate for "alice" cannot claim to be "bob".
    let bob = Postern::worker(
        &dir.path().join("bob"),
        &pki,
        &control.other,
        "bob",
        "alice",
    );
    // A certificate from a CA the control plane does not trust.
    std::fs::copy(other.dir.join("mallory.pem"), pki.dir.join("mallory.pem")).unwrap();
    std::fs::copy(other.dir.join("mallory.key"), pki.dir.join("mallory.key")).unwrap();
    let mallory = Postern::worker(
        &dir.path().join("mallory"),
        &pki,
        &control.other,
        "mallory",
        "mallory",
    );
    // A worker that trusts another CA cannot verify the control plane.
    other.client("carol", &["carol"]);
    let carol = Postern::worker(
        &dir.path().join("carol"),
        &other,
        &control.other,
        "carol",
        "carol",
    );
    // A wildcard certificate claims no worker id under it.
    pki.client("wild", &["*.workers.example"]);
    let wild = Postern::worker(
        &dir.path().join("wild"),
        &pki,
        &control.other,
        "w1.workers.example",
        "wild",
    );
    // And the right one, for contrast.
    let alice = Postern::worker(
        &dir.path().join("alice"),
        &pki,
        &control.other,
        "alice",
        "alice",
    );
    api.until_applied("alice", api.version().await).await;
    support::eventually(
        "the control plane to refuse bob and the wildcard",
        Duration::from_secs(30),
        || async {
            let log = control.log.lock().unwrap();
            let refused = |id: &str| {
                log.iter().any(|l| {
                    l.contains("is not a name in its certificate")
                        && l.contains(&format!("worker={id}"))
                })
            };
            (refused("bob") && refused("w1.workers.example")).then_some(())
        },
    )
    .await;
    let ids: Vec<Value> = api
        .workers()
        .await
        .iter()
        .map(|w| w["id"].clone())
        .collect();
    assert_eq!(ids, [json!("alice")]);
    for refused in [&bob, &mallory, &carol, &wild] {
        assert_eq!(smtp_greeting(&refused.other).await, NO_POLICY);
    }
    assert_eq!(
        smtp_greeting(&alice.other).await,
        "220 mx.test ESMTP Postern"
    );
}

#[test]
fn a_second_worker_on_the_same_spool_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("tls"));
    pki.client("w", &["w"]);
    let spool = dir.path().join("w");
    let _first = Postern::worker(&spool, &pki, "127.0.0.1:1", "w", "w");
    let (s, ca, cert, key) = (
        spool.to_str().unwrap(),
        pki.path("ca.pem"),
        pki.path("w.pem"),
        pki.path("w.key"),
    );
    let (code, stderr) = run_to_exit(
        &[
            "worker",
            "--control",
            "https://127.0.0.1:1",
            "--worker-id",
            "w",
            "--smtp-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--spool-dir",
            s,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--control-ca",
            &ca,
            "--client-cert",
            &cert,
            "--client-key",
            &key,
        ],
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--spool-dir") && stderr.contains("in use"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_100k_plus_100k_rules_goes_through() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("tls"));
    pki.client("w", &["w"]);
    let control = Postern::control(&dir.path().join("control"), &pki);
    let api = Api::new(&control);
    let _worker = Postern::worker(&dir.path().join("w"), &pki, &control.other, "w", "w");
    let items: Vec<Value> = (0..100_000u32)
        .map(|i| json!({"match": format!("{}/28", std::net::Ipv4Addr::from(0x0a00_0000 | (i << 4))), "level": "encrypt"}))
        .chain((0..100_000).map(|i| json!({"match": format!(".d{i}.example"), "level": "may"})))
        .collect();
    let r = api
        .http
        .put(format!("{}/v1/policy/inbound/rules", api.base))
        .bearer_auth(&api.token)
        .json(&json!({"items": items}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = api.version().await;
    eventually(
        "the worker to apply 200,000 rules",
        Duration::from_secs(300),
        || async { api.worker("w").await.filter(|w| w["applied_version"] == v) },
    )
    .await;
}
