//! Message tracking end to end (issue 6, docs/src/tracking.md, interfaces.md): real clients send
//! through a real
//! worker to real next hops; the worker's events reach the control plane, which finds each
//! message by the right filters with the right marks. And a control plane stopped during
//! traffic loses no event and doubles none.

mod support;

use std::time::Duration;

use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use reqwest::Method;
use serde_json::{Value, json};
use support::relay::{NO_DNS, Relay, send_raw, sink, sink_with};
use support::{Postern, eventually};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Sends one message with lettre, over STARTTLS when `tls`; the queue id, or the error.
async fn send(r: &Relay, tls: bool, from: &str, to: &str, subject: &str) -> Result<String, String> {
    let port: u16 = r.worker.other.rsplit(':').next().unwrap().parse().unwrap();
    let security = if tls {
        let ca = std::fs::read(r.pki.dir.join("ca.pem")).unwrap();
        Tls::Required(
            TlsParameters::builder("localhost".into())
                .add_root_certificate(Certificate::from_pem(&ca).unwrap())
                .build_rustls()
                .unwrap(),
        )
    } else {
        Tls::None
    };
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .tls(security)
        .build();
    let email = Message::builder()
        .from(from.parse().unwrap())
        .to(to.parse().unwrap())
        .subject(subject)
        .message_id(Some(format!("<{}@client.example>", subject.len())))
        .body(String::from("hello\r\n"))
        .unwrap();
    match mailer.send(email).await {
        Ok(response) => {
            let text = response.message().collect::<Vec<_>>().join(" ");
            Ok(text.rsplit(' ').next().unwrap().to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

async fn messages(r: &Relay, query: &str) -> Vec<Value> {
    r.rest(Method::GET, &format!("/v1/messages{query}"), Value::Null)
        .await["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until the message `id` has `status`; its full record.
async fn settled(r: &Relay, id: &str, status: &str) -> Value {
    eventually(
        &format!("{id} to be {status}"),
        Duration::from_secs(30),
        || async {
            let (code, m) = r
                .control
                .call(Method::GET, &format!("/v1/messages/{id}"), None, None)
                .await;
            (code == 200 && m["status"] == status).then_some(m)
        },
    )
    .await
}

/// The kinds of a message's timeline entries, in order.
fn timeline_kinds(m: &Value) -> Vec<&str> {
    m["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect()
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_message_is_found_by_the_right_filters_with_the_right_marks() {
    let (plain, _) = sink(0).await;
    let cert = postern_tls::pki::Issued::self_signed(&["mx.secure.example"]).unwrap();
    let (secure, secure_seen, _) = sink_with(0, Some((cert.cert_pem, cert.key_pem))).await;
    let (slow, _) = sink(1000).await;
    let r = Relay::start(
        &plain,
        json!({"delivery": {"nameservers": [NO_DNS]}, "queue": {"first_retry_s": 3600}}),
    )
    .await;
    let hop = |addr: &str| format!("[127.0.0.1]:{}", addr.rsplit(':').next().unwrap());
    r.rest(
        Method::PUT,
        "/v1/relay",
        json!({"domains": [
            {"domain": "partner.example", "next_hop": hop(&plain)},
            {"domain": "secure.example", "next_hop": hop(&secure)},
            {"domain": "slow.example", "next_hop": hop(&slow)},
        ], "networks": ["127.0.0.0/8"]}),
    )
    .await;
    r.rest(
        Method::POST,
        "/v1/policy/outbound/rules",
        json!({"match": "secure.example", "level": "encrypt"}),
    )
    .await;
    r.rest(
        Method::POST,
        "/v1/policy/inbound/rules",
        json!({"match": "strict.example", "level": "encrypt"}),
    )
    .await;
    r.control.wait_applied().await;

    let both_tls = send(
        &r,
        true,
        "ann@sender.example",
        "bob@secure.example",
        "Grüße aus Köln",
    )
    .await
    .unwrap();
    let plaintext = send(
        &r,
        false,
        "cid@sender.example",
        "dan@partner.example",
        "plain one",
    )
    .await
    .unwrap();
    let deferred = send(
        &r,
        false,
        "eve@sender.example",
        "fay@slow.example",
        "slow one",
    )
    .await
    .unwrap();
    let bounced = send(
        &r,
        true,
        "gus@sender.example",
        "bad@partner.example",
        "bounced one",
    )
    .await
    .unwrap();
    let refused = send(
        &r,
        false,
        "hal@strict.example",
        "ivy@partner.example",
        "refused one",
    )
    .await
    .unwrap_err();
    assert!(refused.contains("Must use TLS"), "{refused}");

    // TLS on both legs.
    let m = settled(&r, &both_tls, "delivered").await;
    assert_eq!(m["subject"], "Grüße aus Köln", "decoded per RFC 2047");
    assert_eq!(m["sender"], "ann@sender.example");
    assert_eq!(
        m["marks"],
        json!({"tls": true, "plaintext": false, "violation": false, "tls_fallback": false})
    );
    let source = &m["source"];
    assert_eq!(source["ip"], "127.0.0.1");
    assert_eq!(source["tls"]["version"], "TLSv1.3");
    assert_eq!(source["tls"]["client_certificate"], "none");
    assert!(
        source["display"]
            .as_str()
            .unwrap()
            .ends_with("[127.0.0.1] (via TLS)"),
        "{source}"
    );
    let d = &m["deliveries"][0];
    assert_eq!(d["recipient"], "bob@secure.example");
    assert_eq!(d["status"], "delivered");
    assert_eq!(d["tls"]["server_certificate"], "unverified", "self-signed");
    assert!(d["tls"]["key_exchange"].is_string());
    assert_eq!(d["display"], "127.0.0.1 [127.0.0.1] (via TLS)");
    assert_eq!(d["attempts"].as_array().unwrap().len(), 1);
    let kinds = timeline_kinds(&m);
    assert_eq!(kinds, ["received", "attempt", "delivered"]);
    assert_eq!(secure_seen.lock().unwrap().len(), 1);

    let m = settled(&r, &plaintext, "delivered").await;
    assert_eq!(m["marks"]["plaintext"], true);
    assert_eq!(m["marks"]["tls"], false);
    assert_eq!(m["source"]["tls"], Value::Null);
    assert!(!m["source"]["display"].as_str().unwrap().contains("via TLS"));

    let m = settled(&r, &deferred, "deferred").await;
    assert!(
        m["deliveries"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("451 4.3.0"),
        "{m}"
    );

    let m = settled(&r, &bounced, "bounced").await;
    assert!(m["dsn"].is_string(), "{m}");
    assert!(
        m["deliveries"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("550 5.1.1")
    );

    // The refused transaction has a tracking id of its own and is found as rejected.
    let rejected = eventually("the rejection", Duration::from_secs(30), || async {
        messages(&r, "?status=rejected").await.first().cloned()
    })
    .await;
    assert_eq!(rejected["sender"], "hal@strict.example");
    assert_eq!(rejected["marks"]["violation"], true);
    let id = rejected["id"].as_str().unwrap();
    let detail = r
        .rest(Method::GET, &format!("/v1/messages/{id}"), Value::Null)
        .await;
    assert_eq!(
        detail["rejections"],
        json!(["530 5.7.0 <hal@strict.example>: Sender address rejected: Must use TLS"])
    );

    // Every filter finds what it should, newest first.
    assert_eq!(
        ids(&messages(&r, "?tls=true&plaintext=false").await),
        [both_tls.as_str()]
    );
    assert_eq!(
        ids(&messages(&r, "?sender=ANN@sender.example").await),
        [both_tls.as_str()]
    );
    assert_eq!(
        ids(&messages(&r, "?recipient=fay@slow.example").await),
        [deferred.as_str()]
    );
    assert_eq!(
        ids(&messages(&r, "?subject=gr%C3%BC%C3%9FE").await),
        [both_tls.as_str()]
    );
    assert_eq!(
        ids(&messages(&r, &format!("?queue_id={plaintext}")).await),
        [plaintext.as_str()]
    );
    assert_eq!(
        ids(&messages(&r, "?message_id=%3C9@client.example%3E").await),
        [plaintext.as_str()]
    );
    assert_eq!(
        ids(&messages(&r, "?status=deferred").await),
        [deferred.as_str()]
    );
    assert_eq!(
        ids(&messages(&r, "?violation=true").await),
        [id.to_string()]
    );
    // The 530's session was a plaintext leg (docs/src/tracking.md).
    assert_eq!(
        ids(&messages(&r, "?plaintext=true&violation=true").await),
        [id.to_string()]
    );
    assert!(messages(&r, "?tls=true&violation=true").await.is_empty());
    assert_eq!(
        ids(&messages(&r, "?worker=w&status=bounced").await)[0],
        bounced
    );
    let all = messages(
        &r,
        "?sender=ann@sender.example&since=2020-01-01T00:00:00%2B02:00",
    )
    .await;
    assert_eq!(all.len(), 1);
    assert!(messages(&r, "?since=2999-01-01T00:00:00Z").await.is_empty());
    // Pages: newest first, one at a time, and every message once.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = r
            .rest(
                Method::GET,
                &format!("/v1/messages?limit=1{cursor}"),
                Value::Null,
            )
            .await;
        seen.extend(ids(page["items"].as_array().unwrap()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "no message twice: {seen:?}");
    for id in [&both_tls, &plaintext, &deferred, &bounced] {
        assert!(seen.contains(id), "{id} missing from the pages");
    }
    for bad in ["?since=yesterday", "?cursor=zz", "?limit=0", "?status=lost"] {
        let (code, _) = r
            .control
            .call(Method::GET, &format!("/v1/messages{bad}"), None, None)
            .await;
        assert_eq!(code, 400, "{bad}");
    }
    let (code, _) = r
        .control
        .call(Method::GET, "/v1/messages/NOSUCH", None, None)
        .await;
    assert_eq!(code, 404);

    // A session whose handshake fails is a connection with its failure, found by tls_failed.
    let mut io = BufReader::new(
        tokio::net::TcpStream::connect(&r.worker.other)
            .await
            .unwrap(),
    );
    let mut line = String::new();
    io.read_line(&mut line).await.unwrap();
    io.get_mut()
        .write_all(b"EHLO broken.example\r\n")
        .await
        .unwrap();
    loop {
        line.clear();
        io.read_line(&mut line).await.unwrap();
        if line.as_bytes().get(3) == Some(&b' ') {
            break;
        }
    }
    io.get_mut().write_all(b"STARTTLS\r\n").await.unwrap();
    line.clear();
    io.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("220"), "{line}");
    io.get_mut()
        .write_all(b"this is not a TLS ClientHello\r\n")
        .await
        .unwrap();
    drop(io);
    let failed = eventually("the failed handshake", Duration::from_secs(30), || async {
        let list = r
            .rest(
                Method::GET,
                "/v1/connections?ip=127.0.0.1&tls_failed=true",
                Value::Null,
            )
            .await;
        list["items"].as_array()?.first().cloned()
    })
    .await;
    assert_eq!(failed["helo"], "broken.example");
    assert!(failed["tls_failure"].is_string());
    let ok = r
        .rest(Method::GET, "/v1/connections?tls_failed=false", Value::Null)
        .await;
    assert!(ok["items"].as_array().unwrap().len() >= 5, "{ok}");
}

/// The control plane is killed twice while mail flows and started again: every event
/// arrives, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_exactly_once_across_a_control_plane_restart() {
    let (plain, seen) = sink(0).await;
    let mut r = Relay::start(&plain, json!({"delivery": {"nameservers": [NO_DNS]}})).await;
    let grpc = r.control.other.clone();
    let data = r.dir.path().join("control");
    let smtp = r.worker.other.clone();
    let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sending = {
        let sent = sent.clone();
        tokio::spawn(async move {
            for i in 0..60 {
                let body = format!("Subject: message {i}\r\n\r\nhello\r\n");
                let id =
                    send_raw(&smtp, "ann@sender.example", &["bob@partner.example"], &body).await;
                sent.lock().unwrap().push(id);
            }
        })
    };
    for kill_at in [15, 35] {
        eventually("messages to flow", Duration::from_secs(30), || async {
            (sent.lock().unwrap().len() >= kill_at).then_some(())
        })
        .await;
        // Killed, not stopped, in the middle of uploads: what it had not acknowledged comes
        // again, and must not be stored twice.
        r.control.kill_now();
        tokio::time::sleep(Duration::from_millis(300)).await;
        r.control = Postern::control_on(&data, &r.pki, &grpc);
    }
    sending.await.unwrap();
    let sent = sent.lock().unwrap().clone();
    eventually(
        "every message delivered",
        Duration::from_secs(60),
        || async { (seen.lock().unwrap().len() >= sent.len()).then_some(()) },
    )
    .await;
    // The worker crashes before it recorded the last acknowledgements (its `acked` file is
    // not synced): after restart it sends everything again, and the control plane must store
    // nothing twice.
    let acked_file = r.worker.data_dir.join("outbox/acked");
    let acked = || {
        std::fs::read_to_string(&acked_file)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = eventually(
        "the worker's events acknowledged",
        Duration::from_secs(30),
        || async {
            // Quiet: the last acknowledgement has not moved for a moment.
            let a = acked();
            tokio::time::sleep(Duration::from_millis(500)).await;
            (a > 0 && a == acked()).then_some(a)
        },
    )
    .await;
    r.worker.kill_now();
    std::fs::write(&acked_file, "0").unwrap();
    let spool = r.worker.data_dir.clone();
    r.worker = Postern::worker(&spool, &r.pki, &grpc, "w", "w");
    eventually(
        "the replay acknowledged",
        Duration::from_secs(30),
        || async { (acked() >= before).then_some(()) },
    )
    .await;
    for id in &sent {
        let m = settled(&r, id, "delivered").await;
        let kinds = timeline_kinds(&m);
        assert_eq!(kinds, ["received", "attempt", "delivered"], "{id}: {m}");
    }
    let listed = messages(&r, "?limit=500").await;
    assert_eq!(listed.len(), sent.len());
}

/// A next hop's 450 of 200 lines of 2,000 bytes of 0xFF (Python, not our code): the reply is
/// kept to its cap everywhere (tracking, the queue listing, the worker's log), and every
/// message after it is tracked, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_megabyte_reply_is_bounded_and_loses_no_event() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/tools/huge_reply_hop.py"
    );
    let mut hop = std::process::Command::new("python3")
        .arg(script)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (CI installs it)");
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(hop.stdout.take().unwrap()),
        &mut port,
    )
    .unwrap();
    let next_hop = format!("127.0.0.1:{}", port.trim());
    let r = Relay::start(&next_hop, json!({"delivery": {"nameservers": [NO_DNS]}})).await;
    let first = send(
        &r,
        false,
        "ann@sender.example",
        "bob@partner.example",
        "huge reply",
    )
    .await
    .unwrap();
    let deferred = eventually(
        "the huge reply recorded",
        Duration::from_secs(30),
        || async {
            let (code, m) = r
                .control
                .call(Method::GET, &format!("/v1/messages/{first}"), None, None)
                .await;
            let reply = m["deliveries"][0]["attempts"][0]["reply"]
                .as_str()?
                .to_string();
            (code == 200).then_some((m, reply))
        },
    )
    .await;
    let (m, reply) = deferred;
    assert!(reply.starts_with("450"), "{reply:.100}");
    assert!(
        reply.len() <= 2_100,
        "kept to the cap: {} bytes",
        reply.len()
    );
    assert!(reply.contains('\u{fffd}'), "{reply:.100}");
    let text = serde_json::to_string(&m).unwrap();
    assert!(
        text.len() < 64 * 1024,
        "the whole record is small: {}",
        text.len()
    );
    let listed = r
        .last_reply("bob@partner.example")
        .await
        .unwrap_or_default();
    assert!(listed.len() <= 2_100, "the queue listing: {}", listed.len());

    let mut ids = Vec::new();
    for i in 0..10 {
        let subject = format!("after {i}");
        ids.push(
            send(
                &r,
                false,
                "ann@sender.example",
                "bob@partner.example",
                &subject,
            )
            .await
            .unwrap(),
        );
    }
    for id in &ids {
        let m = settled(&r, id, "delivered").await;
        assert_eq!(
            timeline_kinds(&m)
                .iter()
                .filter(|k| **k == "received")
                .count(),
            1,
            "{m:#}"
        );
    }
    assert_eq!(
        r.worker
            .logged("tracking events in the outbox cannot be read"),
        0
    );
    let longest = r
        .worker
        .log
        .lock()
        .unwrap()
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(0);
    assert!(longest < 16 * 1024, "a log line of {longest} bytes");
    let _ = hop.kill();
    let _ = hop.wait();
}

/// Connections refused for the session limits are one record per source and minute, whatever
/// their number, with the count of refusals it stands for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_counted_not_recorded_one_by_one() {
    let (plain, _) = sink(0).await;
    let settings =
        json!({"smtp": {"max_sessions_per_ip": 1}, "delivery": {"nameservers": [NO_DNS]}});
    let r = Relay::start(&plain, settings).await;
    let smtp = r.worker.other.clone();
    // One session holds the address's only place.
    let mut held = BufReader::new(tokio::net::TcpStream::connect(&smtp).await.unwrap());
    let mut greeting = String::new();
    held.read_line(&mut greeting).await.unwrap();
    assert!(greeting.starts_with("220"), "{greeting}");
    for _ in 0..30 {
        let mut refused = BufReader::new(tokio::net::TcpStream::connect(&smtp).await.unwrap());
        let mut line = String::new();
        refused.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("421"), "{line}");
    }
    let records = eventually("the refusals counted", Duration::from_secs(30), || async {
        let items = r
            .rest(Method::GET, "/v1/connections?ip=127.0.0.1", Value::Null)
            .await["items"]
            .as_array()
            .unwrap()
            .clone();
        let refused: Vec<Value> = items
            .into_iter()
            .filter(|c| !c["refused"].is_null())
            .collect();
        let total: u64 = refused
            .iter()
            .map(|c| c["refused_count"].as_u64().unwrap())
            .sum();
        (total == 30).then_some(refused)
    })
    .await;
    assert!(records.len() <= 2, "one record a minute: {records:#?}");
    held.get_mut().write_all(b"QUIT\r\n").await.unwrap();
}

/// Upgrading from sled (docs/src/tracking.md#upgrading-from-sled): a tracking store as the
/// previous release wrote it is copied by `postern tracking import-sled` into the data
/// directory's SQLite database, once however often it runs, and `postern dev` serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_store_of_the_previous_release_is_imported_and_served() {
    let data = tempfile::tempdir().unwrap();
    let store = data.path().join("tracking");
    {
        let db = sled::open(&store).unwrap();
        // A day ago: within retention.
        let at = postern_time::now_ms() - 86_400_000;
        let record = r#"{"first_ms":AT,"received":true,"applied":{"mx1 E":2},
            "epochs":["mx1 E"],"timeline_total":2,"message":{"id":"01OLDSLED","worker":"mx1",
            "received_ms":AT,"sender":"ann@sender.example",
            "recipients":["bob@partner.example"],"subject":"From the sled days",
            "message_id":"1@sender.example","size":120,"status":"delivered",
            "marks":{"tls":true,"plaintext":false,"violation":false,"tls_fallback":false},
            "policy_version":3,"source":{"ip":"192.0.2.7","helo":"client.example","tls":null},
            "rejections":[],"violations":[],"deliveries":[{"recipient":"bob@partner.example",
            "status":"delivered","host":"mx.partner.example","ip":"198.51.100.2","tls":null,
            "reason":"250 ok","attempts":[]}],"dsn":null,"timeline":[],"timeline_dropped":0}}"#
            .replace("AT", &at.to_string());
        db.open_tree("messages")
            .unwrap()
            .insert("01OLDSLED", record.as_bytes())
            .unwrap();
        let timeline = db.open_tree("messages/timeline").unwrap();
        for (n, kind) in ["received", "delivered"].iter().enumerate() {
            let mut key = b"01OLDSLED\0".to_vec();
            key.extend_from_slice(&(n as u64).to_be_bytes());
            let entry = format!(
                r#"{{"at_ms":{},"kind":"{kind}","worker":"mx1","policy_version":3,"detail":"{kind}"}}"#,
                at + n as u64
            );
            timeline.insert(key, entry.as_bytes()).unwrap();
        }
        db.open_tree("cursors")
            .unwrap()
            .insert(b"mx1\0E", &2u64.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let import = || {
        let out = std::process::Command::new(support::BIN)
            .args(["tracking", "import-sled"])
            .arg(&store)
            .arg("--data-dir")
            .arg(data.path())
            .env_remove("POSTERN_DATABASE_URL")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    assert!(import().contains("1 messages (1 new)"));
    assert!(
        import().contains("1 messages (0 new)"),
        "the second import adds nothing"
    );
    let not_sled = std::process::Command::new(support::BIN)
        .args(["tracking", "import-sled", "/nonexistent", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!not_sled.status.success());
    assert!(String::from_utf8_lossy(&not_sled.stderr).contains("not a sled tracking store"));

    let postern = Postern::dev(data.path(), "localhost");
    let (code, m) = postern
        .call(Method::GET, "/v1/messages/01OLDSLED", None, None)
        .await;
    assert_eq!(code, 200, "{m}");
    assert_eq!(m["sender"], "ann@sender.example");
    assert_eq!(m["status"], "delivered");
    assert_eq!(timeline_kinds(&m), ["received", "delivered"]);
    let (_, found) = postern
        .call(Method::GET, "/v1/messages?subject=sled%20days", None, None)
        .await;
    assert_eq!(ids(found["items"].as_array().unwrap()), ["01OLDSLED"]);
}
