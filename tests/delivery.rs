//! The outbound delivery engine against real sockets (issue 11): a deadline on every step
//! against next hops that misbehave on purpose, slots that a stalled destination cannot take
//! from the others, no second delivery when the spool fails after a 250 (through the fault seam
//! and, as root, a full tmpfs), routing through a DNS server on loopback (NXDOMAIN, null MX, this
//! gateway as a backup MX), and connection reuse counted by the next hop itself.

mod support;

use std::time::Duration;

use hickory_resolver::proto::rr::rdata::{A, MX};
use hickory_resolver::proto::rr::{Name, RData};
use reqwest::Method;
use serde_json::{Value, json};
use support::dns::dns;
use support::eventually;
use support::hops::{silent, stalling, trickle};
use support::relay::{NO_DNS, Relay, send_raw, sink, sink_counting, sink_on};

const MESSAGE: &str = "Subject: engine\r\nMessage-ID: <e1@sender.example>\r\n\r\nhello\r\n";

/// Short deadlines for every step, so that hostile next hops are given up on in seconds.
fn short_deadlines() -> Value {
    json!({
        "nameservers": [NO_DNS],
        "connect_timeout_s": 2,
        "greeting_timeout_s": 2,
        "command_timeout_s": 2,
        "data_timeout_s": 2,
        "session_timeout_s": 20
    })
}

async fn reason(r: &Relay, recipient: &str, what: &str) -> String {
    eventually(what, Duration::from_secs(60), || async {
        r.last_reply(recipient).await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_has_a_deadline_and_says_which_expired() {
    let (silent, _) = silent().await;
    let (trickle, trickled) = trickle().await;
    let (stall, stalled) = stalling().await;
    let r = Relay::start_with(
        &[
            ("silent.example", &silent),
            ("trickle.example", &trickle),
            ("stall.example", &stall),
        ],
        json!({"delivery": short_deadlines()}),
        tempfile::tempdir().unwrap(),
        &[],
    )
    .await;
    r.send(&["a@silent.example"]).await;
    r.send(&["b@trickle.example"]).await;
    // A body far larger than the socket buffers, so that the writes stall.
    let big = format!(
        "Subject: big\r\n\r\n{}",
        format!("{}\r\n", "x".repeat(998)).repeat(8 * 1024)
    );
    send_raw(
        &r.worker.other,
        "alice@sender.example",
        &["c@stall.example"],
        &big,
    )
    .await;
    let port = |addr: &str| addr.rsplit(':').next().unwrap().to_string();
    assert_eq!(
        reason(&r, "a@silent.example", "the silent hop's deferral").await,
        "450 4.4.2 conversation with 127.0.0.1[127.0.0.1] timed out while receiving the initial server greeting"
    );
    // One byte a second: every read is quick, the reply never complete.
    assert_eq!(
        reason(&r, "b@trickle.example", "the trickling hop's deferral").await,
        "450 4.4.2 conversation with 127.0.0.1[127.0.0.1] timed out while receiving the initial server greeting"
    );
    assert_eq!(
        reason(&r, "c@stall.example", "the stalled hop's deferral").await,
        "450 4.4.2 conversation with 127.0.0.1[127.0.0.1] timed out while sending message body"
    );
    assert!(trickled.accepted.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    assert!(stalled.accepted.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    let _ = (port(&silent), port(&trickle));
}

/// A hundred deliveries stuck at one destination take its slots only: with 25 connections
/// overall and 20 per destination, mail to another next hop still flows while they hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_deliveries_hold_only_their_own_destination_s_slots() {
    let (silent, held) = silent().await;
    let (good, seen) = sink(0).await;
    let r = Relay::start_with(
        &[("silent.example", &silent), ("partner.example", &good)],
        json!({"delivery": {
            "nameservers": [NO_DNS],
            "concurrency": 25,
            "per_destination_concurrency": 20,
            // Long enough that none of them expires during the test.
            "greeting_timeout_s": 600
        }}),
        tempfile::tempdir().unwrap(),
        &[],
    )
    .await;
    for i in 0..100 {
        let to = format!("user{i}@silent.example");
        send_raw(&r.worker.other, "alice@sender.example", &[&to], MESSAGE).await;
    }
    eventually(
        "twenty stalled sessions",
        Duration::from_secs(60),
        || async { (held.open() == 20).then_some(()) },
    )
    .await;
    r.send(&["bob@partner.example"]).await;
    eventually(
        "mail to another destination delivered",
        Duration::from_secs(60),
        || async { seen.lock().unwrap().first().cloned() },
    )
    .await;
    assert_eq!(
        held.open(),
        20,
        "the stalled destination never got more than its own slots"
    );
    let waiting = r
        .listing()
        .await
        .iter()
        .filter(|m| {
            m["recipients"][0]["address"]
                .as_str()
                .unwrap()
                .ends_with("@silent.example")
        })
        .count();
    assert_eq!(waiting, 100, "every stalled message is still queued");
}

/// `POSTERN_SPOOL_FAULTS` makes every state write and every DSN fail as on a full disk: the
/// delivered recipient is never sent again, however many rounds retry the deferred one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_state_write_or_dsn_never_sends_a_delivered_recipient_again() {
    let (addr, seen, counts) = sink_counting(0).await;
    let r = Relay::start_with(
        &[("partner.example", &addr)],
        json!({"delivery": {"nameservers": [NO_DNS]}, "queue": {"first_retry_s": 1, "max_retry_s": 1}}),
        tempfile::tempdir().unwrap(),
        &[("POSTERN_SPOOL_FAULTS", "state_write,dsn")],
    )
    .await;
    r.send(&[
        "bob@partner.example",
        "later@partner.example",
        "bad@partner.example",
    ])
    .await;
    eventually(
        "three rounds for the deferred recipient",
        Duration::from_secs(60),
        || async { (counts.rcpt_count("later@partner.example") >= 3).then_some(()) },
    )
    .await;
    let delivered = |who: &str| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(rcpts, _)| rcpts.iter().any(|r| r == who))
            .count()
    };
    assert_eq!(delivered("bob@partner.example"), 1);
    assert_eq!(counts.rcpt_count("bob@partner.example"), 1);
    assert_eq!(counts.rcpt_count("bad@partner.example"), 1, "bounced once");
    assert!(
        r.worker
            .logged("writing a delivery state failed; kept in memory")
            >= 3
    );
    assert!(r.worker.logged("queueing a DSN failed; retried") >= 2);
    // The listing shows the state kept in memory, not the stale file.
    let listed = r.listing().await;
    let rcpts = &listed[0]["recipients"];
    assert_eq!(rcpts[0]["status"], "delivered", "{listed:?}");
    assert_eq!(rcpts[2]["status"], "bounced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_removal_never_sends_the_message_again() {
    let (addr, _, counts) = sink_counting(0).await;
    let r = Relay::start_with(
        &[("partner.example", &addr)],
        json!({"delivery": {"nameservers": [NO_DNS]}, "queue": {"first_retry_s": 1, "max_retry_s": 1}}),
        tempfile::tempdir().unwrap(),
        &[("POSTERN_SPOOL_FAULTS", "remove")],
    )
    .await;
    r.send(&["bob@partner.example"]).await;
    eventually("three failed removals", Duration::from_secs(60), || async {
        (r.worker
            .logged("removing a finished message failed; retried")
            >= 3)
            .then_some(())
    })
    .await;
    assert_eq!(counts.rcpt_count("bob@partner.example"), 1);
}

/// As root: the spool on a tmpfs that fills up while the next hop holds its 250; the state
/// write fails with ENOSPC and nothing is delivered twice. Skipped with its reason elsewhere
/// (CI runs as root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_that_fills_up_after_the_250_never_delivers_twice() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let Some(mount) = support::Tmpfs::mount(&spool, "16m") else {
        return;
    };
    let (addr, seen, counts) = sink_counting(0).await;
    let r = Relay::start_with(
        &[("partner.example", &addr)],
        json!({"delivery": {"nameservers": [NO_DNS]}, "queue": {"first_retry_s": 1, "max_retry_s": 1},
               "tracking": {"outbox_max_bytes": 16777216}}),
        dir,
        &[],
    )
    .await;
    r.send(&["hold@partner.example", "later@partner.example"])
        .await;
    eventually(
        "the transaction at the sink",
        Duration::from_secs(30),
        || async { (counts.now.load(std::sync::atomic::Ordering::SeqCst) == 1).then_some(()) },
    )
    .await;
    mount.fill();
    counts.gate.add_permits(1);
    eventually(
        "three rounds on a full disk",
        Duration::from_secs(60),
        || async { (counts.rcpt_count("later@partner.example") >= 3).then_some(()) },
    )
    .await;
    assert_eq!(counts.rcpt_count("hold@partner.example"), 1);
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert!(
        r.worker.logged("No space left on device") >= 1 || r.worker.logged("disk is full") >= 1
    );
    drop(r);
}

/// Mail routed by MX through a DNS server on loopback: NXDOMAIN and a null MX bounce at once
/// with their own texts; a domain listing this gateway as its backup MX goes to the better
/// host; one listing it as the best MX loops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_by_mx_bounces_what_cannot_exist_and_never_loops() {
    // The sender's domain has a route of its own: the DSN is read where it is delivered.
    let (returns, returned) = sink(0).await;
    let r = Relay::start_with(
        &[("sender.example", &returns)],
        json!({}),
        tempfile::tempdir().unwrap(),
        &[],
    )
    .await;
    let port: u16 = r.worker.other.rsplit(':').next().unwrap().parse().unwrap();
    // The better MX host listens on the same port as this worker, on another address.
    let (primary, seen) = sink_on(&format!("127.0.0.2:{port}")).await;
    let a = |ip: &str| RData::A(A(ip.parse().unwrap()));
    let mx = |p: u16, host: &str| RData::MX(MX::new(p, Name::from_ascii(host).unwrap()));
    let ns = dns(vec![
        ("nullmx.example.", mx(0, ".")),
        ("backup.example.", mx(10, "primary.backup.example.")),
        ("backup.example.", mx(20, "gateway.test.")),
        ("best.example.", mx(5, "gateway.test.")),
        ("best.example.", mx(10, "primary.backup.example.")),
        ("primary.backup.example.", a("127.0.0.2")),
        ("gateway.test.", a("127.0.0.1")),
    ])
    .await;
    r.rest(
        Method::PUT,
        "/v1/settings",
        json!({"delivery": {"nameservers": [ns.to_string()], "mx_port": port}}),
    )
    .await;
    r.control.wait_applied().await;
    r.send(&[
        "x@nxdomain.example",
        "y@nullmx.example",
        "z@best.example",
        "w@backup.example",
    ])
    .await;
    eventually(
        "delivery to the better MX host",
        Duration::from_secs(30),
        || async { seen.lock().unwrap().first().cloned() },
    )
    .await;
    assert_eq!(seen.lock().unwrap()[0].0, ["w@backup.example"]);
    let _ = primary;
    let (to, dsn) = eventually("the DSN", Duration::from_secs(30), || async {
        returned.lock().unwrap().first().cloned()
    })
    .await;
    assert_eq!(to, ["alice@sender.example"]);
    for needle in [
        "<x@nxdomain.example>: 550 5.4.4 Host or domain name not found. Name service error for name=nxdomain.example type=MX: Host not found",
        "Status: 5.4.4",
        "<y@nullmx.example>: 550 5.1.10 Domain nullmx.example does not accept mail (nullMX)",
        "Status: 5.1.10",
        "<z@best.example>: 554 5.4.6 mail for best.example loops back to myself",
        "Diagnostic-Code: X-Postern; 554 5.4.6",
    ] {
        assert!(dsn.contains(needle), "{needle} missing:\n{dsn}");
    }
    assert!(
        !dsn.contains("Remote-MTA"),
        "no next hop was involved:\n{dsn}"
    );
}

/// Messages to one next hop share connections (RSET between them), counted by the next hop
/// itself; turning reuse off gives one session per message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_reused_as_the_next_hop_counts_them() {
    for (reuse, expect_reuse) in [(100, true), (0, false)] {
        let (addr, seen, counts) = sink_counting(0).await;
        let r = Relay::start(
            &addr,
            json!({"delivery": {"nameservers": [NO_DNS], "connection_reuse_count": reuse, "connection_idle_s": 30}}),
        )
        .await;
        for _ in 0..10 {
            r.send(&["bob@partner.example"]).await;
            // One at a time: each message finds the previous one's connection idle.
            let before = seen.lock().unwrap().len();
            eventually("the delivery", Duration::from_secs(30), || async {
                (seen.lock().unwrap().len() > before).then_some(())
            })
            .await;
        }
        if expect_reuse {
            assert_eq!(counts.sessions(), 1, "ten messages over one connection");
        } else {
            assert_eq!(counts.sessions(), 10, "reuse off: one session per message");
        }
    }
}

/// Recipients of two domains routed to one next hop travel in one transaction: groups are
/// (next hop, level, strength), not domains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_domains_through_one_next_hop_share_a_transaction() {
    let (addr, seen, counts) = sink_counting(0).await;
    let r = Relay::start_with(
        &[("partner.example", &addr), ("other.example", &addr)],
        json!({"delivery": {"nameservers": [NO_DNS]}}),
        tempfile::tempdir().unwrap(),
        &[],
    )
    .await;
    r.send(&["bob@partner.example", "carol@other.example"])
        .await;
    let (rcpts, _) = eventually("the delivery", Duration::from_secs(30), || async {
        seen.lock().unwrap().first().cloned()
    })
    .await;
    assert_eq!(rcpts, ["bob@partner.example", "carol@other.example"]);
    assert_eq!(counts.sessions(), 1);
}

/// Never across levels: `may` and `none` mail to the same next hop never share a connection
/// (tracking shows TLS exactly for the `may` message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_never_carries_mail_of_another_level() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = support::Pki::new(pki_dir.path());
    let cert = std::fs::read_to_string(pki.dir.join("control.pem")).unwrap();
    let key = std::fs::read_to_string(pki.dir.join("control.key")).unwrap();
    let (addr, seen, counts) = support::relay::sink_with(0, Some((cert, key))).await;
    let r = Relay::start_with(
        &[("partner.example", &addr), ("plain.example", &addr)],
        json!({"delivery": {"nameservers": [NO_DNS], "connection_idle_s": 30}}),
        tempfile::tempdir().unwrap(),
        &[],
    )
    .await;
    r.rest(
        Method::POST,
        "/v1/policy/outbound/rules",
        json!({"match": "plain.example", "level": "none"}),
    )
    .await;
    r.control.wait_applied().await;
    let mut ids = Vec::new();
    for to in [
        "bob@partner.example",
        "carol@plain.example",
        "dan@partner.example",
        "erin@plain.example",
    ] {
        ids.push((to, r.send(&[to]).await));
        let before = seen.lock().unwrap().len();
        eventually("the delivery", Duration::from_secs(30), || async {
            (seen.lock().unwrap().len() > before).then_some(())
        })
        .await;
    }
    assert_eq!(
        counts.sessions(),
        2,
        "one connection per level, each reused"
    );
    for (to, id) in ids {
        let m = eventually("the tracking record", Duration::from_secs(30), || async {
            let (status, m) = r
                .control
                .call(Method::GET, &format!("/v1/messages/{id}"), None, None)
                .await;
            (status == 200 && m["deliveries"][0]["display"].is_string()).then_some(m)
        })
        .await;
        let display = m["deliveries"][0]["display"].as_str().unwrap().to_string();
        assert_eq!(
            display.ends_with("(via TLS)"),
            to.ends_with("partner.example"),
            "{to}: {display}"
        );
    }
}
