//! MTA-STS and TLS-RPT (issue 15) end to end and offline: the test's DNS server (MX, A, TXT),
//! an HTTPS policy host whose certificate comes from a test CA given to `/v1/trust`, and next
//! hops on 127.0.0.2-6 with a certificate for their MX name, one for another name, no STARTTLS,
//! a self-signed certificate and an expired one.
//! Every outcome is read from tracking (`GET /v1/messages/{id}`) and the next hops.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::proto::rr::rdata::{A, MX, TXT};
use hickory_resolver::proto::rr::{Name, RData};
use reqwest::Method;
use serde_json::{Value, json};
use support::dns::{Zone, dns_shared};
use support::eventually;
use support::https::{Hits, Routes, policy_host};
use support::relay::{Relay, Seen, send_raw, sink_on, tls_sink_on};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reports POSTed to the lab's https `rua`: (content type, body).
type Posts = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// An HTTPS TLS-RPT receiver: takes any POST, keeps its body, answers 200.
async fn report_receiver(cert: (String, String)) -> (u16, Posts) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = postern_tls::server_config(&cert.0, &cert.1).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let posts: Posts = Arc::default();
    let kept = posts.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, posts) = (acceptor.clone(), kept.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                let end = loop {
                    if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
                let header = |name: &str| {
                    head.lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(|v| v.trim().to_string())
                        .unwrap_or_default()
                };
                let length: usize = header("content-length:").parse().unwrap_or(0);
                while request.len() < end + length {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let body = request[end..end + length].to_vec();
                posts.lock().unwrap().push((header("content-type:"), body));
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, posts)
}

/// A CA (for `/v1/trust`) and a certificate it issued for `name` that expired in 2021.
fn expired_pair(name: &str) -> (String, (String, String)) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let mut leaf = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    leaf.not_before = rcgen::date_time_ymd(2020, 1, 1);
    leaf.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_pem, (cert.pem(), key.serialize_pem()))
}

fn policy(mode: &str, mx: &[&str]) -> String {
    let mut p = format!("version: STSv1\r\nmode: {mode}\r\nmax_age: 86400\r\n");
    for m in mx {
        p.push_str(&format!("mx: {m}\r\n"));
    }
    p
}

struct Lab {
    relay: Relay,
    zone: Zone,
    routes: Routes,
    hits: Hits,
    good: Seen,
    wrong_name: Seen,
    plain: Seen,
    /// The https TLS-RPT receiver at reports.test.
    report_port: u16,
    posts: Posts,
}

impl Lab {
    fn set_txt(&self, name: &str, text: &str) {
        let mut zone = self.zone.lock().unwrap();
        zone.retain(|(n, r)| !(n == name && matches!(r, RData::TXT(_))));
        // A TXT string holds at most 255 bytes: a longer record is several, read as one.
        let strings = text
            .as_bytes()
            .chunks(255)
            .map(|c| String::from_utf8(c.to_vec()).unwrap())
            .collect();
        zone.push((name.into(), RData::TXT(TXT::new(strings))));
    }

    fn serve(&self, domain: &str, status: u16, body: String) {
        self.routes
            .lock()
            .unwrap()
            .insert(format!("mta-sts.{domain}"), (status, body));
    }

    fn hits(&self, domain: &str) -> usize {
        let hits = self.hits.lock().unwrap();
        hits.get(&format!("mta-sts.{domain}")).copied().unwrap_or(0)
    }

    async fn send(&self, rcpt: &str) -> String {
        let message = format!("Subject: to {rcpt}\r\n\r\nhello\r\n");
        send_raw(
            &self.relay.worker.other,
            "alice@sender.test",
            &[rcpt],
            &message,
        )
        .await
    }

    /// The message's last attempt, once it has one.
    async fn attempt(&self, id: &str) -> Value {
        eventually(
            "an attempt in tracking",
            Duration::from_secs(30),
            || async {
                let (status, m) = self
                    .relay
                    .control
                    .call(Method::GET, &format!("/v1/messages/{id}"), None, None)
                    .await;
                if status != 200 {
                    return None;
                }
                m["deliveries"][0]["attempts"]
                    .as_array()
                    .and_then(|a| a.last().cloned())
            },
        )
        .await
    }
}

fn reply(attempt: &Value) -> &str {
    attempt["reply"].as_str().unwrap()
}

fn received(seen: &Seen, rcpt: &str) -> bool {
    seen.lock()
        .unwrap()
        .iter()
        .any(|(rcpts, _)| rcpts.iter().any(|r| r == rcpt))
}

async fn lab() -> Lab {
    let ca = postern_tls::pki::Ca::new("mta-sts test CA").unwrap();
    let pair = |names: &[&str]| {
        let c = ca.server(names).unwrap();
        (c.cert_pem, c.key_pem)
    };
    // The next hops share one port (delivery.mx_port) on three loopback addresses.
    let (good_addr, good) = tls_sink_on("127.0.0.2:0", pair(&["mx.good.test"])).await;
    let port = good_addr.rsplit(':').next().unwrap().to_string();
    let (_, wrong_name) =
        tls_sink_on(&format!("127.0.0.3:{port}"), pair(&["elsewhere.test"])).await;
    let (_, plain) = sink_on(&format!("127.0.0.4:{port}")).await;
    let self_signed = postern_tls::pki::Issued::self_signed(&["mx.self.test"]).unwrap();
    let (_, _) = tls_sink_on(
        &format!("127.0.0.5:{port}"),
        (self_signed.cert_pem, self_signed.key_pem),
    )
    .await;
    let (expired_ca, expired) = expired_pair("mx.expired.test");
    let (_, _) = tls_sink_on(&format!("127.0.0.6:{port}"), expired).await;

    let hosted = [
        "good",
        "mismatch",
        "badcert",
        "testing",
        "ruled",
        "nostarttls",
        "missing",
        "redirect",
        "oversized",
        "invalid",
        "html",
        "mixed",
        "selfsigned",
        "expired",
        "hostile",
        "reports",
    ];
    let sans: Vec<String> = hosted.iter().map(|d| format!("mta-sts.{d}.test")).collect();
    let sans: Vec<&str> = sans.iter().map(String::as_str).collect();
    let (https_port, routes, hits) = policy_host(pair(&sans)).await;
    let (report_port, posts) = report_receiver(pair(&["reports.test"])).await;

    let a = |ip: &str| RData::A(A(ip.parse().unwrap()));
    let mx = |host: &str| RData::MX(MX::new(10, Name::from_ascii(host).unwrap()));
    let mut zone: Vec<(String, RData)> = vec![
        ("mx.good.test.".into(), a("127.0.0.2")),
        ("mx.bad.test.".into(), a("127.0.0.3")),
        ("mx.plain.test.".into(), a("127.0.0.4")),
        ("mx.self.test.".into(), a("127.0.0.5")),
        ("mx.expired.test.".into(), a("127.0.0.6")),
    ];
    let mx_of = [
        ("good", "mx.good.test."),
        ("mismatch", "mx.good.test."),
        ("badcert", "mx.bad.test."),
        ("testing", "mx.bad.test."),
        ("ruled", "mx.bad.test."),
        ("nostarttls", "mx.plain.test."),
        ("missing", "mx.good.test."),
        ("redirect", "mx.bad.test."),
        ("oversized", "mx.bad.test."),
        ("invalid", "mx.bad.test."),
        ("webpki", "mx.bad.test."),
        ("html", "mx.bad.test."),
        ("notxt", "mx.bad.test."),
        ("selfsigned", "mx.self.test."),
        ("expired", "mx.expired.test."),
        ("hostile", "mx.plain.test."),
    ];
    for (d, host) in mx_of {
        zone.push((format!("{d}.test."), mx(host)));
        zone.push((format!("mta-sts.{d}.test."), a("127.0.0.1")));
    }
    // mixed.test: a preferred MX the policy does not allow, then one it does (by wildcard).
    let mx_at = |pref: u16, host: &str| RData::MX(MX::new(pref, Name::from_ascii(host).unwrap()));
    zone.push(("mixed.test.".into(), mx_at(10, "mx.bad.test.")));
    zone.push(("mixed.test.".into(), mx_at(20, "mx.good.test.")));
    zone.push(("mta-sts.mixed.test.".into(), a("127.0.0.1")));
    // reports.test takes TLS-RPT reports: by https at 127.0.0.1, by mail at mx.bad.test (whose
    // certificate names another host).
    zone.push(("reports.test.".into(), a("127.0.0.1")));
    zone.push(("reports.test.".into(), mx("mx.bad.test.")));
    zone.push(("mta-sts.reports.test.".into(), a("127.0.0.1")));
    // strict.test takes reports too, at the same MX, but under a local verify rule.
    zone.push(("strict.test.".into(), mx("mx.bad.test.")));
    let zone: Zone = Arc::new(Mutex::new(zone));
    let ns = dns_shared(zone.clone()).await;

    let settings = json!({"delivery": {
        "nameservers": [ns.to_string()], "mx_port": port.parse::<u16>().unwrap(),
        "mta_sts_port": https_port,
        // The policy hosts and the report receiver are on loopback.
        "fetch_networks": ["127.0.0.0/8"],
    }});
    let relay = Relay::start_with(&[], settings, tempfile::tempdir().unwrap(), &[]).await;
    relay
        .rest(
            Method::PUT,
            "/v1/trust",
            json!({"ca_pems": [ca.cert_pem, expired_ca]}),
        )
        .await;
    // A local rule exempts ruled.test from its published policy.
    relay
        .rest(
            Method::POST,
            "/v1/policy/outbound/rules",
            json!({"match": "ruled.test", "level": "may", "comment": "broken partner"}),
        )
        .await;
    relay.control.wait_applied().await;
    let lab = Lab {
        relay,
        zone,
        routes,
        hits,
        good,
        wrong_name,
        plain,
        report_port,
        posts,
    };
    for d in mx_of
        .map(|(d, _)| d)
        .iter()
        .chain(&["mixed"])
        .filter(|d| **d != "notxt")
    {
        lab.set_txt(&format!("_mta-sts.{d}.test."), "v=STSv1; id=1;");
    }
    lab.serve("good.test", 200, policy("enforce", &["mx.good.test"]));
    lab.serve("mismatch.test", 200, policy("enforce", &["*.other.test"]));
    lab.serve("badcert.test", 200, policy("enforce", &["mx.bad.test"]));
    lab.serve("testing.test", 200, policy("testing", &["mx.bad.test"]));
    lab.serve("ruled.test", 200, policy("enforce", &["*.nowhere.test"]));
    lab.serve(
        "nostarttls.test",
        200,
        policy("enforce", &["mx.plain.test"]),
    );
    lab.serve("redirect.test", 301, String::new());
    lab.serve("html.test", 299, policy("enforce", &["*.nowhere.test"]));
    lab.serve("mixed.test", 200, policy("enforce", &["*.good.test"]));
    lab.serve("selfsigned.test", 200, policy("enforce", &["mx.self.test"]));
    lab.serve("expired.test", 200, policy("enforce", &["mx.expired.test"]));
    lab.serve("hostile.test", 200, policy("testing", &["mx.plain.test"]));
    lab.serve(
        "oversized.test",
        200,
        policy("enforce", &["*.nowhere.test"]) + &"x: y\r\n".repeat(12_000),
    );
    lab.serve(
        "invalid.test",
        200,
        "version: STSv1\r\nmode: enforcing\r\nmax_age: 86400\r\nmx: mx.bad.test\r\n".into(),
    );
    lab
}

fn assert_source(
    attempt: &Value,
    source: &str,
    id: Option<&str>,
    mode: Option<&str>,
    failure: Option<&str>,
) {
    assert_eq!(attempt["policy_source"], source, "{attempt:#}");
    assert_eq!(attempt["sts_policy_id"].as_str(), id, "{attempt:#}");
    assert_eq!(attempt["sts_mode"].as_str(), mode, "{attempt:#}");
    assert_eq!(attempt["sts_failure"].as_str(), failure, "{attempt:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mta_sts_policies_are_discovered_cached_and_enforced() {
    let mut lab = lab().await;

    // enforce, a matching MX with a certificate for its name: delivered, verified, recorded.
    let id = lab.send("bob@good.test").await;
    let a = lab.attempt(&id).await;
    assert!(reply(&a).starts_with("250"), "{a:#}");
    assert_eq!(a["tls"]["server_certificate"], "verified", "{a:#}");
    assert_source(&a, "mta-sts", Some("1"), Some("enforce"), None);
    assert!(received(&lab.good, "bob@good.test"));

    // enforce with a wildcard: the preferred MX is not allowed, so only the second is tried.
    let a = lab.attempt(&lab.send("bob@mixed.test").await).await;
    assert!(reply(&a).starts_with("250"), "{a:#}");
    assert_eq!(a["host"], "mx.good.test", "{a:#}");
    assert_source(&a, "mta-sts", Some("1"), Some("enforce"), None);
    assert!(received(&lab.good, "bob@mixed.test"));
    assert!(!received(&lab.wrong_name, "bob@mixed.test"));

    // enforce, no MX host matches the policy: deferred, never delivered.
    let a = lab.attempt(&lab.send("bob@mismatch.test").await).await;
    assert!(reply(&a).contains("4.7.5"), "{a:#}");
    assert!(reply(&a).contains("allows none of its MX hosts"), "{a:#}");
    assert_source(
        &a,
        "mta-sts",
        Some("1"),
        Some("enforce"),
        Some("validation-failure"),
    );
    assert!(!received(&lab.good, "bob@mismatch.test"));

    // enforce, the MX's certificate names another host: deferred (no unverified fallback).
    let a = lab.attempt(&lab.send("bob@badcert.test").await).await;
    assert!(
        reply(&a).contains("4.7.5 Server certificate not verified"),
        "{a:#}"
    );
    assert_source(
        &a,
        "mta-sts",
        Some("1"),
        Some("enforce"),
        Some("certificate-host-mismatch"),
    );
    assert!(!received(&lab.wrong_name, "bob@badcert.test"));

    // enforce, a self-signed certificate, or one from a trusted CA that has expired: deferred.
    for (domain, failure) in [
        ("selfsigned", "certificate-not-trusted"),
        ("expired", "certificate-expired"),
    ] {
        let a = lab
            .attempt(&lab.send(&format!("bob@{domain}.test")).await)
            .await;
        assert!(
            reply(&a).contains("4.7.5 Server certificate not trusted"),
            "{domain}: {a:#}"
        );
        assert_source(&a, "mta-sts", Some("1"), Some("enforce"), Some(failure));
    }

    // enforce, STARTTLS not offered: deferred, never plaintext.
    let a = lab.attempt(&lab.send("bob@nostarttls.test").await).await;
    assert!(
        reply(&a).contains("TLS is required, but was not offered"),
        "{a:#}"
    );
    assert_source(
        &a,
        "mta-sts",
        Some("1"),
        Some("enforce"),
        Some("starttls-not-supported"),
    );
    assert!(!received(&lab.plain, "bob@nostarttls.test"));

    // testing: delivered as without a policy, the failure recorded.
    let a = lab.attempt(&lab.send("bob@testing.test").await).await;
    assert!(reply(&a).starts_with("250"), "{a:#}");
    assert_source(
        &a,
        "mta-sts",
        Some("1"),
        Some("testing"),
        Some("certificate-host-mismatch"),
    );
    assert!(received(&lab.wrong_name, "bob@testing.test"));

    // A local rule beats the published policy (and is not even asked for it).
    let a = lab.attempt(&lab.send("bob@ruled.test").await).await;
    assert!(reply(&a).starts_with("250"), "{a:#}");
    assert_source(&a, "rule", None, None, None);
    assert_eq!(lab.hits("ruled.test"), 0);

    // No policy to be had: delivered under the default, whatever the reason.
    for domain in [
        "missing",
        "redirect",
        "oversized",
        "invalid",
        "webpki",
        "html",
        "notxt",
    ] {
        let rcpt = format!("bob@{domain}.test");
        let a = lab.attempt(&lab.send(&rcpt).await).await;
        assert!(reply(&a).starts_with("250"), "{domain}: {a:#}");
        assert_source(&a, "default", None, None, None);
    }
    assert_eq!(lab.hits("notxt.test"), 0, "no record, no fetch");
    assert_eq!(lab.hits("redirect.test"), 1, "the redirect is not followed");
    // The webpki case never reaches HTTP: the handshake fails on the certificate's names.
    assert_eq!(lab.hits("webpki.test"), 0);

    // Each failure is told apart (TLS-RPT result types: sts-policy-fetch-error,
    // sts-webpki-invalid, sts-policy-invalid).
    let log = lab.relay.worker.log.lock().unwrap().join("\n");
    for (domain, said) in [
        ("missing.test", "HTTP 404"),
        ("redirect.test", "HTTP 301"),
        ("oversized.test", "larger than 65536 bytes"),
        ("invalid.test", "invalid MTA-STS policy: mode \"enforcing\""),
        ("webpki.test", "MTA-STS policy host certificate not valid"),
        ("html.test", "not text/plain"),
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("MTA-STS policy fetch failed")
                    && l.contains(domain)
                    && l.contains(said)),
            "{domain}: no failure saying {said:?} in:\n{log}"
        );
    }

    // A failed fetch is not retried at once.
    lab.attempt(&lab.send("carol@missing.test").await).await;
    assert_eq!(lab.hits("missing.test"), 1, "failures are rate-limited");

    // The policy is kept durably in the spool.
    let file = lab.relay.worker.data_dir.join("mta-sts/good.test.json");
    let saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(saved["id"], "1");
    assert_eq!(saved["policy"]["mode"], "enforce");

    // A current cached policy is not fetched again, so the policy host may even fail now.
    lab.serve("good.test", 500, String::new());
    let before = lab.hits("good.test");
    let a = lab.attempt(&lab.send("carol@good.test").await).await;
    assert_source(&a, "mta-sts", Some("1"), Some("enforce"), None);
    assert_eq!(
        lab.hits("good.test"),
        before,
        "a current cached policy is not fetched again"
    );

    // A new id is fetched at once; until that succeeds, the cached policy stands.
    lab.set_txt("_mta-sts.good.test.", "v=STSv1; id=2;");
    let a = lab.attempt(&lab.send("dave@good.test").await).await;
    assert_source(&a, "mta-sts", Some("1"), Some("enforce"), None);
    assert_eq!(lab.hits("good.test"), before + 1, "the new id was fetched");
    lab.set_txt("_mta-sts.badcert.test.", "v=STSv1; id=2;");
    lab.serve("badcert.test", 200, policy("testing", &["mx.bad.test"]));
    let a = lab.attempt(&lab.send("erin@badcert.test").await).await;
    assert!(reply(&a).starts_with("250"), "{a:#}");
    assert_source(
        &a,
        "mta-sts",
        Some("2"),
        Some("testing"),
        Some("certificate-host-mismatch"),
    );

    // Policies survive a restart: the new worker finds good.test's record id (2) unlike its
    // cached policy's (1), the policy host still fails, so the policy from disk applies.
    lab.relay.worker.kill_now();
    let spool = lab.relay.worker.data_dir.clone();
    let grpc = lab.relay.control.other.clone();
    lab.relay.worker = support::Postern::worker(&spool, &lab.relay.pki, &grpc, "w", "w");
    lab.relay.control.wait_applied().await;
    let before = lab.hits("good.test");
    let a = lab.attempt(&lab.send("gina@good.test").await).await;
    assert!(reply(&a).starts_with("250"), "{a:#}");
    assert_source(&a, "mta-sts", Some("1"), Some("enforce"), None);
    assert_eq!(
        lab.hits("good.test"),
        before + 1,
        "the new id was fetched again after the restart"
    );

    // evaluate reports the source of the decision and what it overrode.
    let evaluate = |rcpt: &'static str| {
        let control = &lab.relay.control;
        async move {
            control
                .rest(
                    Method::POST,
                    "/v1/policy/evaluate",
                    json!({"direction": "outbound", "recipient": rcpt}),
                )
                .await
        }
    };
    let e = eventually(
        "the control plane to know good.test's policy",
        Duration::from_secs(30),
        || async {
            let e = evaluate("x@good.test").await;
            (e["outbound_source"]["decided_by"] == "mta-sts").then_some(e)
        },
    )
    .await;
    let source = &e["outbound_source"];
    assert_eq!(source["mta_sts"]["id"], "1", "{e:#}");
    assert_eq!(source["mta_sts"]["mode"], "enforce", "{e:#}");
    assert_eq!(source["mta_sts"]["mx"], json!(["mx.good.test"]), "{e:#}");
    assert_eq!(source["overridden"], json!(["default"]), "{e:#}");
    assert_eq!(
        e["level"], "verify",
        "an enforced policy delivers as verify: {e:#}"
    );
    let e = evaluate("x@notxt.test").await;
    assert_eq!(e["outbound_source"]["decided_by"], "default", "{e:#}");
    assert_eq!(e["outbound_source"]["mta_sts"], Value::Null, "{e:#}");
    lab.relay
        .rest(
            Method::POST,
            "/v1/policy/outbound/rules",
            json!({"match": "good.test", "level": "encrypt"}),
        )
        .await;
    let e = evaluate("x@good.test").await;
    assert_eq!(e["outbound_source"]["decided_by"], "rule", "{e:#}");
    assert_eq!(
        e["outbound_source"]["overridden"],
        json!(["mta-sts", "default"]),
        "{e:#}"
    );
    assert_eq!(e["level"], "encrypt", "{e:#}");

    // The global switch: no policy is looked up or applied.
    let mut settings = lab
        .relay
        .rest(Method::GET, "/v1/settings", Value::Null)
        .await;
    settings["delivery"]["mta_sts"] = json!(false);
    lab.relay.rest(Method::PUT, "/v1/settings", settings).await;
    lab.relay.control.wait_applied().await;
    let a = lab.attempt(&lab.send("frank@mismatch.test").await).await;
    assert!(reply(&a).starts_with("250"), "{a:#}");
    assert_source(&a, "default", None, None, None);
}

/// The report of `domain` among `items` (a `/v1/reports/tls` list).
fn report_of<'a>(items: &'a Value, domain: &str) -> &'a Value {
    items["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["policy_domain"] == domain)
        .unwrap_or_else(|| panic!("no report for {domain} in {items:#}"))
}

/// `tests/tools/tlsrpt_check.py` (Python's email, gzip and json: not our code) on `bytes`.
fn python_reads(kind: &str, bytes: &[u8]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report");
    std::fs::write(&file, bytes).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/tools/tlsrpt_check.py"
    );
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(kind)
        .arg(&file)
        .output()
        .expect("python3 runs (CI installs it)");
    assert!(
        out.status.success(),
        "the independent reader refused the {kind} report: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_rpt_reports_are_built_mailed_and_posted() {
    let lab = lab().await;
    let https = format!("https://reports.test:{}/v1/tlsrpt", lab.report_port);
    lab.set_txt(
        "_smtp._tls.good.test.",
        &format!("v=TLSRPTv1; rua=mailto:tlsrpt@reports.test,{https}"),
    );
    lab.set_txt(
        "_smtp._tls.badcert.test.",
        "v=TLSRPTv1; rua=mailto:tlsrpt@reports.test",
    );
    lab.set_txt(
        "_smtp._tls.missing.test.",
        &format!("v=TLSRPTv1;rua={https}"),
    );
    // hostile.test publishes addresses that would smuggle a transaction into the session with
    // reports.test's MX (raw CR LF in the TXT data, and percent-encoded), beside one good one.
    lab.set_txt(
        "_smtp._tls.hostile.test.",
        "v=TLSRPTv1; rua=mailto:x@reports.test>\r\nMAIL FROM:<ceo@victim.test>\r\nRCPT TO:<staff@victim.test,\
         mailto:y@reports.test%3E%0D%0AMAIL%20FROM:%3Cceo@victim.test%3E%0D%0ARCPT%20TO:%3Cstaff@victim.test,\
         mailto:tlsrpt%2Bhostile@reports.test,mailto:tlsrpt@strict.test",
    );
    // testing.test publishes no _smtp._tls record. Mail to reports.test must be verified under
    // its MTA-STS policy (its MX's certificate names another host): only reports, sent with
    // TLS-Required: No, get there. strict.test's local verify rule is never lowered.
    lab.set_txt("_mta-sts.reports.test.", "v=STSv1; id=1;");
    lab.serve("reports.test", 200, policy("enforce", &["mx.bad.test"]));
    lab.relay
        .rest(
            Method::POST,
            "/v1/policy/outbound/rules",
            json!({"match": "strict.test", "level": "verify"}),
        )
        .await;
    lab.relay.control.wait_applied().await;
    let a = lab.attempt(&lab.send("someone@reports.test").await).await;
    assert!(reply(&a).contains("4.7.5"), "{a:#}");

    for rcpt in [
        "bob@good.test",
        "bob@badcert.test",
        "bob@missing.test",
        "bob@testing.test",
        "bob@hostile.test",
    ] {
        lab.attempt(&lab.send(rcpt).await).await;
    }
    let today = postern_time::rfc3339_s(postern_time::now_s())[..10].to_string();
    let control = &lab.relay.control;

    // Sending needs a contact address (the reports' From).
    let (status, problem) = control
        .call(
            Method::POST,
            "/v1/reports/tls/build",
            None,
            Some(json!({"date": today, "send": true})),
        )
        .await;
    assert_eq!(status, 409, "{problem:#}");
    let (status, _) = control
        .call(
            Method::POST,
            "/v1/reports/tls/build",
            None,
            Some(json!({"date": "2026-02-30"})),
        )
        .await;
    assert_eq!(status, 400);
    let mut settings = lab
        .relay
        .rest(Method::GET, "/v1/settings", Value::Null)
        .await;
    settings["reports"] =
        json!({"contact": "tlsrpt@sender.test", "organization_name": "Postern lab"});
    lab.relay.rest(Method::PUT, "/v1/settings", settings).await;

    // Built without sending: one report per domain, from the sessions tracking holds (a
    // session event follows its attempt's, so the last domain's may still be on its way).
    let built = eventually(
        "a report for every domain mailed",
        Duration::from_secs(30),
        || async {
            let built = lab
                .relay
                .rest(
                    Method::POST,
                    "/v1/reports/tls/build",
                    json!({"date": today}),
                )
                .await;
            let domains = built["items"].as_array().unwrap().iter();
            domains
                .filter(|r| r["policy_domain"] == "hostile.test")
                .count()
                .eq(&1)
                .then_some(built)
        },
    )
    .await;
    let good = report_of(&built, "good.test");
    assert_eq!(good["status"], "built", "{good:#}");
    let r = &good["report"];
    assert_eq!(r["organization-name"], "Postern lab", "{r:#}");
    assert_eq!(r["contact-info"], "tlsrpt@sender.test", "{r:#}");
    assert_eq!(
        r["date-range"]["start-datetime"],
        format!("{today}T00:00:00Z")
    );
    let p = &r["policies"][0];
    assert_eq!(p["policy"]["policy-type"], "sts", "{r:#}");
    assert_eq!(p["policy"]["mx-host"], json!(["mx.good.test"]), "{r:#}");
    assert!(
        p["policy"]["policy-string"]
            .as_array()
            .unwrap()
            .contains(&json!("mode: enforce")),
        "{r:#}"
    );
    assert_eq!(p["summary"]["total-successful-session-count"], 1, "{r:#}");
    assert_eq!(p["summary"]["total-failure-session-count"], 0, "{r:#}");

    let bad = &report_of(&built, "badcert.test")["report"]["policies"][0];
    assert_eq!(
        bad["summary"]["total-successful-session-count"], 0,
        "{bad:#}"
    );
    let detail = &bad["failure-details"][0];
    assert_eq!(
        detail["result-type"], "certificate-host-mismatch",
        "{bad:#}"
    );
    assert_eq!(detail["receiving-mx-hostname"], "mx.bad.test", "{bad:#}");
    assert_eq!(detail["receiving-ip"], "127.0.0.3", "{bad:#}");
    assert_eq!(detail["sending-mta-ip"], "127.0.0.1", "{bad:#}");

    // A policy that could not be fetched: no-policy-found, the fetch error its failure.
    let missing = &report_of(&built, "missing.test")["report"]["policies"][0];
    assert_eq!(
        missing["policy"]["policy-type"], "no-policy-found",
        "{missing:#}"
    );
    assert_eq!(
        missing["failure-details"][0]["result-type"], "sts-policy-fetch-error",
        "{missing:#}"
    );
    let testing = &report_of(&built, "testing.test")["report"]["policies"][0];
    assert_eq!(
        testing["failure-details"][0]["result-type"], "certificate-host-mismatch",
        "testing mode records what enforce would have refused: {testing:#}"
    );

    // Sent: by mail through the worker's queue and by https, each where the record says.
    let sent = lab
        .relay
        .rest(
            Method::POST,
            "/v1/reports/tls/build",
            json!({"date": today, "send": true}),
        )
        .await;
    let good = report_of(&sent, "good.test");
    assert_eq!(good["status"], "sent", "{good:#}");
    let ruas: Vec<&str> = good["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["rua"].as_str().unwrap())
        .collect();
    assert_eq!(
        ruas,
        ["mailto:tlsrpt@reports.test", https.as_str()],
        "{good:#}"
    );
    assert_eq!(report_of(&sent, "badcert.test")["status"], "sent");
    assert_eq!(report_of(&sent, "missing.test")["status"], "sent");
    assert_eq!(report_of(&sent, "testing.test")["status"], "no_record");
    let hostile = report_of(&sent, "hostile.test");
    assert_eq!(
        hostile["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["rua"].as_str().unwrap())
            .collect::<Vec<_>>(),
        [
            "mailto:tlsrpt+hostile@reports.test",
            "mailto:tlsrpt@strict.test"
        ],
        "only the valid addresses are used: {hostile:#}"
    );
    // The report to strict.test keeps its local rule's level: deferred, not delivered.
    let strict = hostile["deliveries"][1]["detail"].as_str().unwrap();
    let strict_id = strict.strip_prefix("queued as ").unwrap();
    let a = lab.attempt(strict_id).await;
    assert!(reply(&a).contains("4.7.5"), "{a:#}");
    assert!(!received(&lab.wrong_name, "tlsrpt@strict.test"));

    // The posted reports, read by Python.
    let posts = lab.posts.lock().unwrap().clone();
    assert_eq!(posts.len(), 2, "good.test and missing.test post");
    let mut posted = Vec::new();
    for (media, body) in &posts {
        assert_eq!(media, "application/tlsrpt+gzip");
        let report = python_reads("gzip", body);
        posted.push(report["policies"][0]["policy"]["policy-domain"].clone());
    }
    posted.sort_by_key(|v| v.to_string());
    assert_eq!(posted, [json!("good.test"), json!("missing.test")]);

    // The mailed reports reach reports.test although its MX fails verification
    // (TLS-Required: No), and Python's email package reads them.
    let mails = eventually(
        "two mailed reports at reports.test",
        Duration::from_secs(30),
        || async {
            let seen = lab.wrong_name.lock().unwrap();
            let mails: Vec<String> = seen
                .iter()
                .filter(|(rcpts, _)| rcpts.iter().any(|r| r == "tlsrpt@reports.test"))
                .map(|(_, m)| m.clone())
                .collect();
            (mails.len() == 2).then_some(mails)
        },
    )
    .await;
    // hostile.test's report reached its one valid address, and nothing was smuggled.
    eventually(
        "hostile.test's report at its valid address",
        Duration::from_secs(30),
        || async { received(&lab.wrong_name, "tlsrpt+hostile@reports.test").then_some(()) },
    )
    .await;
    for (rcpts, _) in lab.wrong_name.lock().unwrap().iter() {
        assert!(
            rcpts.iter().all(|r| !r.contains("victim")),
            "a smuggled recipient reached the next hop: {rcpts:?}"
        );
    }
    let mut domains = Vec::new();
    for mail in mails {
        let report = python_reads("mail", mail.as_bytes());
        let m = &report["_mail"];
        assert_eq!(m["submitter"], "sender.test", "{report:#}");
        assert_eq!(m["tls_required"], "No", "{report:#}");
        assert_eq!(
            report["policies"][0]["policy"]["policy-domain"], m["domain"],
            "{report:#}"
        );
        domains.push(m["domain"].as_str().unwrap().to_string());
    }
    domains.sort();
    assert_eq!(domains, ["badcert.test", "good.test"]);
    assert!(
        !received(&lab.wrong_name, "someone@reports.test"),
        "ordinary mail still needs verification"
    );

    // The list keeps what was built and sent.
    let listed = lab
        .relay
        .rest(Method::GET, "/v1/reports/tls?domain=good.test", Value::Null)
        .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed:#}");
    assert_eq!(listed["items"][0]["status"], "sent", "{listed:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_policy_is_published_and_reports_about_us_are_received() {
    let (hop, seen) = support::relay::sink(0).await;
    let settings = json!({
        "published_mta_sts": {"mode": "enforce", "mx": ["MX.ours.test", "*.backup.ours.test"], "max_age": 86400},
        "reports": {"receive_address": "tlsrpt@ours.test"},
    });
    let relay = Relay::start_with(
        &[("ours.test", hop.as_str())],
        settings,
        tempfile::tempdir().unwrap(),
        &[],
    )
    .await;
    let http = relay.control.client();
    // The protocol endpoints are on the public listener (tests/public.rs shows the rest).
    let base = relay.control.public.as_ref().expect("a public listener");

    // The policy, by Host header; senders parse it (here our own strict parser).
    let get = |host: &'static str| {
        http.get(format!("{base}/.well-known/mta-sts.txt"))
            .header("Host", host)
            .send()
    };
    let r = get("mta-sts.ours.test:443").await.unwrap();
    assert_eq!(r.status(), 200);
    let media = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(media.starts_with("text/plain"), "{media}");
    let text = r.text().await.unwrap();
    assert_eq!(
        text,
        "version: STSv1\r\nmode: enforce\r\nmx: mx.ours.test\r\nmx: *.backup.ours.test\r\nmax_age: 86400\r\n"
    );
    for host in ["mta-sts.other.test", "ours.test", "mta-sts.sub.ours.test"] {
        assert_eq!(get(host).await.unwrap().status(), 404, "{host}");
    }
    let published = relay
        .rest(Method::GET, "/v1/published/mta-sts", Value::Null)
        .await;
    let d = &published["domains"][0];
    assert_eq!(d["policy_host"], "mta-sts.ours.test", "{published:#}");
    assert!(
        d["txt_record"]
            .as_str()
            .unwrap()
            .starts_with("v=STSv1; id="),
        "{published:#}"
    );
    // A bad policy setting is refused at its field.
    let mut s = relay.rest(Method::GET, "/v1/settings", Value::Null).await;
    s["published_mta_sts"]["mx"] = json!(["not a host"]);
    let (status, problem) = relay
        .control
        .call(Method::PUT, "/v1/settings", None, Some(s))
        .await;
    assert_eq!(status, 422, "{problem:#}");
    assert_eq!(problem["errors"][0]["pointer"], "/published_mta_sts/mx/0");

    // Reports posted by an https reporter (a report made by Python, as another sender would).
    let mail = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/tools/tlsrpt_check.py"
        ))
        .args(["make-mail", "ours.test", "Python Reporter"])
        .output()
        .expect("python3 runs");
    assert!(mail.status.success());
    let mail = String::from_utf8(mail.stdout).unwrap();
    let post = |media: &'static str, body: Vec<u8>| {
        http.post(format!("{base}/tlsrpt"))
            .header("Content-Type", media)
            .header("User-Agent", "reporter/1.0")
            .body(body)
            .send()
    };
    let report = |domain: &str, org: &str| {
        json!({
            "organization-name": org,
            "date-range": {"start-datetime": "2026-12-06T00:00:00Z", "end-datetime": "2026-12-06T23:59:59Z"},
            "contact-info": "tls@big.example",
            "report-id": format!("{org}-1"),
            "policies": [{
                "policy": {"policy-type": "no-policy-found", "policy-domain": domain},
                "summary": {"total-successful-session-count": 7, "total-failure-session-count": 0},
            }],
        })
        .to_string()
        .into_bytes()
    };
    let r = post("application/tlsrpt+json", report("ours.test", "Big Mail"))
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = post("application/tlsrpt+json", report("other.test", "Nosy"))
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "a report about someone else's domain");
    let r = post("text/plain", report("ours.test", "Big Mail"))
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = post("application/tlsrpt+gzip", b"not gzip".to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = post("application/tlsrpt+gzip", vec![0u8; 600 * 1024])
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // And a report mailed to the configured address: taken out of the message, not relayed.
    let id = send_raw(
        &relay.worker.other,
        "tlsrpt@reporter.example",
        &["tlsrpt@ours.test"],
        &mail,
    )
    .await;
    // A message without a report is refused in the session (Python's smtplib sends it): no
    // DSN can go to a sender anyone may forge.
    let (host, port) = relay.worker.other.rsplit_once(':').unwrap();
    let script = "import smtplib, sys\n\
        s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=30)\n\
        try:\n    s.sendmail('someone@reporter.example', ['tlsrpt@ours.test'], 'Subject: hello\\r\\n\\r\\nnot a report\\r\\n')\n    print('accepted')\n\
        except smtplib.SMTPDataError as e:\n    print(e.smtp_code, e.smtp_error.decode())\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script, host, port])
        .output()
        .expect("python3 runs");
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        answer.starts_with("550 5.6.0 not a TLS-RPT report"),
        "{answer} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let received = eventually(
        "the mailed report among the received ones",
        Duration::from_secs(30),
        || async {
            let list = relay
                .rest(Method::GET, "/v1/reports/tls/received", Value::Null)
                .await;
            (list["items"].as_array().unwrap().len() == 2).then_some(list)
        },
    )
    .await;
    let items = received["items"].as_array().unwrap();
    let big = items
        .iter()
        .find(|r| r["organization_name"] == "Big Mail")
        .unwrap();
    assert_eq!(big["via"], "https", "{big:#}");
    assert_eq!(big["source"], "reporter/1.0", "{big:#}");
    assert_eq!(big["successful_sessions"], 7, "{big:#}");
    let python = items
        .iter()
        .find(|r| r["organization_name"] == "Python Reporter")
        .unwrap();
    assert_eq!(python["via"], "mail", "{python:#}");
    assert_eq!(python["source"], "tlsrpt@reporter.example", "{python:#}");
    assert_eq!(python["policy_domains"], json!(["ours.test"]), "{python:#}");
    assert_eq!(python["failed_sessions"], 2, "{python:#}");
    assert_eq!(
        python["report"]["policies"][0]["failure-details"][0]["result-type"],
        "certificate-expired"
    );
    let only = relay
        .rest(
            Method::GET,
            "/v1/reports/tls/received?organization=Big%20Mail",
            Value::Null,
        )
        .await;
    assert_eq!(only["items"].as_array().unwrap().len(), 1, "{only:#}");

    // The report's message is delivered (to us); the other is refused with a DSN reason.
    let status = |id: String| {
        let control = &relay.control;
        async move {
            eventually("a final status", Duration::from_secs(30), || async {
                let (code, m) = control
                    .call(Method::GET, &format!("/v1/messages/{id}"), None, None)
                    .await;
                let s = m["deliveries"][0]["status"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                (code == 200 && (s == "delivered" || s == "bounced")).then_some(m)
            })
            .await
        }
    };
    let m = status(id).await;
    assert_eq!(m["deliveries"][0]["status"], "delivered", "{m:#}");
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing was relayed to ours.test"
    );
}

/// Why the third-party resolver cell cannot run here, if it cannot: it binds port 443 (the
/// resolver fetches from no other) and needs postfix-mta-sts-resolver (`.ci/run` installs it).
fn resolver_cell_unavailable() -> Option<String> {
    if !support::is_root() {
        return Some("needs root (port 443)".into());
    }
    let found = std::process::Command::new("python3")
        .args(["-c", "import postfix_mta_sts_resolver"])
        .status()
        .is_ok_and(|s| s.success());
    (!found).then(|| "needs postfix-mta-sts-resolver (pip)".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_party_resolver_reads_the_policy_we_publish() {
    if let Some(reason) = resolver_cell_unavailable() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{reason} (CI must run this test)"
        );
        eprintln!("skipped: {reason}");
        return;
    }
    let (hop, _) = support::relay::sink(0).await;
    let settings = json!({"published_mta_sts": {"mode": "enforce", "mx": ["mx.ours.test", "*.backup.ours.test"], "max_age": 86400}});
    let relay = Relay::start_with(
        &[("ours.test", hop.as_str())],
        settings,
        tempfile::tempdir().unwrap(),
        &[],
    )
    .await;
    // The control plane's certificate gains the policy host's name (it reloads it).
    relay
        .pki
        .server("control", &["localhost", "127.0.0.1", "mta-sts.ours.test"]);
    // The policy is served by the public listener, with the same reloaded certificate.
    let public = relay.control.public.as_ref().expect("a public listener");
    let control: std::net::SocketAddr = public["https://".len()..].parse().unwrap();
    let ca =
        reqwest::Certificate::from_pem(relay.control.ca_pem.as_ref().unwrap().as_bytes()).unwrap();
    let by_name = reqwest::Client::builder()
        .add_root_certificate(ca)
        .resolve("mta-sts.ours.test", control)
        .build()
        .unwrap();
    let url = format!(
        "https://mta-sts.ours.test:{}/.well-known/mta-sts.txt",
        control.port()
    );
    eventually(
        "the control plane to present mta-sts.ours.test",
        Duration::from_secs(30),
        || async {
            by_name
                .get(&url)
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200)
        },
    )
    .await;
    // Port 443 of mta-sts.ours.test (127.0.0.7) forwards to the public listener.
    let front = tokio::net::TcpListener::bind("127.0.0.7:443")
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = front.accept().await {
            tokio::spawn(async move {
                if let Ok(mut upstream) = tokio::net::TcpStream::connect(control).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    let published = relay
        .rest(Method::GET, "/v1/published/mta-sts", Value::Null)
        .await;
    let record = published["domains"][0]["txt_record"]
        .as_str()
        .unwrap()
        .to_string();
    let zone: Zone = Arc::new(Mutex::new(vec![
        (
            "_mta-sts.ours.test.".into(),
            RData::TXT(TXT::new(vec![record.clone()])),
        ),
        (
            "mta-sts.ours.test.".into(),
            RData::A(A("127.0.0.7".parse().unwrap())),
        ),
    ]));
    let ns = dns_shared(zone).await;

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/tools/sts_resolve.py"
    );
    let ca_file = relay.pki.path("ca.pem");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args([
                script,
                &ns.ip().to_string(),
                &ns.port().to_string(),
                "ours.test",
            ])
            .env("SSL_CERT_FILE", ca_file)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(got["result"], "VALID", "{got:#}\n{said}");
    let id = record
        .trim_start_matches("v=STSv1; id=")
        .trim_end_matches(';');
    assert_eq!(got["id"], id, "{got:#}");
    assert_eq!(got["policy"]["mode"], "enforce", "{got:#}");
    assert_eq!(got["policy"]["max_age"], 86400, "{got:#}");
    assert_eq!(
        got["policy"]["mx"],
        json!(["mx.ours.test", "*.backup.ours.test"]),
        "{got:#}"
    );
}
