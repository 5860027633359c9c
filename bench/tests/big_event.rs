//! Issue 23 point 6, end to end in one process: a worker's outbox holding a 1.1 MiB event and
//! ten small ones after it, uploaded by the worker's own uploader over gRPC with mutual TLS to a
//! real control plane storing in sled: all eleven arrive, in order, once, the big one cut to its
//! budget and marked.

use std::sync::Arc;
use std::time::Duration;

use postern_events::{self as ev, Event};
use postern_worker::outbox::Outbox;

fn received(id: &str, recipients: Vec<String>) -> Event {
    Event::Received(ev::Received {
        queue_id: id.into(),
        session: "S".into(),
        source: ev::Source {
            ip: "192.0.2.1".into(),
            helo: "client.example".into(),
            tls: None,
        },
        sender: "a@sender.example".into(),
        recipients,
        size: 1,
        subject: Some("s".into()),
        message_id: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_megabyte_event_and_the_ten_after_it_arrive_once_in_order() {
    postern_tls::install_crypto_provider();
    let plane = postern_bench::plane().await;
    let spool = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(spool.path(), Arc::default()).unwrap();
    tokio::spawn(outbox.clone().run_writer());
    // 2,300 recipients of 500 bytes: 1.1 MiB of text in one event.
    let many: Vec<String> = (0..2_300)
        .map(|i| format!("{i:04}{}@x.example", "r".repeat(486)))
        .collect();
    assert!(many.iter().map(String::len).sum::<usize>() > 1_100_000);
    outbox.emit(1, received("BIG", many));
    for i in 0..10 {
        outbox.emit(
            1,
            received(&format!("SMALL{i}"), vec!["b@y.example".into()]),
        );
    }
    outbox.settle(Duration::from_secs(30)).await;

    let connection = plane.connection(&["w1"]);
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(postern_worker::outbox::upload::run(
        connection,
        "w1".into(),
        outbox.clone(),
        shutdown,
    ));
    let acked = async {
        while outbox.acked() < 11 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), acked)
        .await
        .expect("all eleven acknowledged");

    let tracking = &plane.control.tracking;
    let big = tracking
        .message("BIG")
        .unwrap()
        .expect("the big event arrived");
    assert_eq!(big.timeline.len(), 1, "once");
    assert!(big.timeline[0].truncated, "marked as cut");
    let kept = big.recipients.len();
    assert!(kept > 1_000 && kept < 2_300, "{kept} recipients kept");
    let mut firsts = vec![big.received_ms];
    for i in 0..10 {
        let m = tracking
            .message(&format!("SMALL{i}"))
            .unwrap()
            .unwrap_or_else(|| panic!("SMALL{i} arrived"));
        assert_eq!(m.timeline.len(), 1, "once");
        assert!(!m.timeline[0].truncated);
        firsts.push(m.received_ms);
    }
    assert!(
        firsts.windows(2).all(|w| w[0] <= w[1]),
        "in order: {firsts:?}"
    );
}
