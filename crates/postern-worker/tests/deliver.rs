//! Delivery attempts against real next hops on loopback (our sans-IO server behind real sockets
//! and real TLS, or a scripted one): the outbound levels of docs/src/policy.md#outbound and their
//! texts.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postern_policy::Certificate;
use postern_policy::{CipherStrength, Level};
use postern_smtp::{Answer, Envelope, Event, Reply, Server, ServerConfig};
use postern_tls::pki::{Ca, Issued};
use postern_worker::outbound::deliver::{Context, Deadlines, Target, attempt};
use postern_worker::outbound::pool::{Pool, Reuse};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

type Inbox = Arc<Mutex<Vec<Vec<u8>>>>;

/// A next hop: our SMTP server behind a real socket, with STARTTLS when it has a certificate.
async fn next_hop(cert: Option<Issued>) -> (SocketAddr, Inbox) {
    next_hop_injecting(cert, b"").await
}

/// `next_hop` that sends `inject` in plaintext right after its STARTTLS reply, in the same
/// write (the STARTTLS injection of CVE-2011-0411, seen from the client side).
async fn next_hop_injecting(cert: Option<Issued>, inject: &'static [u8]) -> (SocketAddr, Inbox) {
    postern_tls::install_crypto_provider();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let inbox: Inbox = Arc::default();
    let acceptor = cert.map(|c| {
        let config = postern_tls::server_config(&c.cert_pem, &c.key_pem).unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let received = inbox.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, inbox) = (acceptor.clone(), received.clone());
            tokio::spawn(async move {
                let mut server = Server::new(ServerConfig {
                    hostname: "hop.test".into(),
                    limits: postern_worker::inbound::smtp_limits(&Default::default()),
                    offer_starttls: acceptor.is_some(),
                });
                server.greeting();
                let mut plain = Some(tcp);
                let mut tls: Option<tokio_rustls::server::TlsStream<TcpStream>> = None;
                let mut buf = vec![0u8; 8192];
                let mut message = Vec::new();
                loop {
                    match server.poll() {
                        Event::NeedInput => {
                            let out = server.take_output();
                            let n = match (&mut plain, &mut tls) {
                                (Some(s), _) => {
                                    s.write_all(&out).await.ok();
                                    s.read(&mut buf).await.unwrap_or(0)
                                }
                                (_, Some(s)) => {
                                    s.write_all(&out).await.ok();
                                    s.flush().await.ok();
                                    s.read(&mut buf).await.unwrap_or(0)
                                }
                                _ => 0,
                            };
                            if n == 0 {
                                return;
                            }
                            server.receive(&buf[..n]);
                        }
                        Event::Mail { .. } | Event::Rcpt { .. } => server.answer(Answer::Accept),
                        Event::Data(b) => message.extend(b),
                        Event::DataEnd(_) => {
                            inbox.lock().unwrap().push(std::mem::take(&mut message));
                            server.answer(Answer::Reply(Reply::queued("HOP1")));
                        }
                        Event::StartTls { .. } => {
                            let mut tcp = plain.take().unwrap();
                            tcp.write_all(&[server.take_output(), inject.to_vec()].concat())
                                .await
                                .ok();
                            match acceptor.as_ref().unwrap().accept(tcp).await {
                                Ok(s) => tls = Some(s),
                                Err(_) => return,
                            }
                            server.tls_started();
                        }
                        Event::Close => {
                            let out = server.take_output();
                            if let Some(s) = plain.as_mut() {
                                s.write_all(&out).await.ok();
                            }
                            if let Some(s) = tls.as_mut() {
                                s.write_all(&out).await.ok();
                                s.flush().await.ok();
                            }
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, inbox)
}

/// A next hop that offers STARTTLS and refuses it with 454 on its first connection, and takes
/// mail in plaintext on the next ones.
async fn refusing_hop() -> (SocketAddr, Inbox) {
    failing_hop(b"454 4.7.0 TLS not available due to local problem\r\n").await
}

/// A next hop whose first connection answers STARTTLS with `reply` (a 220 is followed by bytes
/// that are not TLS, and the connection closes); the next connections take mail in plaintext.
async fn failing_hop(reply: &'static [u8]) -> (SocketAddr, Inbox) {
    let (plain_addr, inbox) = next_hop(None).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut tcp, _)) = listener.accept().await {
            if !first {
                // Later connections go to the plaintext hop.
                let mut upstream = TcpStream::connect(plain_addr).await.unwrap();
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut upstream).await;
                });
                continue;
            }
            first = false;
            tokio::spawn(async move {
                let (read, mut write) = tcp.split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 hop.test ESMTP\r\n").await.unwrap();
                while let Ok(Some(line)) = lines.next_line().await {
                    let reply: &[u8] = match line.to_ascii_uppercase().split(' ').next().unwrap() {
                        "EHLO" => b"250-hop.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n",
                        "STARTTLS" if reply.starts_with(b"220") => {
                            let _ = write.write_all(reply).await;
                            let _ = write.write_all(b"this is not a TLS record\r\n").await;
                            return;
                        }
                        "STARTTLS" => reply,
                        "QUIT" => b"221 2.0.0 Bye\r\n",
                        _ => b"503 5.5.1 Error: no\r\n",
                    };
                    write.write_all(reply).await.unwrap();
                }
            });
        }
    });
    (addr, inbox)
}

fn envelope() -> Envelope {
    Envelope {
        from: "a@sender.example".into(),
        recipients: vec!["b@partner.example".into()],
        size: 20,
        eight_bit: false,
        smtputf8: false,
    }
}

const MESSAGE: &[u8] = b"Subject: out\r\n\r\n.dot\r\n";

/// How the tests attempt: no connection reuse, ten seconds for every step.
fn context<'a>(trust: &'a [CertificateDer<'static>]) -> Context<'a> {
    Context {
        helo: "relay.test",
        trust,
        deadlines: Deadlines::all(Duration::from_secs(10)),
        pool: None,
        generation: 0,
    }
}

/// An attempt with no CA trusted beyond webpki-roots.
async fn deliver(
    addr: SocketAddr,
    host: &str,
    level: Level,
) -> postern_worker::outbound::deliver::Attempt {
    let target = Target {
        host: host.into(),
        addr,
        level,
        strength: CipherStrength::Medium,
    };
    attempt(&target, &context(&[]), &envelope(), MESSAGE.into()).await
}

fn reason(a: &postern_worker::outbound::deliver::Attempt) -> String {
    let reply = &a.outcome.recipients[0].1;
    // The text after the code, as the worker records it.
    reply.one_line()[4..].to_string()
}

#[tokio::test]
async fn plaintext_and_tls_deliveries() {
    let ca = Ca::new("partner CA").unwrap();
    let trust = postern_tls::files::ders(&ca.cert_pem);
    let (plain, plain_inbox) = next_hop(None).await;
    let (tls_hop, tls_inbox) = next_hop(Some(ca.server(&["mx.partner.example"]).unwrap())).await;

    let a = deliver(plain, "mx.partner.example", Level::May).await;
    assert_eq!(a.outcome.recipients[0].1.code, 250, "{a:?}");
    assert_eq!((a.tls.is_none(), a.tls_fallback), (true, false));
    assert_eq!(plain_inbox.lock().unwrap().as_slice(), [MESSAGE.to_vec()]);

    let target = Target {
        host: "mx.partner.example".into(),
        addr: tls_hop,
        level: Level::Verify,
        strength: CipherStrength::High,
    };
    let a = attempt(&target, &context(&trust), &envelope(), MESSAGE.into()).await;
    assert_eq!(a.outcome.recipients[0].1.code, 250, "{a:?}");
    let tls = a.tls.unwrap();
    assert_eq!(tls.certificate, Certificate::Verified);
    assert_eq!(
        (tls.version, tls.cipher),
        ("TLSv1.3", "TLS_AES_256_GCM_SHA384")
    );
    assert_eq!(tls_inbox.lock().unwrap().len(), 1);

    // encrypt records an untrusted certificate but delivers.
    let a = deliver(tls_hop, "mx.partner.example", Level::Encrypt).await;
    assert_eq!(a.outcome.recipients[0].1.code, 250);
    assert_eq!(a.tls.unwrap().certificate, Certificate::Untrusted);
}

#[tokio::test]
async fn verify_and_encrypt_defer_with_the_contract_texts() {
    let ca = Ca::new("partner CA").unwrap();
    let trust = postern_tls::files::ders(&ca.cert_pem);
    let (plain, _) = next_hop(None).await;
    let (tls_hop, inbox) = next_hop(Some(ca.server(&["mx.partner.example"]).unwrap())).await;
    let verify = |host: &str, trust: Vec<_>| {
        let target = Target {
            host: host.into(),
            addr: tls_hop,
            level: Level::Verify,
            strength: CipherStrength::Medium,
        };
        async move { attempt(&target, &context(&trust), &envelope(), MESSAGE.into()).await }
    };
    assert_eq!(
        reason(&verify("mx.other.example", trust.clone()).await),
        "4.7.5 Server certificate not verified"
    );
    assert_eq!(
        reason(&verify("mx.partner.example", vec![]).await),
        "4.7.5 Server certificate not trusted"
    );
    assert!(
        inbox.lock().unwrap().is_empty(),
        "a verify failure delivered anyway"
    );
    let a = deliver(plain, "mx.partner.example", Level::Encrypt).await;
    assert_eq!(
        reason(&a),
        "4.7.4 TLS is required, but was not offered by host mx.partner.example[127.0.0.1]"
    );
    assert_eq!(
        a.outcome.recipients[0].1.code / 100,
        4,
        "TLS failures defer, never bounce"
    );
}

#[tokio::test]
async fn a_refused_starttls_falls_back_under_may_and_defers_under_encrypt() {
    let (hop, inbox) = refusing_hop().await;
    let a = deliver(hop, "mx.partner.example", Level::Encrypt).await;
    assert_eq!(
        reason(&a),
        "4.7.5 TLS is required, but host mx.partner.example[127.0.0.1] refused to start TLS: 454 4.7.0 TLS not available due to local problem"
    );
    assert!(inbox.lock().unwrap().is_empty());
    let (hop, inbox) = refusing_hop().await;
    let a = deliver(hop, "mx.partner.example", Level::May).await;
    assert_eq!(a.outcome.recipients[0].1.code, 250, "{a:?}");
    assert!(a.tls_fallback && a.tls.is_none());
    assert_eq!(inbox.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_dead_next_hop_defers() {
    let unused = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let a = deliver(unused, "mx.partner.example", Level::May).await;
    assert!(
        reason(&a).starts_with("4.4.1 connect to mx.partner.example[127.0.0.1]:"),
        "{}",
        reason(&a)
    );
}

#[tokio::test]
async fn a_message_needing_smtputf8_bounces_at_a_hop_without_it() {
    // Our server offers SMTPUTF8; a scripted hop that does not.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let (read, mut write) = tcp.split();
        let mut lines = BufReader::new(read).lines();
        write.write_all(b"220 old.test ESMTP\r\n").await.unwrap();
        while let Ok(Some(line)) = lines.next_line().await {
            let reply: &[u8] = if line.starts_with("EHLO") {
                b"250-old.test\r\n250 8BITMIME\r\n"
            } else {
                b"221 2.0.0 Bye\r\n"
            };
            write.write_all(reply).await.unwrap();
        }
    });
    let mut env = envelope();
    env.smtputf8 = true;
    let target = Target {
        host: "old.test".into(),
        addr,
        level: Level::May,
        strength: CipherStrength::Medium,
    };
    let a = attempt(&target, &context(&[]), &env, MESSAGE.into()).await;
    let reply = &a.outcome.recipients[0].1;
    assert_eq!(reply.code, 554);
    assert_eq!(
        reply.one_line(),
        "554 5.6.7 SMTPUTF8 is required, but was not offered by host old.test[127.0.0.1]"
    );
}

/// A cached connection to a hop without SMTPUTF8 never carries a message that needs it: the
/// message gets the 5.6.7 of a new session, and the hop sees one transaction only.
#[tokio::test]
async fn a_reused_connection_never_downgrades_smtputf8() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mails = Arc::new(Mutex::new(0usize));
    let seen = mails.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let (read, mut write) = tcp.split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 old.test ESMTP\r\n").await.unwrap();
                let mut in_data = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    let reply: &[u8] = if in_data {
                        if line != "." {
                            continue;
                        }
                        in_data = false;
                        b"250 2.0.0 Ok: queued\r\n"
                    } else if line.starts_with("EHLO") {
                        b"250-old.test\r\n250 8BITMIME\r\n"
                    } else if line.starts_with("MAIL") {
                        *seen.lock().unwrap() += 1;
                        b"250 2.1.0 Ok\r\n"
                    } else if line.starts_with("DATA") {
                        in_data = true;
                        b"354 go ahead\r\n"
                    } else if line.starts_with("QUIT") {
                        b"221 2.0.0 Bye\r\n"
                    } else {
                        b"250 2.0.0 Ok\r\n"
                    };
                    if write.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let pool = Pool::start();
    pool.configure(Reuse {
        time: Duration::from_secs(60),
        count: 10,
        idle: Duration::from_secs(60),
    });
    let mut cx = context(&[]);
    cx.pool = Some(&pool);
    let target = Target {
        host: "old.test".into(),
        addr,
        level: Level::May,
        strength: CipherStrength::Medium,
    };
    let a = attempt(&target, &cx, &envelope(), MESSAGE.into()).await;
    assert_eq!(a.outcome.recipients[0].1.code, 250, "{a:?}");
    assert_eq!(
        pool.len(),
        1,
        "the clean session waits for the next message"
    );
    let mut utf8 = envelope();
    utf8.smtputf8 = true;
    let a = attempt(&target, &cx, &utf8, MESSAGE.into()).await;
    assert_eq!(a.outcome.recipients[0].1.code, 554, "{a:?}");
    assert_eq!(
        *mails.lock().unwrap(),
        1,
        "the hop never saw the second MAIL"
    );
    let a = attempt(&target, &cx, &envelope(), MESSAGE.into()).await;
    assert!(a.reused, "the cached session still carries plain mail");
    assert_eq!(*mails.lock().unwrap(), 2);
}

#[tokio::test]
async fn a_self_signed_certificate_encrypts_but_does_not_verify() {
    let cert = Issued::self_signed(&["mx.partner.example"]).unwrap();
    let (hop, inbox) = next_hop(Some(cert)).await;
    let a = deliver(hop, "mx.partner.example", Level::Encrypt).await;
    assert_eq!(a.outcome.recipients[0].1.code, 250, "{a:?}");
    assert_eq!(a.tls.unwrap().certificate, Certificate::Untrusted);
    assert_eq!(inbox.lock().unwrap().len(), 1);
    let a = deliver(hop, "mx.partner.example", Level::Verify).await;
    assert_eq!(reason(&a), "4.7.5 Server certificate not trusted");
    assert_eq!(inbox.lock().unwrap().len(), 1, "verify delivered anyway");
}

#[tokio::test]
async fn a_failed_handshake_defers_under_encrypt_and_falls_back_under_may() {
    let (hop, inbox) = failing_hop(b"220 2.0.0 Ready to start TLS\r\n").await;
    let a = deliver(hop, "mx.partner.example", Level::Encrypt).await;
    assert_eq!(reason(&a), "4.7.5 Cannot start TLS: handshake failure");
    assert!(inbox.lock().unwrap().is_empty());
    let (hop, inbox) = failing_hop(b"220 2.0.0 Ready to start TLS\r\n").await;
    let a = deliver(hop, "mx.partner.example", Level::May).await;
    assert_eq!(a.outcome.recipients[0].1.code, 250, "{a:?}");
    assert!(a.tls_fallback && a.tls.is_none(), "{a:?}");
    assert_eq!(inbox.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn plaintext_injected_after_the_starttls_reply_is_discarded() {
    // Were the injected line read as the reply to the EHLO inside TLS, the attempt would end
    // with it; discarded, the delivery goes on inside TLS.
    let ca = Ca::new("partner CA").unwrap();
    let cert = ca.server(&["mx.partner.example"]).unwrap();
    let (hop, inbox) = next_hop_injecting(Some(cert), b"554 5.7.1 injected\r\n").await;
    let a = deliver(hop, "mx.partner.example", Level::Encrypt).await;
    assert_eq!(a.outcome.recipients[0].1.code, 250, "{a:?}");
    assert!(a.tls.is_some());
    assert_eq!(inbox.lock().unwrap().len(), 1);
}

/// A next hop that answers STARTTLS with 454 and resets the connection at once (as a peer
/// whose TLS setup failed may): the QUIT that follows cannot be written.
async fn resetting_hop() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut lines = BufReader::new(tcp);
                let _ = lines.get_mut().write_all(b"220 hop.test ESMTP\r\n").await;
                let mut line = String::new();
                while lines.read_line(&mut line).await.unwrap_or(0) > 0 {
                    let upper = line.to_ascii_uppercase();
                    line.clear();
                    if upper.starts_with("EHLO") {
                        let _ = lines
                            .get_mut()
                            .write_all(b"250-hop.test\r\n250 STARTTLS\r\n")
                            .await;
                    } else if upper.starts_with("STARTTLS") {
                        let tcp = lines.into_inner();
                        let _ = tcp.set_zero_linger();
                        let mut tcp = tcp;
                        let _ = tcp.write_all(b"454 4.7.0 TLS not available\r\n").await;
                        return; // dropped with linger 0: an RST right behind the reply
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_starttls_refusal_followed_by_a_reset_is_still_the_refusal() {
    let hop = resetting_hop().await;
    let a = deliver(hop, "mx.partner.example", Level::Encrypt).await;
    assert_eq!(
        reason(&a),
        "4.7.5 TLS is required, but host mx.partner.example[127.0.0.1] refused to start TLS: 454 4.7.0 TLS not available"
    );
}
