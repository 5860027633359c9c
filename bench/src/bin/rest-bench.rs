//! REST write throughput and replace-all time against the real binary (see bench/README.md).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Server {
    child: std::process::Child,
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(bin: &str, dir: &std::path::Path) -> Server {
    // postern control needs its TLS files; its REST API then serves HTTPS.
    let ca = postern_tls::pki::Ca::new("bench CA").unwrap();
    let server = ca.server(&["127.0.0.1"]).unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let (cert, key, ca_file) = (
        file("control.pem", &server.cert_pem),
        file("control.key", &server.key_pem),
        file("ca.pem", &ca.cert_pem),
    );
    let mut child = Command::new(bin)
        .args([
            "control",
            "--data-dir",
            dir.to_str().unwrap(),
            "--http-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--client-ca",
            &ca_file,
        ])
        .env("RUST_LOG", "warn,postern=info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {bin} (cargo build --release -p postern first): {e}")
        });
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("postern printed its address").unwrap();
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let token = std::fs::read_to_string(dir.join("admin-token"))
        .unwrap()
        .trim()
        .to_string();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    Server {
        child,
        base: format!("https://{addr}"),
        token,
        http,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn metric(http: &reqwest::Client, base: &str, name: &str) -> f64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// `clients` clients creating rules for `secs` seconds; prints rate, latency and flush sharing.
async fn creates(s: &Server, label: &str, clients: usize, secs: u64, prefix: &str) {
    let http = s.http.clone();
    let flushes = metric(&http, &s.base, "postern_control_store_flushes_total").await;
    let waiters = metric(&http, &s.base, "postern_control_store_flush_waiters_total").await;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, base, token, stop, prefix) = (
            http.clone(),
            s.base.clone(),
            s.token.clone(),
            stop.clone(),
            prefix.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = http
                    .post(format!("{base}/v1/policy/outbound/rules"))
                    .bearer_auth(&token)
                    .json(
                        &json!({"match": format!("{prefix}-{c}-{n}.example"), "level": "encrypt"}),
                    )
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                r.bytes().await.unwrap();
                latencies.push(t.elapsed());
                n += 1;
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let flushes = metric(&http, &s.base, "postern_control_store_flushes_total").await - flushes;
    let waiters =
        metric(&http, &s.base, "postern_control_store_flush_waiters_total").await - waiters;
    println!(
        "{label:<44} {:>8.0} creates/s  p50 {:>7.2} ms  p99 {:>7.2} ms  {:>6.2} writes per flush",
        all.len() as f64 / elapsed,
        percentile(&all, 0.5).as_secs_f64() * 1e3,
        percentile(&all, 0.99).as_secs_f64() * 1e3,
        waiters / flushes.max(1.0)
    );
}

async fn replace(s: &Server, direction: &str, items: Vec<Value>) {
    let http = &s.http;
    let n = items.len();
    let body = serde_json::to_vec(&json!({"items": items})).unwrap();
    let size = body.len();
    let t = Instant::now();
    let r = http
        .put(format!("{}/v1/policy/{direction}/rules", s.base))
        .bearer_auth(&s.token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    r.bytes().await.unwrap();
    assert_eq!(status, 200);
    println!(
        "replace all {direction} rules: {n} rules, {:.1} MB body, {:.2} s to the 200",
        size as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    postern_tls::install_crypto_provider();
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let bin = std::env::var("POSTERN_BIN").unwrap_or_else(|_| "target/release/postern".into());
    let dir = tempfile::tempdir().unwrap();
    let s = start(&bin, dir.path());

    creates(&s, "empty store, 1 client", 1, secs, "a").await;
    creates(&s, "empty store, 16 concurrent clients", 16, secs, "b").await;

    let inbound: Vec<Value> = (0..100_000u32)
        .map(|i| {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 | (i << 4));
            json!({"match": format!("{ip}/28"), "level": "encrypt"})
        })
        .chain((0..100_000).map(|i| json!({"match": format!(".d{i}.example"), "level": "may"})))
        .collect();
    replace(&s, "inbound", inbound).await;
    let outbound: Vec<Value> = (0..100_000)
        .map(|i| json!({"match": format!("r{i}.example"), "level": "verify"}))
        .collect();
    replace(&s, "outbound", outbound).await;

    creates(&s, "300k rules loaded, 1 client", 1, secs, "c").await;
    creates(
        &s,
        "300k rules loaded, 16 concurrent clients",
        16,
        secs,
        "d",
    )
    .await;
}
