//! Policy distribution figures (issue 3): time from a REST write's reply to the ACK of every
//! worker, for 1, 10 and 100 workers (simulated in this process with the real worker code: real
//! gRPC over mutual TLS on loopback, compile, last-known-good fsync), with a 100-rule policy;
//! and for 100,000 + 100,000 rules: snapshot size on the wire, encode, transfer and compile.
//! Run: `cargo run --release -p postern-bench --bin policy-push`.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_bench::{Plane, plane};
use postern_control::Control;
use postern_policy::{CipherStrength, Level, Match, Policy, Rule, Settings};
use postern_proto::pb;
use postern_worker::PolicyStore;
use prost::Message;
use serde_json::{Value, json};
use tokio::sync::watch;

/// Starts `n` workers in this process; returns their spool directory (kept alive).
fn workers(plane: &Plane, n: usize, shutdown: &watch::Receiver<bool>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..n).map(|i| format!("worker-{i}")).collect();
    let names: Vec<&str> = ids.iter().map(String::as_str).collect();
    let connection = plane.connection(&names);
    for id in ids {
        let connection = connection.clone();
        let store = Arc::new(PolicyStore::open(dir.path().join(&id), Arc::default()).unwrap());
        tokio::spawn(postern_worker::sync::run(
            connection,
            id,
            "127.0.0.1:25".into(),
            store,
            None,
            shutdown.clone(),
        ));
    }
    dir
}

/// Waits until `n` workers are connected and have applied `version`.
async fn all_applied(control: &Control, n: usize, version: u64) {
    let mut changes = control.workers.subscribe();
    loop {
        let done = control
            .workers
            .list()
            .iter()
            .filter(|w| w.connected && w.applied_version == version)
            .count();
        if done == n {
            return;
        }
        tokio::time::timeout(Duration::from_secs(120), changes.changed())
            .await
            .expect("workers stalled")
            .unwrap();
    }
}

async fn rest(plane: &Plane, method: reqwest::Method, path: &str, body: Value) -> Value {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let r = http
        .request(method, format!("{}{path}", plane.base))
        .bearer_auth(&plane.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap_or(Value::Null)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn push_latency(n: usize, rounds: usize) {
    let plane = plane().await;
    let items: Vec<Value> = (0..100)
        .map(|i| json!({"match": format!("d{i}.example"), "level": "encrypt"}))
        .collect();
    rest(
        &plane,
        reqwest::Method::PUT,
        "/v1/policy/inbound/rules",
        json!({"items": items}),
    )
    .await;
    let (stop, shutdown) = watch::channel(false);
    let _spools = workers(&plane, n, &shutdown);
    let version = plane.control.read().version;
    all_applied(&plane.control, n, version).await;
    let mut samples = Vec::with_capacity(rounds);
    for i in 0..rounds {
        rest(
            &plane,
            reqwest::Method::POST,
            "/v1/policy/outbound/rules",
            json!({"match": format!("r{i}.example"), "level": "may"}),
        )
        .await;
        let replied = Instant::now();
        let version = plane.control.read().version;
        all_applied(&plane.control, n, version).await;
        samples.push(replied.elapsed());
    }
    samples.sort();
    let pick = |p: f64| ms(samples[((samples.len() - 1) as f64 * p).round() as usize]);
    println!(
        "{n:>3} worker(s), 100-rule policy, {rounds} writes: reply -> every ACK  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        pick(0.5),
        pick(0.99),
        ms(*samples.last().unwrap())
    );
    let _ = stop.send(true);
}

fn big_policy() -> Policy {
    let rule = |i: usize, m: Match| Rule {
        id: format!("{i:026}"),
        matches: m,
        level: Level::Encrypt,
        cipher_strength: CipherStrength::Medium,
        enabled: true,
        comment: String::new(),
    };
    let inbound = (0..100_000u32)
        .map(|i| {
            rule(
                i as usize,
                Match::parse(&format!(
                    "{}/28",
                    std::net::Ipv4Addr::from(0x0a00_0000 | (i << 4))
                ))
                .unwrap(),
            )
        })
        .chain((0..100_000).map(|i| rule(100_000 + i, Match::Subdomains(format!("d{i}.example")))))
        .collect();
    Policy {
        inbound,
        ..Policy::default()
    }
}

async fn big_snapshot() {
    let policy = big_policy();
    let t = Instant::now();
    let wire = pb::Policy::from(&policy);
    let convert = t.elapsed();
    let snapshot = pb::Snapshot {
        version: 2,
        nonce: "n".into(),
        policy: Some(wire),
        settings_json: serde_json::to_string(&Settings::default()).unwrap(),
    };
    let t = Instant::now();
    let bytes = snapshot.encode_to_vec();
    let encode = t.elapsed();
    let t = Instant::now();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&bytes).unwrap();
    let gzipped = gz.finish().unwrap();
    let gzip = t.elapsed();
    let t = Instant::now();
    let decoded = pb::Snapshot::decode(bytes.as_slice()).unwrap();
    let decode = t.elapsed();
    let t = Instant::now();
    postern_worker::policy::compile(&decoded).unwrap();
    let compile = t.elapsed();
    println!(
        "snapshot of 100,000 IP + 100,000 domain rules: {:.1} MB protobuf, {:.1} MB gzipped on the wire",
        bytes.len() as f64 / 1e6,
        gzipped.len() as f64 / 1e6
    );
    println!(
        "  control plane: to protobuf {:.0} ms, encode {:.0} ms, gzip {:.0} ms; worker: decode {:.0} ms, convert + compile {:.0} ms",
        ms(convert),
        ms(encode),
        ms(gzip),
        ms(decode),
        ms(compile)
    );

    let plane = plane().await;
    let (stop, shutdown) = watch::channel(false);
    let _spool = workers(&plane, 1, &shutdown);
    all_applied(&plane.control, 1, 1).await;
    let items: Vec<Value> = policy
        .inbound
        .iter()
        .map(|r| json!({"match": r.matches.to_string(), "level": "encrypt"}))
        .collect();
    // The REST reply carries all 200,000 rules back, so the worker may well ACK before the
    // client has read it: time both from the moment the request is sent.
    let t = Instant::now();
    let body = json!({"items": items});
    let put = async {
        rest(
            &plane,
            reqwest::Method::PUT,
            "/v1/policy/inbound/rules",
            body,
        )
        .await
    };
    let ack = async {
        all_applied(&plane.control, 1, 2).await;
        t.elapsed()
    };
    let mut versions = plane.control.subscribe();
    let durable = async {
        versions.wait_for(|v| *v == 2).await.unwrap();
        t.elapsed()
    };
    let (_, acked, durable) = tokio::join!(put, ack, durable);
    println!(
        "  end to end from sending the PUT: durable {:.2} s, worker ACK {:.2} s (durable -> ACK {:.0} ms: build, gzip, transfer, decode, compile, fsync), REST reply read {:.2} s",
        durable.as_secs_f64(),
        acked.as_secs_f64(),
        ms(acked - durable),
        t.elapsed().as_secs_f64()
    );
    let _ = stop.send(true);
}

#[tokio::main]
async fn main() {
    postern_tls::install_crypto_provider();
    for (n, rounds) in [(1, 200), (10, 200), (100, 100)] {
        push_latency(n, rounds).await;
    }
    big_snapshot().await;
}
