//! The worker's inbound SMTP end to end (issue 4): real control plane and worker processes, real
//! TLS, real clients (lettre, openssl s_client, a raw socket for what clients will not do).

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Pki, Postern};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

struct Gateway {
    control: Postern,
    worker: Postern,
    pki: Pki,
    _dir: tempfile::TempDir,
}

impl Gateway {
    async fn start() -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let (pki, control, worker) = support::control_and_worker(dir.path(), "127.0.0.1:0");
        let g = Gateway {
            control,
            worker,
            pki,
            _dir: dir,
        };
        g.no_dns().await;
        g
    }

    async fn rest(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        self.control.rest(method, path, body).await
    }

    /// Points delivery at a nameserver that does not exist (tests never use the system's
    /// resolver): queued mail simply stays deferred.
    async fn no_dns(&self) {
        self.set(
            reqwest::Method::PUT,
            "/v1/settings",
            json!({"delivery": {"nameservers": ["127.0.0.1:9"]}}),
        )
        .await;
    }

    /// Lets loopback clients relay anywhere.
    /// Relays `domain` (as `/v1/relay` spells it) by MX, and no network.
    async fn relay_by_mx(&self, domain: &str) {
        self.set(
            reqwest::Method::PUT,
            "/v1/relay",
            json!({"domains": [{"domain": domain, "next_hop": "mx"}], "networks": []}),
        )
        .await;
    }

    async fn relay_loopback(&self) {
        self.set(
            reqwest::Method::PUT,
            "/v1/relay",
            json!({"domains": [], "networks": ["127.0.0.0/8"]}),
        )
        .await;
    }

    /// Writes a policy change and waits until the worker enforces it.
    async fn set(&self, method: reqwest::Method, path: &str, body: Value) {
        self.rest(method, path, body).await;
        self.wait_applied().await;
    }

    async fn wait_applied(&self) {
        self.control.wait_applied().await;
    }

    fn queued(&self) -> Vec<String> {
        support::queued_messages(&self.worker.data_dir)
    }
}

/// A raw SMTP client for what real clients will not do (pipelining into STARTTLS, plaintext
/// after a 530).
struct Raw<S> {
    io: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            tokio::time::timeout(Duration::from_secs(10), self.io.read_line(&mut line))
                .await
                .unwrap()
                .unwrap();
            assert!(!line.is_empty(), "connection closed; so far: {all:?}");
            let last = line.as_bytes().get(3) == Some(&b' ');
            all.push_str(line.trim_end());
            if last {
                return all;
            }
            all.push('\n');
        }
    }

    async fn send(&mut self, bytes: &str) {
        self.io.get_mut().write_all(bytes.as_bytes()).await.unwrap();
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(&format!("{line}\r\n")).await;
        self.reply().await
    }
}

async fn raw(addr: &str) -> Raw<tokio::net::TcpStream> {
    let mut r = Raw {
        io: BufReader::new(tokio::net::TcpStream::connect(addr).await.unwrap()),
    };
    assert_eq!(r.reply().await, "220 mx.test ESMTP Postern");
    r
}

/// The test CA as the only root.
fn roots(pki: &Pki) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for c in postern_tls::files::ders(&std::fs::read_to_string(pki.dir.join("ca.pem")).unwrap()) {
        roots.add(c).unwrap();
    }
    roots
}

fn tls_connector(pki: &Pki) -> tokio_rustls::TlsConnector {
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots(pki))
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// HELO names are checked as Postfix's `reject_invalid_helo_hostname` does (the name echoed with
/// its control characters escaped), and a HELO (not EHLO) session is recorded `with SMTP`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helo_names_are_checked_and_a_helo_session_is_recorded_as_smtp() {
    let g = Gateway::start().await;
    g.relay_by_mx("partner.example").await;
    let mut r = raw(&g.worker.other).await;
    assert_eq!(
        r.cmd("EHLO bad\tname\u{1}").await,
        "501 5.5.2 <bad\\tname\\u{1}>: Helo command rejected: Invalid name"
    );
    assert_eq!(
        r.cmd("HELO [192.0.2.1").await,
        "501 5.5.2 <[192.0.2.1>: Helo command rejected: Invalid name"
    );
    assert_eq!(
        r.cmd("MAIL FROM:<alice@sender.example>").await,
        "503 5.5.1 Error: send HELO/EHLO first"
    );
    assert_eq!(r.cmd("HELO client.example").await, "250 mx.test");
    assert!(
        r.cmd("MAIL FROM:<alice@sender.example>")
            .await
            .starts_with("250")
    );
    assert!(
        r.cmd("RCPT TO:<bob@partner.example>")
            .await
            .starts_with("250")
    );
    assert!(r.cmd("DATA").await.starts_with("354"));
    let queued = r.cmd("Subject: helo\r\n\r\nbody\r\n.").await;
    let id = queued
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .unwrap()
        .to_string();
    let messages = g.queued();
    let (_, message) = messages[0].split_once('\n').unwrap();
    assert!(
        message.starts_with(&format!(
            "Received: from client.example (unknown [127.0.0.1])\r\n\tby mx.test (Postern) with SMTP id {id}\r\n"
        )),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lettre_delivers_over_starttls_and_the_message_is_spooled_with_its_received_header() {
    let g = Gateway::start().await;
    g.relay_by_mx("partner.example").await;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let ca = std::fs::read(g.pki.dir.join("ca.pem")).unwrap();
    let tls = TlsParameters::builder("localhost".into())
        .add_root_certificate(Certificate::from_pem(&ca).unwrap())
        .build_rustls()
        .unwrap();
    let port: u16 = g.worker.other.rsplit(':').next().unwrap().parse().unwrap();
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .tls(Tls::Required(tls))
        .build();
    let email = Message::builder()
        .from("Alice <alice@sender.example>".parse().unwrap())
        .to("bob@partner.example".parse().unwrap())
        .subject("over TLS")
        .body(String::from("hello\r\n.leading dot\r\n"))
        .unwrap();
    let response = mailer.send(email).await.unwrap();
    let text = response.message().collect::<Vec<_>>().join(" ");
    assert!(text.starts_with("2.0.0 Ok: queued as "), "{text}");
    let id = text.rsplit(' ').next().unwrap().to_string();
    let queued = g.queued();
    assert_eq!(queued.len(), 1);
    let (envelope, message) = queued[0].split_once('\n').unwrap();
    let envelope: Value = serde_json::from_str(envelope).unwrap();
    assert_eq!(envelope["id"], id.as_str());
    assert_eq!(envelope["recipients"], json!(["bob@partner.example"]));
    assert!(message.starts_with("Received: from "), "{message}");
    assert!(
        message.contains(&format!("(Postern) with ESMTPS id {id}")),
        "{message}"
    );
    assert!(
        message.contains("tls TLS_AES_256_GCM_SHA384 (TLSv1.3, client certificate: none);"),
        "{message}"
    );
    assert!(
        message.contains("\r\n.leading dot\r\n"),
        "dot-stuffing must be undone: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_control_and_the_must_use_tls_rule() {
    let g = Gateway::start().await;
    g.relay_by_mx(".partner.example").await;
    let mut c = raw(&g.worker.other).await;
    c.cmd("EHLO client.example").await;
    assert_eq!(c.cmd("MAIL FROM:<a@sender.example>").await, "250 2.1.0 Ok");
    assert_eq!(
        c.cmd("RCPT TO:<x@elsewhere.example>").await,
        "554 5.7.1 <x@elsewhere.example>: Relay access denied"
    );
    assert_eq!(
        c.cmd("RCPT TO:<x@mx.partner.example>").await,
        "250 2.1.5 Ok"
    );
    assert_eq!(c.cmd("RCPT TO:<Postmaster>").await, "250 2.1.5 Ok");
    assert_eq!(c.cmd("QUIT").await, "221 2.0.0 Bye");

    // The sender's domain requires TLS: plaintext MAIL FROM gets the 530 and the session stays.
    g.set(
        reqwest::Method::POST,
        "/v1/policy/inbound/rules",
        json!({"match": "bank.example", "level": "encrypt"}),
    )
    .await;
    let mut c = raw(&g.worker.other).await;
    c.cmd("EHLO client.example").await;
    assert_eq!(
        c.cmd("MAIL FROM:<a@bank.example>").await,
        "530 5.7.0 <a@bank.example>: Sender address rejected: Must use TLS"
    );
    assert_eq!(c.cmd("NOOP").await, "250 2.0.0 Ok");
    assert_eq!(c.cmd("MAIL FROM:<a@other.example>").await, "250 2.1.0 Ok");

    // A client IP at `none` is not offered STARTTLS, and STARTTLS gets 502.
    g.set(
        reqwest::Method::POST,
        "/v1/policy/inbound/rules",
        json!({"match": "127.0.0.0/8", "level": "none"}),
    )
    .await;
    let mut c = raw(&g.worker.other).await;
    let ehlo = c.cmd("EHLO client.example").await;
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert_eq!(
        c.cmd("STARTTLS").await,
        "502 5.5.1 Error: command not implemented"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_pipelined_after_starttls_never_runs_inside_tls() {
    let g = Gateway::start().await;
    g.relay_loopback().await;
    let mut c = raw(&g.worker.other).await;
    c.cmd("EHLO client.example").await;
    let injected = "MAIL FROM:<evil@x.example>\r\nRCPT TO:<victim@y.example>\r\n";
    c.send(&format!("STARTTLS\r\n{injected}")).await;
    assert_eq!(c.reply().await, "220 2.0.0 Ready to start TLS");
    let tcp = c.io.into_inner();
    let tls = tls_connector(&g.pki)
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let mut t = Raw {
        io: BufReader::new(tls),
    };
    // Everything was forgotten: no HELO, no MAIL; and STARTTLS is not offered again.
    assert_eq!(
        t.cmd("RCPT TO:<victim@y.example>").await,
        "503 5.5.1 Error: need MAIL command"
    );
    assert_eq!(
        t.cmd("MAIL FROM:<a@b.example>").await,
        "503 5.5.1 Error: send HELO/EHLO first"
    );
    let ehlo = t.cmd("EHLO client.example").await;
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert_eq!(
        t.cmd("STARTTLS").await,
        "554 5.5.1 Error: TLS already active"
    );
    // The session is tracked with what was discarded, and found by it.
    assert!(t.cmd("QUIT").await.starts_with("221"));
    let found = support::eventually(
        "the session among connections with STARTTLS leftovers",
        Duration::from_secs(30),
        || async {
            let list = g
                .control
                .rest(
                    reqwest::Method::GET,
                    "/v1/connections?starttls_leftovers=true",
                    Value::Null,
                )
                .await;
            list["items"].as_array().filter(|i| !i.is_empty()).cloned()
        },
    )
    .await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["starttls_leftovers"], injected.len());
    assert_eq!(found[0]["helo"], "client.example");
    let clean = g
        .control
        .rest(
            reqwest::Method::GET,
            "/v1/connections?starttls_leftovers=false",
            Value::Null,
        )
        .await;
    assert!(
        clean["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["starttls_leftovers"] == 0),
        "{clean}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_client_and_cipher_strength() {
    let g = Gateway::start().await;
    g.relay_loopback().await;
    g.set(
        reqwest::Method::POST,
        "/v1/policy/inbound/rules",
        json!({"match": "bank.example", "level": "encrypt", "cipher_strength": "high"}),
    )
    .await;
    let run = |tls_args: &'static [&'static str], sender: &'static str| {
        let addr = g.worker.other.clone();
        async move {
            let mut child = tokio::process::Command::new("openssl")
                .args(["s_client", "-connect", &addr, "-starttls", "smtp", "-quiet"])
                .args(tls_args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("openssl is installed (.ci/run installs it)");
            let mut stdin = child.stdin.take().unwrap();
            let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
            // s_client has already done EHLO and STARTTLS; it prints nothing of that with -quiet.
            stdin
                .write_all(format!("EHLO c\r\nMAIL FROM:<{sender}>\r\n").as_bytes())
                .await
                .unwrap();
            let mut lines = Vec::new();
            while let Ok(Ok(Some(line))) =
                tokio::time::timeout(Duration::from_secs(10), out.next_line()).await
            {
                let last_of_reply = line.as_bytes().get(3) == Some(&b' ');
                lines.push(line);
                // The EHLO reply, then the MAIL FROM reply.
                if last_of_reply
                    && lines
                        .iter()
                        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
                        .count()
                        == 2
                {
                    break;
                }
            }
            let _ = child.kill().await;
            lines
        }
    };
    let too_low = "421 4.7.0 <a@bank.example>: Sender address rejected: Cipher strength too low";
    let weak13 = run(
        &["-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"],
        "a@bank.example",
    )
    .await;
    assert_eq!(weak13.last().unwrap(), too_low, "{weak13:?}");
    let strong13 = run(
        &["-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384"],
        "a@bank.example",
    )
    .await;
    assert_eq!(strong13.last().unwrap(), "250 2.1.0 Ok", "{strong13:?}");
    let weak12 = run(
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
        "a@bank.example",
    )
    .await;
    assert_eq!(weak12.last().unwrap(), too_low, "{weak12:?}");
    let strong12 = run(
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"],
        "a@bank.example",
    )
    .await;
    assert_eq!(strong12.last().unwrap(), "250 2.1.0 Ok", "{strong12:?}");
}

/// Opens a session, STARTTLS, optionally with a client certificate (`<name>.pem`/`.key` in
/// `pki`), and says EHLO inside TLS.
async fn tls_session(
    g: &Gateway,
    client_cert: Option<(&Pki, &str)>,
) -> Raw<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut c = raw(&g.worker.other).await;
    c.cmd("EHLO client.example").await;
    assert_eq!(c.cmd("STARTTLS").await, "220 2.0.0 Ready to start TLS");
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots(&g.pki));
    let config = match client_cert {
        Some((pki, name)) => {
            use rustls::pki_types::pem::PemObject;
            let certs = postern_tls::files::ders(
                &std::fs::read_to_string(pki.dir.join(format!("{name}.pem"))).unwrap(),
            );
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(
                pki.dir.join(format!("{name}.key")),
            )
            .unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), c.io.into_inner())
        .await
        .unwrap();
    let mut t = Raw {
        io: BufReader::new(tls),
    };
    t.cmd("EHLO client.example").await;
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_rules_check_client_certificates_after_the_handshake() {
    let g = Gateway::start().await;
    let other = Pki::new(&g.pki.dir.join("other"));
    g.pki.client("alice", &["alice.example"]);
    other.client("mallory", &["mallory.example"]);
    let ca = std::fs::read_to_string(g.pki.dir.join("ca.pem")).unwrap();
    g.set(reqwest::Method::PUT, "/v1/trust", json!({"ca_pems": [ca]}))
        .await;
    g.relay_loopback().await;
    g.set(
        reqwest::Method::POST,
        "/v1/policy/inbound/rules",
        json!({"match": "bank.example", "level": "verify"}),
    )
    .await;
    g.set(
        reqwest::Method::POST,
        "/v1/policy/inbound/rules",
        json!({"match": "legacy.example", "level": "none"}),
    )
    .await;

    let mut t = tls_session(&g, Some((&g.pki, "alice"))).await;
    assert_eq!(t.cmd("MAIL FROM:<a@bank.example>").await, "250 2.1.0 Ok");

    // A certificate the trust list does not vouch for, or none at all: the handshake succeeds
    // (a certificate is only requested), the sender is refused at MAIL FROM.
    let mut t = tls_session(&g, Some((&other, "mallory"))).await;
    assert_eq!(
        t.cmd("MAIL FROM:<a@bank.example>").await,
        "421 4.7.1 <a@bank.example>: Sender address rejected: Unverified client certificate"
    );
    let mut t = tls_session(&g, None).await;
    assert_eq!(
        t.cmd("MAIL FROM:<a@bank.example>").await,
        "421 4.7.1 <a@bank.example>: Sender address rejected: Unverified client certificate"
    );
    // Other senders are unaffected by the certificate.
    let mut t = tls_session(&g, Some((&other, "mallory"))).await;
    assert_eq!(
        t.cmd("MAIL FROM:<a@elsewhere.example>").await,
        "250 2.1.0 Ok"
    );
    // The compatibility rule: a sender-domain `none` on an encrypted session whose connect-time
    // level is `may`.
    let mut t = tls_session(&g, None).await;
    assert_eq!(
        t.cmd("MAIL FROM:<x@legacy.example>").await,
        "421 4.7.0 <x@legacy.example>: Sender address rejected: Must not use TLS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_keeps_its_policy_version_and_new_sessions_get_the_new_one() {
    let g = Gateway::start().await;
    g.relay_loopback().await;
    let mut old = raw(&g.worker.other).await;
    old.cmd("EHLO client.example").await;
    g.set(
        reqwest::Method::POST,
        "/v1/policy/inbound/rules",
        json!({"match": "bank.example", "level": "encrypt"}),
    )
    .await;
    assert_eq!(old.cmd("MAIL FROM:<a@bank.example>").await, "250 2.1.0 Ok");
    let mut new = raw(&g.worker.other).await;
    new.cmd("EHLO client.example").await;
    assert_eq!(
        new.cmd("MAIL FROM:<a@bank.example>").await,
        "530 5.7.0 <a@bank.example>: Sender address rejected: Must use TLS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_limits_timeouts_and_a_dual_stack_listener() {
    let dir = tempfile::tempdir().unwrap();
    // A dual-stack listener: IPv4 clients arrive as ::ffff:127.0.0.1 and must match IPv4 rules.
    let (pki, control, worker) = support::control_and_worker(dir.path(), "[::]:0");
    let g = Gateway {
        control,
        worker,
        pki,
        _dir: dir,
    };
    g.relay_loopback().await;
    g.set(
        reqwest::Method::PUT,
        "/v1/settings",
        json!({"smtp": {"command_timeout_s": 1, "max_sessions_per_ip": 1, "shutdown_grace_s": 1}}),
    )
    .await;
    let port = g.worker.other.rsplit(':').next().unwrap().to_string();
    let v4 = format!("127.0.0.1:{port}");
    let mut c = raw(&v4).await;
    c.cmd("EHLO client.example").await;
    c.cmd("MAIL FROM:<a@b.example>").await;
    assert_eq!(
        c.cmd("RCPT TO:<anyone@anywhere.example>").await,
        "250 2.1.5 Ok",
        "the trusted IPv4 network did not match"
    );
    // One session per IP: a second one is turned away.
    let mut second = Raw {
        io: BufReader::new(tokio::net::TcpStream::connect(&v4).await.unwrap()),
    };
    assert_eq!(
        second.reply().await,
        "421 4.7.0 mx.test Error: too many connections"
    );
    // A silent client is cut off at its deadline.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(c.reply().await, "421 4.4.2 mx.test Error: timeout exceeded");
    // With the first session gone, a new one is accepted; SIGTERM then ends the worker within
    // its grace period even though that session stays open.
    let mut third = raw(&v4).await;
    third.cmd("EHLO client.example").await;
    let started = std::time::Instant::now();
    let status = g.worker.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_smuggled_over_a_real_socket() {
    let g = Gateway::start().await;
    g.relay_loopback().await;
    for end in [
        "\n.\n",
        "\r.\r",
        "\r.\n",
        "\n.\r\n",
        "\r\n.\n",
        "\r\n\u{0}.\r\n",
    ] {
        let mut c = raw(&g.worker.other).await;
        c.cmd("EHLO client.example").await;
        c.cmd("MAIL FROM:<a@sender.example>").await;
        c.cmd("RCPT TO:<b@rcpt.example>").await;
        assert_eq!(c.cmd("DATA").await, "354 End data with <CR><LF>.<CR><LF>");
        c.send(&format!("Subject: x\r\n\r\nhello{end}MAIL FROM:<evil@x.example>\r\nRCPT TO:<victim@y.example>\r\nDATA\r\nsmuggled\r\n.\r\n")).await;
        assert_eq!(
            c.reply().await,
            "550 5.6.0 Error: bare <CR>, <LF> or <NUL> received",
            "{end:?}"
        );
        assert_eq!(c.cmd("NOOP").await, "250 2.0.0 Ok", "{end:?}");
    }
    assert!(
        g.queued().is_empty(),
        "a message was queued: {:?}",
        g.queued()
    );
}

/// A renewed STARTTLS certificate (issue 13, point 4) is served from the next handshake on, with
/// no restart, and a session that started before keeps going.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_smtp_certificate_is_picked_up_without_a_restart() {
    let g = Gateway::start().await;
    let served = |t: &Raw<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>, name: &str| {
        let (_, session) = t.io.get_ref().get_ref();
        let cert = &session.peer_certificates().unwrap()[0];
        postern_tls::names::certificate_has_name(cert, name)
    };
    let mut before = tls_session(&g, None).await;
    assert!(!served(&before, "renewed.test"));
    // The worker's STARTTLS files (support's worker uses control.pem/control.key).
    g.pki
        .server("control", &["renewed.test", "localhost", "127.0.0.1"]);
    support::eventually(
        "the renewed certificate",
        Duration::from_secs(15),
        || async {
            let t = tls_session(&g, None).await;
            served(&t, "renewed.test").then_some(())
        },
    )
    .await;
    assert_eq!(before.cmd("NOOP").await, "250 2.0.0 Ok");
}
