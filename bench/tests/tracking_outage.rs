//! Issue 26 point 7, end to end in one process: two workers' outboxes, uploaded by the workers'
//! own uploaders over gRPC with mutual TLS to a control plane that keeps tracking in a real
//! PostgreSQL (Debian's, started by the test). The server is killed (SIGKILL) while mail goes
//! on: the workers keep their events in their outboxes, `/readyz` says why, and once the
//! server is back every message has exactly one `received` and one `delivered` entry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_control::tracking::Location;
use postern_events::{self as ev, Event};
use postern_worker::outbox::Outbox;

const WORKERS: usize = 2;

fn events(i: usize) -> [Event; 2] {
    let id = format!("OUT{i:05}");
    [
        Event::Received(ev::Received {
            queue_id: id.clone(),
            session: format!("S{i}"),
            source: ev::Source {
                ip: "192.0.2.1".into(),
                helo: "client.example".into(),
                tls: None,
            },
            sender: "a@sender.example".into(),
            recipients: vec!["b@dest.example".into()],
            size: 1,
            subject: Some(format!("message {i}")),
            message_id: None,
        }),
        Event::Delivered(ev::Delivered {
            queue_id: id,
            recipient: "b@dest.example".into(),
            reply: "250 2.0.0 Ok".into(),
        }),
    ]
}

/// Polls `check` every 50 ms until it holds or `within` passes.
async fn until(within: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_postgresql_loses_and_duplicates_nothing() {
    postern_tls::install_crypto_provider();
    let started = tokio::task::spawn_blocking(|| {
        let server = postern_testpg::Server::start()?;
        let url = server.database();
        Some((server, url))
    });
    let Some((mut server, url)) = started.await.unwrap() else {
        return;
    };
    let plane = postern_bench::plane_with(Some(Location::Postgres(url))).await;
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(postern_control::tracking::run_health(
        plane.control.tracking.clone(),
        shutdown.clone(),
    ));
    let spools = tempfile::tempdir().unwrap();
    let mut outboxes = Vec::new();
    for w in 0..WORKERS {
        let outbox = Outbox::open(&spools.path().join(format!("w{w}")), Arc::default()).unwrap();
        tokio::spawn(outbox.clone().run_writer());
        let id = format!("worker-{w}");
        let mut connection = plane.connection(&[&id]);
        connection.backoff = postern_worker::Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
        };
        tokio::spawn(postern_worker::outbox::upload::run(
            connection,
            id,
            outbox.clone(),
            shutdown.clone(),
        ));
        outboxes.push(outbox);
    }
    let mut sent = 0;
    let all_acked =
        |outboxes: &[Arc<Outbox>]| outboxes.iter().all(|o| o.acked() >= *o.written().borrow());
    let http = reqwest::Client::new();
    let readyz = async || {
        let r = http
            .get(format!("{}/readyz", plane.base))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };

    send(&outboxes, &mut sent, 200);
    until(
        Duration::from_secs(60),
        "the first 200 stored",
        async || all_acked(&outboxes),
    )
    .await;
    assert_eq!(readyz().await.0, 200);

    server = tokio::task::spawn_blocking(move || {
        server.kill();
        server
    })
    .await
    .unwrap();
    // Mail goes on while the database is gone.
    send(&outboxes, &mut sent, 200);
    until(
        Duration::from_secs(60),
        "/readyz saying tracking is unavailable",
        async || {
            let (status, text) = readyz().await;
            status == 503 && text.contains("tracking unavailable (PostgreSQL")
        },
    )
    .await;
    send(&outboxes, &mut sent, 200);
    assert!(
        !all_acked(&outboxes),
        "events acknowledged while the database was down"
    );

    server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    until(
        Duration::from_secs(120),
        "every event stored after the restart",
        async || all_acked(&outboxes),
    )
    .await;
    until(Duration::from_secs(30), "/readyz ready again", async || {
        readyz().await.0 == 200
    })
    .await;

    // Exactly once: one received and one delivered entry per message, and no other message.
    let tracking = plane.control.tracking.clone();
    let (count, kinds) = tokio::task::spawn_blocking(move || {
        let kinds: Vec<(usize, usize)> = (0..sent)
            .map(|i| {
                let m = tracking
                    .message(&format!("OUT{i:05}"))
                    .unwrap()
                    .unwrap_or_else(|| panic!("message {i} lost"));
                let n = |k: &str| m.timeline.iter().filter(|e| e.kind == k).count();
                (n("received"), n("delivered"))
            })
            .collect();
        (tracking.count(), kinds)
    })
    .await
    .unwrap();
    assert_eq!(count, sent as u64);
    for (i, k) in kinds.iter().enumerate() {
        assert_eq!(*k, (1, 1), "message {i}: (received, delivered) entries");
    }
    drop(server);
}

fn send(outboxes: &[Arc<Outbox>], sent: &mut usize, n: usize) {
    for i in *sent..*sent + n {
        for event in events(i) {
            outboxes[i % WORKERS].emit(1, event);
        }
    }
    *sent += n;
}
