//! Queue management (issue 5, docs/src/interfaces.md): `GET /v1/queue` with its filters and pages,
//! retry,
//! flush, delete with and without a DSN, and drain, each a command the control plane sends a
//! real worker on its policy stream.

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::eventually;
use support::relay::{NO_DNS, Relay, sink};

/// Deferred on every attempt, retried only when asked (the first retry is an hour away).
fn settings() -> Value {
    json!({"delivery": {"nameservers": [NO_DNS]}, "queue": {"first_retry_s": 3600, "max_retry_s": 3600}})
}

async fn list(r: &Relay, query: &str) -> Value {
    r.rest(Method::GET, &format!("/v1/queue{query}"), Value::Null)
        .await
}

/// Waits until `id`'s recipient has had at least `attempts` attempts.
async fn attempts_reach(r: &Relay, id: &str, attempts: u64) {
    eventually(
        &format!("{id} to reach {attempts} attempts"),
        Duration::from_secs(30),
        || async {
            let items = list(r, "").await["items"].as_array()?.clone();
            let m = items.iter().find(|m| m["id"] == id)?;
            (m["recipients"][0]["attempts"].as_u64()? >= attempts).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_mail_is_listed_retried_flushed_and_deleted() {
    let (addr, seen) = sink(1000).await;
    let r = Relay::start(&addr, settings()).await;
    r.send(&["bob@partner.example"]).await;
    r.send(&["carol@partner.example"]).await;
    let items = eventually("both deferred", Duration::from_secs(30), || async {
        let items = list(&r, "").await["items"].as_array()?.clone();
        (items.len() == 2
            && items
                .iter()
                .all(|m| m["recipients"][0]["status"] == "deferred"))
        .then_some(items)
    })
    .await;
    let (first, second) = (
        items[0]["id"].as_str().unwrap().to_string(),
        items[1]["id"].as_str().unwrap().to_string(),
    );
    assert!(first < second, "in queue id order");
    let m = &items[0];
    assert_eq!(m["worker"], "w");
    assert_eq!(m["sender"], "alice@sender.example");
    let rcpt = &m["recipients"][0];
    assert_eq!(rcpt["address"], "bob@partner.example");
    assert_eq!(rcpt["attempts"], 1);
    assert!(
        rcpt["last_reply"]
            .as_str()
            .unwrap()
            .starts_with("451 4.3.0 try again later"),
        "{rcpt}"
    );
    assert_eq!(rcpt["host"], "127.0.0.1[127.0.0.1]");
    assert!(rcpt["next_attempt"].is_string(), "{rcpt}");

    // Filters and pages.
    let count = |v: Value| v["items"].as_array().unwrap().len();
    assert_eq!(count(list(&r, "?reason=TRY%20AGAIN").await), 2);
    assert_eq!(count(list(&r, "?reason=4.7.5").await), 0);
    assert_eq!(count(list(&r, "?destination=Partner.Example.").await), 2);
    assert_eq!(count(list(&r, "?destination=other.example").await), 0);
    assert_eq!(count(list(&r, "?worker=w").await), 2);
    let page = list(&r, "?limit=1").await;
    assert_eq!(page["items"][0]["id"], first.as_str());
    assert_eq!(page["next_cursor"], first.as_str());
    let page = list(&r, &format!("?limit=1&cursor={first}")).await;
    assert_eq!(page["items"][0]["id"], second.as_str());
    let (status, _) = r
        .control
        .call(
            Method::GET,
            "/v1/queue?destination=not%20a%20domain",
            None,
            None,
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = r
        .control
        .call(Method::GET, "/v1/queue?worker=nobody", None, None)
        .await;
    assert_eq!(status, 404);

    // Retry one now: only it gets a second attempt.
    let done = r
        .rest(
            Method::POST,
            &format!("/v1/queue/{first}/retry"),
            Value::Null,
        )
        .await;
    assert_eq!(done, json!({"id": first, "worker": "w"}));
    attempts_reach(&r, &first, 2).await;
    let listed = list(&r, "").await;
    assert_eq!(listed["items"][1]["recipients"][0]["attempts"], 1);

    // Flush the destination: both are tried again.
    let flushed = r
        .rest(
            Method::POST,
            "/v1/queue/flush",
            json!({"destination": "partner.example"}),
        )
        .await;
    assert_eq!(flushed["flushed"], 2, "{flushed}");
    assert_eq!(flushed["workers"], json!([{"worker": "w", "messages": 2}]));
    attempts_reach(&r, &first, 3).await;
    attempts_reach(&r, &second, 2).await;

    for (method, path) in [
        (Method::POST, "/v1/queue/01NOSUCHMESSAGE/retry".to_string()),
        (Method::DELETE, "/v1/queue/01NOSUCHMESSAGE".into()),
        (Method::DELETE, "/v1/queue/..%2F..%2Fpolicy".into()),
    ] {
        let (status, body) = r.control.call(method, &path, None, None).await;
        assert_eq!(status, 404, "{path}: {body}");
    }

    // A viewer may look but not act.
    let viewer = r
        .rest(Method::POST, "/v1/tokens", json!({"role": "viewer"}))
        .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = r
        .control
        .call(Method::GET, "/v1/queue", Some(&viewer), None)
        .await;
    assert_eq!(status, 200);
    for (method, path) in [
        (Method::POST, format!("/v1/queue/{first}/retry")),
        (Method::POST, "/v1/queue/flush".into()),
        (Method::DELETE, format!("/v1/queue/{first}")),
        (Method::POST, "/v1/workers/w/drain".into()),
    ] {
        let (status, _) = r.control.call(method, &path, Some(&viewer), None).await;
        assert_eq!(status, 403, "{path}");
    }

    // Delete without a DSN: gone, nothing sent.
    let (status, _) = r
        .control
        .call(Method::DELETE, &format!("/v1/queue/{first}"), None, None)
        .await;
    assert_eq!(status, 204);
    // Delete with a DSN: the sender is told.
    let (status, _) = r
        .control
        .call(
            Method::DELETE,
            &format!("/v1/queue/{second}?dsn=true"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 204);
    let dsn = eventually(
        "the DSN of the deleted message",
        Duration::from_secs(30),
        || async {
            let queue = r.queue();
            let ids: Vec<String> = queue
                .iter()
                .map(|(e, _)| e["id"].as_str().unwrap().to_string())
                .collect();
            (!ids.contains(&first) && !ids.contains(&second))
                .then(|| queue.into_iter().find(|(e, _)| e["sender"] == ""))
                .flatten()
        },
    )
    .await;
    assert_eq!(dsn.0["recipients"], json!(["alice@sender.example"]));
    for needle in [
        "Final-Recipient: rfc822; carol@partner.example",
        "Status: 5.0.0",
        "message is administratively expired",
    ] {
        assert!(dsn.1.contains(needle), "{needle} missing:\n{}", dsn.1);
    }
    assert!(
        !dsn.1.contains("bob@partner.example"),
        "only the message deleted with a DSN is reported"
    );
    assert!(seen.lock().unwrap().is_empty(), "the sink never accepted");

    // Each command is in the audit log with the admin who gave it (the viewer's refused ones
    // are not).
    let audit = audited(&r).await;
    for (action, summary) in [
        (
            format!("POST /v1/queue/{first}/retry"),
            format!("retry {first} on worker w"),
        ),
        (
            "POST /v1/queue/flush".to_string(),
            "flush partner.example: 2 message(s) made due".to_string(),
        ),
        (
            format!("DELETE /v1/queue/{first}"),
            format!("delete {first} without a DSN on worker w"),
        ),
        (
            format!("DELETE /v1/queue/{second}"),
            format!("delete {second} with a DSN on worker w"),
        ),
    ] {
        let entry = audit
            .iter()
            .find(|e| e["action"] == action.as_str())
            .unwrap_or_else(|| panic!("{action} not audited: {audit:?}"));
        assert_eq!(entry["summary"], summary.as_str());
        assert_eq!(entry["role"], "admin");
        assert_ne!(entry["actor"], "postern");
    }
    assert_eq!(
        audit
            .iter()
            .filter(|e| e["action"].as_str().unwrap().contains("/v1/queue"))
            .count(),
        4,
        "{audit:?}"
    );
}

/// The audit log's entries, newest first.
async fn audited(r: &Relay) -> Vec<Value> {
    r.rest(Method::GET, "/v1/audit?limit=100", Value::Null)
        .await["items"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_worker_refuses_sessions_and_delivers_its_queue_now() {
    // The first attempt is deferred; the next (made due by the drain) is accepted.
    let (addr, seen) = sink(1).await;
    let r = Relay::start(&addr, settings()).await;
    r.send(&["bob@partner.example"]).await;
    eventually("a deferral", Duration::from_secs(30), || async {
        let items = list(&r, "?reason=try%20again").await["items"]
            .as_array()?
            .len();
        (items == 1).then_some(())
    })
    .await;
    let (status, body) = r
        .control
        .call(Method::POST, "/v1/workers/nobody/drain", None, None)
        .await;
    assert_eq!(status, 404, "{body}");

    let drained = r
        .rest(Method::POST, "/v1/workers/w/drain", Value::Null)
        .await;
    assert_eq!(drained["id"], "w");
    assert_eq!(drained["draining"], true);
    let audit = audited(&r).await;
    assert_eq!(audit[0]["action"], "POST /v1/workers/w/drain", "{audit:?}");
    assert_eq!(audit[0]["summary"], "drain worker w (1 message(s) queued)");
    let workers = r.rest(Method::GET, "/v1/workers", Value::Null).await;
    assert_eq!(workers["items"][0]["draining"], true, "{workers}");

    eventually(
        "the queued message delivered",
        Duration::from_secs(30),
        || async { seen.lock().unwrap().first().cloned() },
    )
    .await;
    eventually("the queue to empty", Duration::from_secs(30), || async {
        r.queue().is_empty().then_some(())
    })
    .await;
    // New sessions are refused, and the worker says it is not ready.
    assert!(
        tokio::net::TcpStream::connect(&r.worker.other)
            .await
            .is_err(),
        "the SMTP listener is closed"
    );
    let ready = reqwest::get(format!("{}/readyz", r.worker.base))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("draining"));
}

/// `postern drain` (a Kubernetes preStop) against a worker whose queue cannot empty: the
/// next hop defers everything, so the timeout passes; it exits 1 and the message stays queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postern_drain_gives_up_at_its_timeout_and_the_spool_keeps_the_rest() {
    let (addr, _seen) = sink(usize::MAX).await;
    let r = Relay::start(&addr, settings()).await;
    let id = r.send(&["bob@partner.example"]).await;
    attempts_reach(&r, &id, 1).await;
    let out = std::process::Command::new(support::BIN)
        .args(["drain", "--http", &r.worker.base, "--timeout", "1"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("drain timed out") && said.contains("1 messages still queued"),
        "{said}"
    );
    assert_eq!(r.queue().len(), 1, "the message stays in the spool");
    let ready = reqwest::get(format!("{}/readyz", r.worker.base))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "a drained worker is not ready");
}
