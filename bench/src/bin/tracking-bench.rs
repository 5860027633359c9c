//! Tracking figures (issue 6): ingest rate at the control plane from 4 workers, query latency
//! for sender and recipient searches with N messages stored, and disk per million messages.
//! The real path: 4 worker outboxes (the worker's code, on disk) are filled with each message's
//! events (connection, received, attempt over TLS, delivered), then uploaded by the worker's
//! uploader over gRPC with mutual TLS to a control plane in this process, which stores them in
//! its tracking database (SQLite in a temporary directory, or the PostgreSQL database of
//! `--database-url`, which should be empty); queries go through its REST API.
//! Run: `cargo run --release -p postern-bench --bin tracking-bench -- [messages]
//! [--database-url URL]` (default 1,000,000 messages).

use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_bench::plane_with;
use postern_control::tracking::Location;
use postern_events::{self as ev, Event};
use postern_worker::outbox::Outbox;
use tokio::sync::watch;

const WORKERS: usize = 4;
const SENDERS: usize = 10_000;
const RECIPIENTS: usize = 100_000;

fn tls() -> ev::Tls {
    ev::Tls {
        version: "TLSv1.3".into(),
        cipher: "TLS_AES_256_GCM_SHA384".into(),
        key_exchange: "X25519MLKEM768".into(),
        certificate: ev::Certificate::Verified,
    }
}

/// Message `n`'s sender: one of `SENDERS` addresses.
fn sender(n: usize) -> String {
    let u = n % SENDERS;
    format!("user{u}@sender{}.example", u % 97)
}

/// Message `n`'s recipient: one of `RECIPIENTS` addresses.
fn recipient(n: usize) -> String {
    let r = n % RECIPIENTS;
    format!("rcpt{r}@dest{}.example", r % 1009)
}

/// The events of message `i`.
fn events(i: usize) -> Vec<Event> {
    let at = 1_790_000_000_000 + i as u64;
    let id = format!("01BENCH{i:019}");
    let session = format!("S{i:025}");
    let source = ev::Source {
        ip: format!("192.0.2.{}", i % 250),
        helo: format!("client{}.example", i % 500),
        tls: Some(tls()),
    };
    let rcpt = recipient(i);
    let leg = ev::Leg {
        host: format!("mx.dest{}.example", i % 1009),
        ip: format!("198.51.100.{}", i % 250),
        tls: Some(tls()),
        tls_fallback: false,
    };
    vec![
        Event::Received(ev::Received {
            queue_id: id.clone(),
            session: session.clone(),
            source: source.clone(),
            sender: sender(i),
            recipients: vec![rcpt.clone()],
            size: 4096,
            subject: Some(format!("Invoice {i} for order {}", i * 7 % 100_000)),
            message_id: Some(format!("{i}@client.example")),
        }),
        Event::Attempt(ev::Attempt {
            queue_id: id.clone(),
            recipient: rcpt.clone(),
            leg: Some(leg),
            reply: "250 2.0.0 Ok: queued as ABC".into(),
            violation: None,
            policy: ev::PolicySource::Default,
        }),
        Event::Delivered(ev::Delivered {
            queue_id: id,
            recipient: rcpt,
            reply: "250 2.0.0 Ok: queued as ABC".into(),
        }),
        Event::Connection(ev::Connection {
            session,
            ip: source.ip,
            started_ms: at,
            helo: Some(source.helo),
            tls: Some(tls()),
            tls_failure: None,
            refused: None,
            messages: 1,
            starttls_leftovers: 0,
            refused_count: 0,
        }),
    ]
}

/// A query string from a random number.
type Query<'a> = Box<dyn Fn(usize) -> String + 'a>;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    postern_tls::install_crypto_provider();
    let (mut total, mut database) = (1_000_000usize, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--database-url" => {
                let url = args.next().expect("--database-url URL");
                database = Some(Location::postgres(&url).expect("a PostgreSQL URL"));
            }
            n => total = n.parse().expect("a number of messages"),
        }
    }
    let plane = plane_with(database).await;
    println!("tracking: {}", plane.control.tracking.describe());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine: {cpus} cores; {total} messages, 4 events each, from {WORKERS} workers");

    // Fill each worker's outbox with its share (the writer's channel holds 65,536 events, so
    // the filling waits for the writer every 10,000 messages).
    let spools = tempfile::tempdir().unwrap();
    let mut outboxes = Vec::new();
    let fill = Instant::now();
    let fill_started = std::time::SystemTime::now();
    for w in 0..WORKERS {
        let outbox = Outbox::open(&spools.path().join(format!("w{w}")), Arc::default()).unwrap();
        tokio::spawn(outbox.clone().run_writer());
        outboxes.push(outbox);
    }
    for chunk in (0..total).collect::<Vec<_>>().chunks(10_000) {
        for &i in chunk {
            for event in events(i) {
                outboxes[i % WORKERS].emit(1, event);
            }
        }
        for o in &outboxes {
            o.settle(Duration::from_secs(60)).await;
        }
    }
    let outbox_bytes: u64 = outboxes.iter().map(|o| o.bytes()).sum();
    println!(
        "outboxes filled in {:.1} s: {:.0} MB",
        fill.elapsed().as_secs_f64(),
        outbox_bytes as f64 / 1e6
    );
    let last: Vec<u64> = outboxes.iter().map(|o| *o.written().borrow()).collect();

    // Upload: the worker's uploader, one per worker, all at once.
    let (_stop, shutdown) = watch::channel(false);
    let start = Instant::now();
    for (w, outbox) in outboxes.iter().enumerate() {
        let id = format!("worker-{w}");
        let connection = plane.connection(&[&id]);
        tokio::spawn(postern_worker::outbox::upload::run(
            connection,
            id,
            outbox.clone(),
            shutdown.clone(),
        ));
    }
    let mut reported = Instant::now();
    loop {
        let done: u64 = outboxes.iter().map(|o| o.acked()).sum();
        if outboxes.iter().zip(&last).all(|(o, l)| o.acked() >= *l) {
            break;
        }
        if reported.elapsed() > Duration::from_secs(30) {
            println!(
                "  ... {done} events stored after {:.0} s",
                start.elapsed().as_secs_f64()
            );
            reported = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let events = (total * 4) as f64;
    println!(
        "ingest: {:.0} events/s ({:.0} messages/s), {total} messages in {secs:.1} s",
        events / secs,
        total as f64 / secs
    );
    let tracking = plane.control.tracking.clone();
    let disk = tokio::task::spawn_blocking(move || tracking.disk_bytes())
        .await
        .unwrap()
        .unwrap();
    println!(
        "disk: {:.0} MB for {total} messages = {:.2} GB per million ({:.0} bytes per message)",
        disk as f64 / 1e6,
        disk as f64 / total as f64 / 1e3,
        disk as f64 / total as f64
    );

    if plane.control.tracking.engine() == postern_control::tracking::sql::Engine::Postgres {
        // A day over is compacted by retention; here, today's partition is, to show the
        // figure of every day but the current one.
        let tracking = plane.control.tracking.clone();
        let started = Instant::now();
        let disk = tokio::task::spawn_blocking(move || {
            tracking.compact(u64::MAX).unwrap();
            tracking.disk_bytes().unwrap()
        })
        .await
        .unwrap();
        println!(
            "disk once the day is compacted ({:.0} s): {:.0} MB = {:.2} GB per million ({:.0} bytes per message)",
            started.elapsed().as_secs_f64(),
            disk as f64 / 1e6,
            disk as f64 / total as f64 / 1e3,
            disk as f64 / total as f64
        );
    }
    let http = reqwest::Client::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed as usize
    };
    // Queries through the REST API: a page of 50, newest first. Events are stamped when
    // emitted, so every message falls within the few minutes of the filling.
    let since = postern_time::rfc3339_ms(postern_time::unix_ms(fill_started));
    let until = postern_time::rfc3339_ms(postern_time::now_ms());
    let queries: Vec<(&str, Query<'_>)> = vec![
        (
            "sender",
            Box::new(|n| format!("sender={}", sender(n % total))),
        ),
        (
            "recipient",
            Box::new(|n| format!("recipient={}", recipient(n % total))),
        ),
        (
            "sender + status=delivered + tls=true",
            Box::new(|n| format!("sender={}&status=delivered&tls=true", sender(n % total))),
        ),
        (
            "subject over the whole range",
            Box::new(move |n| {
                format!(
                    "subject=invoice%20{}%20&since={since}&until={until}",
                    n % total
                )
            }),
        ),
        (
            "status=delivered (facet index)",
            Box::new(|_| "status=delivered".into()),
        ),
        ("newest, no filter", Box::new(|_| String::new())),
    ];
    for (name, query) in &queries {
        let mut times = Vec::new();
        let mut found = 0usize;
        for _ in 0..300 {
            let q = query(next());
            let started = Instant::now();
            let r = http
                .get(format!("{}/v1/messages?limit=50&{q}", plane.base))
                .bearer_auth(&plane.token)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{q}: {}", r.status());
            let body: serde_json::Value = r.json().await.unwrap();
            times.push(started.elapsed());
            found += body["items"].as_array().map_or(0, Vec::len);
        }
        times.sort();
        println!(
            "query {name}: p50 {:.2} ms, p99 {:.2} ms ({:.1} results per page)",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
            found as f64 / times.len() as f64
        );
    }
}
