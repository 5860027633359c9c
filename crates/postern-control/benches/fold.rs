//! What folding one event into a message record costs as the record ages (issue 12, point 4):
//! the store reads the record, folds the event and writes the record back with the event's
//! timeline entry under its own key (`tracking::put`), so the cost is the fold plus a JSON
//! round trip of the record and one entry. Measured for the 10th, the 1,000th and the 10,000th
//! event of a message retried over and over: with the timeline kept apart and the rest of the
//! record bounded, the three should be alike.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use postern_control::tracking::fold::Stored;
use postern_events::{self as ev, Event};

fn record(seq: u64, event: Event) -> ev::Record {
    ev::Record {
        seq,
        at_ms: 1_000 + seq,
        policy_version: 4,
        event,
        truncated: false,
    }
}

fn received() -> Event {
    Event::Received(ev::Received {
        queue_id: "Q".into(),
        session: "S".into(),
        source: ev::Source {
            ip: "192.0.2.7".into(),
            helo: "client.example".into(),
            tls: None,
        },
        sender: "a@x.example".into(),
        recipients: vec!["b@y.example".into(), "c@y.example".into()],
        size: 4096,
        subject: Some("invoice".into()),
        message_id: Some("m@x.example".into()),
    })
}

fn deferral(seq: u64) -> Event {
    let recipient = if seq.is_multiple_of(2) {
        "b@y.example"
    } else {
        "c@y.example"
    };
    Event::Deferred(ev::Deferred {
        queue_id: "Q".into(),
        recipient: recipient.into(),
        reason: "451 4.3.0 try again later".into(),
        next_attempt_ms: seq * 1000,
        violation: None,
    })
}

/// A record that has folded `n` events.
fn aged(n: u64) -> Stored {
    let mut s = Stored::new("Q", "w", 1_000);
    s.apply("w", "E", &record(1, received()));
    for seq in 2..=n {
        s.apply("w", "E", &record(seq, deferral(seq)));
    }
    s
}

fn fold(c: &mut Criterion) {
    let mut group = c.benchmark_group("fold one event (with the JSON round trip)");
    for n in [10u64, 1_000, 10_000] {
        // As the store holds it: the record without its timeline.
        let mut aged = aged(n);
        aged.message.timeline.clear();
        let stored = serde_json::to_vec(&aged).unwrap();
        group.bench_with_input(BenchmarkId::from_parameter(n), &stored, |b, bytes| {
            b.iter(|| {
                let mut s: Stored = serde_json::from_slice(bytes).unwrap();
                s.apply("w", "E", &record(n + 1, deferral(n + 1)));
                let added = std::mem::take(&mut s.message.timeline);
                (
                    serde_json::to_vec(&added).unwrap(),
                    serde_json::to_vec(&s).unwrap(),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fold);
criterion_main!(benches);
