//! Crash safety of the spool (issue 4, point 7): SIGKILL the worker at seeded random points
//! while 8 clients send mail; after each restart every message that got its 250 must be in the
//! queue, complete. And a full disk (a small tmpfs, when the test runs as root) gives 452 and
//! never a 250.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postern_worker::spool::Spool;
use serde_json::json;
use support::{Pki, Postern, Rng};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Loopback clients may relay anywhere; delivery finds no resolver (tests never use the
/// system's), so queued mail stays deferred in the spool.
async fn relay_loopback_without_dns(control: &Postern) {
    control
        .rest(
            reqwest::Method::PUT,
            "/v1/relay",
            json!({"domains": [], "networks": ["127.0.0.0/8"]}),
        )
        .await;
    control
        .rest(
            reqwest::Method::PUT,
            "/v1/settings",
            json!({"delivery": {"nameservers": ["127.0.0.1:9"]}}),
        )
        .await;
}

const BODY_LINE: &str =
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n";

/// One reply line; `None` once the connection is gone.
async fn next(io: &mut BufReader<tokio::net::TcpStream>) -> Option<String> {
    let mut line = String::new();
    match io.read_line(&mut line).await {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end().to_string()),
    }
}

/// Sends messages on one connection until it fails; records the id of every 250.
async fn sender(addr: String, n: usize, acked: Arc<Mutex<Vec<String>>>) {
    let Ok(stream) = tokio::net::TcpStream::connect(&addr).await else {
        return;
    };
    let mut io = BufReader::new(stream);
    if next(&mut io).await.is_none() {
        return;
    }
    // About 4 KiB, in lines of 80.
    let body = "Subject: crash test\r\n\r\n".to_string() + &BODY_LINE.repeat(50) + ".\r\n";
    for i in 0.. {
        let batch = format!(
            "HELO c{n}\r\nMAIL FROM:<s{n}@sender.example>\r\nRCPT TO:<r{i}@rcpt.example>\r\nDATA\r\n"
        );
        if io.get_mut().write_all(batch.as_bytes()).await.is_err() {
            return;
        }
        for _ in 0..4 {
            if next(&mut io).await.is_none() {
                return;
            }
        }
        if io.get_mut().write_all(body.as_bytes()).await.is_err() {
            return;
        }
        let Some(r) = next(&mut io).await else { return };
        match r.strip_prefix("250 2.0.0 Ok: queued as ") {
            Some(id) => acked.lock().unwrap().push(id.to_string()),
            None => panic!("unexpected reply to the message: {r}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_message() {
    let mut rng = Rng::from_env();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("tls"));
    pki.client("w", &["w"]);
    let control = Postern::control(&dir.path().join("control"), &pki);
    relay_loopback_without_dns(&control).await;
    let spool = dir.path().join("spool");
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    for round in 0..4 {
        let worker = Postern::worker(&spool, &pki, &control.other, "w", "w");
        control.wait_applied().await;
        let clients: Vec<_> = (0..8)
            .map(|n| tokio::spawn(sender(worker.other.clone(), n, acked.clone())))
            .collect();
        let wait = 200 + rng.below(600);
        eprintln!("round {round}: SIGKILL after {wait} ms");
        tokio::time::sleep(Duration::from_millis(wait)).await;
        worker.kill();
        for c in clients {
            c.await.unwrap();
        }
    }
    // Restart once more (recovery runs at start) and look at the queue.
    let _worker = Postern::worker(&spool, &pki, &control.other, "w", "w");
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 20,
        "too few messages to mean anything: {}",
        acked.len()
    );
    // Read as a restart finds it, beside the running worker.
    let queued: HashMap<String, Vec<u8>> = Spool::messages(&spool)
        .unwrap()
        .into_iter()
        .map(|(envelope, body)| (envelope.id, body))
        .collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|id| !queued.contains_key(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged messages lost: {lost:?}",
        lost.len(),
        acked.len()
    );
    for id in &acked {
        assert!(
            queued[id].ends_with(BODY_LINE.repeat(50).as_bytes()),
            "{id} is incomplete"
        );
    }
    assert_eq!(
        std::fs::read_dir(spool.join("incoming")).unwrap().count(),
        0,
        "partial files survived a restart"
    );
    eprintln!(
        "{} acknowledged messages all survived 4 SIGKILLs ({} queued)",
        acked.len(),
        queued.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gives_452_and_never_a_250() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let Some(_mount) = support::Tmpfs::mount(&spool, "1m") else {
        return;
    };
    let pki = Pki::new(&dir.path().join("tls"));
    pki.client("w", &["w"]);
    let control = Postern::control(&dir.path().join("control"), &pki);
    relay_loopback_without_dns(&control).await;
    let worker = Postern::worker(&spool, &pki, &control.other, "w", "w");
    control.wait_applied().await;

    let mut io = BufReader::new(tokio::net::TcpStream::connect(&worker.other).await.unwrap());
    next(&mut io).await.unwrap();
    io.get_mut().write_all(b"HELO c\r\n").await.unwrap();
    next(&mut io).await.unwrap();
    // About 200 KiB a message: the 1 MiB tmpfs fills within a few.
    let body = "Subject: big\r\n\r\n".to_string() + &BODY_LINE.repeat(2500) + ".\r\n";
    let (mut accepted, mut refused) = (Vec::new(), 0);
    for i in 0..12 {
        io.get_mut()
            .write_all(format!("MAIL FROM:<a@b>\r\nRCPT TO:<r{i}@c>\r\nDATA\r\n").as_bytes())
            .await
            .unwrap();
        for _ in 0..3 {
            next(&mut io).await.unwrap();
        }
        io.get_mut().write_all(body.as_bytes()).await.unwrap();
        let reply = next(&mut io).await.unwrap();
        if let Some(id) = reply.strip_prefix("250 2.0.0 Ok: queued as ") {
            assert_eq!(refused, 0, "a 250 after the disk was full");
            accepted.push(id.to_string());
        } else {
            assert_eq!(reply, "452 4.3.1 Insufficient system storage");
            refused += 1;
        }
    }
    assert!(refused > 0, "the disk never filled");
    let queued: HashMap<String, Vec<u8>> = Spool::messages(&spool)
        .unwrap()
        .into_iter()
        .map(|(envelope, body)| (envelope.id, body))
        .collect();
    for id in &accepted {
        assert!(
            queued[id].ends_with(BODY_LINE.repeat(2500).as_bytes()),
            "{id} is incomplete"
        );
    }
    assert_eq!(
        std::fs::read_dir(spool.join("incoming")).unwrap().count(),
        0,
        "partial files were left behind"
    );
    eprintln!(
        "{} messages accepted, then {refused} refused with 452",
        accepted.len()
    );
}
