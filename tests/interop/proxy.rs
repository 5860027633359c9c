//! Behind a load balancer (issue 13, point 1): HAProxy sends the PROXY protocol (v2 and v1) to a
//! worker started with `--smtp-proxy-protocol-from 127.0.0.1/32`, and swaks connects to HAProxy
//! from its own address. The IP rules, the Received header and tracking must all see swaks'
//! address, not HAProxy's; a connection that is not from the balancer, or that has no header,
//! gets no greeting.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::clients::{self, Cli};
use super::haproxy::Haproxy;
use super::lab::Lab;
use super::matrix::{Check, Matrix};
use super::peers::{ClientTls, queue_id};

const WORKER: &str = "wp";
/// A client under an IP `encrypt` rule, and one under the default (`may`).
const STRICT: &str = "127.0.0.201";
const PLAIN_OK: &str = "127.0.0.202";

pub async fn run(lab: &Lab, m: &mut Matrix) {
    let worker = lab
        .start_worker(
            WORKER,
            &[("POSTERN_SMTP_PROXY_PROTOCOL_FROM", "127.0.0.1/32")],
        )
        .await;
    let haproxy = Haproxy::start(&lab.dir.path().join("haproxy"), &worker.other).await;
    lab.set(
        reqwest::Method::PUT,
        "/v1/policy/inbound/rules",
        json!({"items": [{"match": STRICT, "level": "encrypt", "comment": "behind HAProxy"}]}),
    )
    .await;
    lab.worker_applied(WORKER).await;
    m.table("Behind HAProxy: PROXY protocol to a worker", &["v2", "v1"]);
    for (column, front) in [("v2", &haproxy.v2), ("v1", &haproxy.v1)] {
        let n = if column == "v2" { 1 } else { 2 };
        let refused = send(front, STRICT, n, ClientTls::Never).await;
        m.record(
            "IP `encrypt` rule for the client behind HAProxy, client in plaintext",
            column,
            judge_refusal(lab, STRICT, n, refused).await,
        );
        let queued = send(front, PLAIN_OK, n, ClientTls::May).await;
        m.record(
            "no rule for the client behind HAProxy, STARTTLS",
            column,
            judge_queued(lab, PLAIN_OK, queued).await,
        );
    }
    let direct = |bind: &'static str, header: &'static [u8]| {
        let addr = worker.other.clone();
        async move { no_greeting(&addr, bind, header).await }
    };
    m.record(
        "a connection straight to the worker, not from the balancer (either version)",
        "v2",
        direct("127.0.0.203", b"").await,
    );
    m.record(
        "a connection from the balancer's address without a header (either version)",
        "v2",
        direct("127.0.0.1", b"EHLO client.lab\r\n").await,
    );
    drop(haproxy);
    drop(worker);
}

/// A session through HAProxy from `bind`; the reply to the dot or the refusal.
async fn send(front: &str, bind: &str, n: u8, tls: ClientTls) -> clients::Transcript {
    let from = format!("s{n}@proxied.snd.test");
    let to = format!("r{n}@proxied.in.test");
    let body = format!("From: <{from}>\r\nSubject: behind HAProxy {n}\r\n\r\nhello\r\n");
    clients::send(
        Cli::Swaks,
        &clients::Session {
            postern: front,
            bind_ip: bind,
            from: &from,
            to: &to,
            tls,
            cert: None,
        },
        &body,
    )
    .await
}

async fn judge_refusal(lab: &Lab, client: &str, n: u8, t: clients::Transcript) -> Check {
    let sender = format!("s{n}@proxied.snd.test");
    let wanted = format!("530 5.7.0 <{sender}>: Sender address rejected: Must use TLS");
    match t.verdict() {
        Some(v) if v.contains(&wanted) => {}
        other => return Check::fail("wrong reply", format!("wanted {wanted:?}, got {other:?}")),
    }
    let found = lab.messages(&format!("sender={sender}")).await;
    let Some(record) = found.first() else {
        return Check::fail("no record in tracking", String::new());
    };
    let full = lab.message(record["id"].as_str().unwrap_or_default()).await;
    if full["source"]["ip"] != client || full["worker"] != WORKER {
        return Check::fail(
            "tracking has the balancer's address",
            full["source"].to_string(),
        );
    }
    Check::Pass(format!("530 for {client}"))
}

async fn judge_queued(lab: &Lab, client: &str, t: clients::Transcript) -> Check {
    let Some(id) = t
        .verdict()
        .filter(|v| v.contains("queued as"))
        .map(queue_id)
    else {
        return Check::fail("not queued", t.output);
    };
    let Some(received) = lab.received_header(&id).await else {
        return Check::fail("not relayed", id);
    };
    if !received.contains(&format!("(unknown [{client}])")) || !received.contains("with ESMTPS") {
        return Check::fail("Received header has the wrong client", received);
    }
    let record = lab.message(&id).await;
    if record["source"]["ip"] != client || record["source"]["tls"] == Value::Null {
        return Check::fail(
            "tracking has the wrong source",
            record["source"].to_string(),
        );
    }
    let sessions = lab.connections(&format!("ip={client}")).await;
    if sessions.is_empty() {
        return Check::fail("no connection recorded for the client", String::new());
    }
    Check::Pass(format!("queued, {client} over TLS"))
}

/// Connects to the worker from `bind`, sends `first`, and expects the connection to close
/// without a 220.
async fn no_greeting(worker: &str, bind: &str, first: &[u8]) -> Check {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{bind}:0").parse().unwrap()).unwrap();
    let Ok(mut stream) = socket.connect(worker.parse().unwrap()).await else {
        return Check::fail("cannot connect", worker.to_string());
    };
    let _ = stream.write_all(first).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut got)).await;
    match read {
        Ok(_) if got.is_empty() => Check::Pass("closed, no greeting".into()),
        Ok(_) => Check::fail("answered", String::from_utf8_lossy(&got).into_owned()),
        Err(_) => Check::fail("left open", "no close within 20 s"),
    }
}
