//! One SMTP session: the I/O shell around `postern_smtp::Server`. It owns the socket, the
//! timeouts, the TLS handshake and the spool; what to offer, and what to answer at MAIL FROM
//! and RCPT TO, are the policy's verdicts (postern-policy `verdict`), which it only turns into
//! replies and tracking events. The session keeps the policy version it connected under.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use postern_policy::{Certificate, CompiledPolicy, SessionTls, VerdictReply, Violation};
use postern_smtp::{Answer, DataOutcome, Event, Reply, Server, ServerConfig};
use postern_tls::clientcert::check_chain;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use postern_events as events;

use super::Inbound;
use super::conn::Conn;
use super::headers;
use super::received::{Trace, header};
use super::report::ReportCheck;
use crate::metrics::{Reason, TlsSession, session as outcome};
use crate::spool::{Envelope, Incoming, SpoolError};

/// What the handshake established.
struct TlsFacts {
    suite: &'static str,
    version: &'static str,
    key_exchange: &'static str,
    high: bool,
    cert: Certificate,
}

impl TlsFacts {
    fn event(&self) -> events::Tls {
        events::Tls {
            version: self.version.into(),
            cipher: self.suite.into(),
            key_exchange: self.key_exchange.into(),
            certificate: self.cert,
        }
    }

    fn session(&self) -> SessionTls {
        SessionTls {
            high: self.high,
            client_certificate: self.cert,
        }
    }
}

/// What tracking reports of the session when it ends (docs/src/tracking.md).
struct Tracked {
    session: String,
    started_ms: u64,
    helo: Option<String>,
    tls: Option<events::Tls>,
    tls_failure: Option<String>,
    messages: u32,
    starttls_leftovers: u64,
}

/// A refused command, as tracking records it and the rejection metric counts it.
struct Refusal<'a> {
    queue_id: String,
    recipient: Option<String>,
    reply: &'a Reply,
    violation: Option<Violation>,
    /// The metric's reason when there is no violation.
    reason: &'static str,
}

/// A verdict's reply as the SMTP server sends it; `None` accepts.
fn answer(reply: Option<VerdictReply>) -> Answer {
    match reply {
        None => Answer::Accept,
        Some(r) => {
            let reply = r.reply();
            if r.close {
                Answer::Close(reply)
            } else {
                Answer::Reply(reply)
            }
        }
    }
}

/// Runs a session for client `ip`; `early` is what it sent before the greeting (read with a
/// PROXY protocol header).
pub async fn run(
    stream: TcpStream,
    ip: IpAddr,
    early: Vec<u8>,
    inbound: &Arc<Inbound>,
    policy: Arc<CompiledPolicy>,
) -> std::io::Result<&'static str> {
    let mut tracked = Tracked {
        session: ulid::Ulid::new().to_string(),
        started_ms: postern_time::now_ms(),
        helo: None,
        tls: None,
        tls_failure: None,
        messages: 0,
        starttls_leftovers: 0,
    };
    let result = serve(stream, ip, early, inbound, &policy, &mut tracked).await;
    inbound.outbox.emit(
        policy.version,
        events::Event::Connection(events::Connection {
            session: tracked.session,
            ip: ip.to_string(),
            started_ms: tracked.started_ms,
            helo: tracked.helo,
            tls: tracked.tls,
            tls_failure: tracked.tls_failure,
            refused: None,
            messages: tracked.messages,
            starttls_leftovers: tracked.starttls_leftovers,
            refused_count: 0,
        }),
    );
    result
}

async fn serve(
    stream: TcpStream,
    ip: IpAddr,
    early: Vec<u8>,
    inbound: &Arc<Inbound>,
    policy: &Arc<CompiledPolicy>,
    tracked: &mut Tracked,
) -> std::io::Result<&'static str> {
    let policy = policy.clone();
    let connect = policy.connect_verdict(Some(ip));
    let mut server = Server::new(ServerConfig {
        hostname: inbound.hostname.clone(),
        limits: super::smtp_limits(&policy.settings.smtp),
        offer_starttls: connect.offer_starttls,
    });
    server.greeting();
    if !early.is_empty() {
        server.receive(&early);
    }
    let settings = &policy.settings.smtp;
    let command_timeout = Duration::from_secs(settings.command_timeout_s.into());
    let deadline = Instant::now() + Duration::from_secs(settings.session_timeout_s.into());
    let mut conn = Conn::Plain(stream);
    let mut tls: Option<TlsFacts> = None;
    let mut transaction_id: Option<String> = None;
    let mut incoming: Option<Incoming> = None;
    // Set while a transaction to the TLS-RPT report address receives its message.
    let mut report: Option<ReportCheck> = None;
    let mut buf = vec![0u8; 16 * 1024];
    // The transaction's sender, its header block (for Subject and Message-ID) and size.
    let mut sender = String::new();
    let mut head: Vec<u8> = Vec::new();
    let mut size = 0u64;
    let mut ended = outcome::COMPLETED;
    let reject = |tracked: &Tracked,
                  tls: Option<&TlsFacts>,
                  server: &Server,
                  sender: &str,
                  r: Refusal<'_>| {
        inbound
            .metrics()
            .rejected(r.violation.map_or(r.reason, Violation::as_str));
        inbound.outbox.emit(
            policy.version,
            events::Event::Rejected(events::Rejected {
                queue_id: r.queue_id,
                session: tracked.session.clone(),
                source: source(ip, server, tls),
                sender: sender.to_string(),
                recipient: r.recipient,
                reply: r.reply.one_line(),
                violation: r.violation,
            }),
        );
    };
    loop {
        match server.poll() {
            Event::NeedInput => {
                if tracked.helo.as_deref() != server.helo() {
                    tracked.helo = server.helo().map(str::to_string);
                }
                conn.write_all(&server.take_output(), command_timeout)
                    .await?;
                // Checked before reading: a client that always has data waiting would otherwise
                // never meet the timer.
                if Instant::now() >= deadline {
                    server.close_with(Reply::timeout(&inbound.hostname));
                    ended = outcome::TIMEOUT;
                    continue;
                }
                let wait = command_timeout.min(deadline.saturating_duration_since(Instant::now()));
                match tokio::time::timeout(wait, conn.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => server.receive(&buf[..n]),
                    Err(_) => {
                        server.close_with(Reply::timeout(&inbound.hostname));
                        ended = outcome::TIMEOUT;
                    }
                }
            }
            Event::Mail { from, .. } => {
                let verdict =
                    policy.mail_verdict(&connect, &from.0, tls.as_ref().map(TlsFacts::session));
                let answer = answer(verdict.reply(&from.0));
                // The tracking id is made at MAIL FROM (docs/src/tracking.md), refused or not.
                let id = ulid::Ulid::new().to_string();
                sender = from.0.clone();
                match &answer {
                    Answer::Accept => transaction_id = Some(id),
                    Answer::Reply(r) | Answer::Close(r) => reject(
                        tracked,
                        tls.as_ref(),
                        &server,
                        &sender,
                        Refusal {
                            queue_id: id,
                            recipient: None,
                            reply: r,
                            violation: verdict.violation(),
                            reason: "policy",
                        },
                    ),
                }
                server.answer(answer);
            }
            Event::Rcpt { to } => {
                let answer = answer(policy.rcpt_verdict(ip, &to.0).reply(&to.0));
                if let Answer::Reply(r) | Answer::Close(r) = &answer {
                    let id = transaction_id.clone().unwrap_or_default();
                    reject(
                        tracked,
                        tls.as_ref(),
                        &server,
                        &sender,
                        Refusal {
                            queue_id: id,
                            recipient: Some(to.0.clone()),
                            reply: r,
                            violation: None,
                            reason: "relay_denied",
                        },
                    );
                }
                server.answer(answer);
            }
            Event::Data(bytes) => {
                if !headers::head_complete(&head) {
                    head.extend_from_slice(&bytes[..bytes.len().min(headers::MAX_HEAD)]);
                }
                size += bytes.len() as u64;
                if incoming.is_none() {
                    let address = policy.settings.reports.receive_address.as_deref();
                    report = ReportCheck::wanted(address, &recipients(inbound, &server, &policy));
                }
                if let Some(r) = report.as_mut() {
                    r.feed(&bytes);
                }
                let message = incoming.get_or_insert_with(|| {
                    begin(inbound, &server, &policy, ip, tls.as_ref(), &transaction_id)
                });
                message.write(&bytes);
                // A large message goes to its file 256 KiB at a time, on a blocking thread.
                if message.wants_flush()
                    && let Some(m) = incoming.take()
                {
                    incoming = Some(m.flush().await);
                }
            }
            Event::DataEnd(DataOutcome::Complete) => {
                let message = incoming.take().unwrap_or_else(|| {
                    begin(inbound, &server, &policy, ip, tls.as_ref(), &transaction_id)
                });
                let id = transaction_id.take().unwrap_or_default();
                if let Some(Err(reply)) = match report.take() {
                    Some(r) => Some(r.verdict().await),
                    None => None,
                } {
                    tokio::task::spawn_blocking(move || message.discard());
                    reject(
                        tracked,
                        tls.as_ref(),
                        &server,
                        &sender,
                        Refusal {
                            queue_id: id,
                            recipient: None,
                            reply: &reply,
                            violation: None,
                            reason: "not_a_report",
                        },
                    );
                    (head, size) = (Vec::new(), 0);
                    server.answer(Answer::Reply(reply));
                    continue;
                }
                let committed = inbound.spool.commit(message).await;
                let reply = match committed {
                    // Kept: in the queue though its directory entry may not be durable; it is
                    // delivered, and the client told to try again (a duplicate at worst).
                    Ok(()) | Err(SpoolError::Kept(_)) => {
                        let (subject, message_id) = headers::subject_and_message_id(&head);
                        // Before the queue hears of it, so that tracking sees it first.
                        inbound.outbox.emit(
                            policy.version,
                            events::Event::Received(events::Received {
                                queue_id: id.clone(),
                                session: tracked.session.clone(),
                                source: source(ip, &server, tls.as_ref()),
                                sender: std::mem::take(&mut sender),
                                recipients: recipients(inbound, &server, &policy),
                                size,
                                subject,
                                message_id,
                            }),
                        );
                        tracked.messages += 1;
                        inbound.metrics().messages_received.inc();
                        let _ = inbound.queued.send(id.clone());
                        match committed {
                            Err(SpoolError::Kept(e)) => {
                                tracing::error!(%id, error = %e, "spool directory sync failed; the message is kept");
                                if e.kind() == std::io::ErrorKind::StorageFull {
                                    Reply::storage_full()
                                } else {
                                    Reply::local_error()
                                }
                            }
                            _ => Reply::queued(&id),
                        }
                    }
                    Err(e) => {
                        let reply = match e {
                            SpoolError::Full => Reply::storage_full(),
                            e => {
                                tracing::error!(error = %e, "spool write failed");
                                Reply::local_error()
                            }
                        };
                        reject(
                            tracked,
                            tls.as_ref(),
                            &server,
                            &sender,
                            Refusal {
                                queue_id: id,
                                recipient: None,
                                reply: &reply,
                                violation: None,
                                reason: "storage",
                            },
                        );
                        reply
                    }
                };
                (head, size) = (Vec::new(), 0);
                server.answer(Answer::Reply(reply));
            }
            Event::DataEnd(outcome) => {
                if let Some(message) = incoming.take() {
                    tokio::task::spawn_blocking(move || message.discard());
                }
                if let Some(reply) = outcome.refusal() {
                    let id = transaction_id.clone().unwrap_or_default();
                    reject(
                        tracked,
                        tls.as_ref(),
                        &server,
                        &sender,
                        Refusal {
                            queue_id: id,
                            recipient: None,
                            reply: &reply,
                            violation: None,
                            reason: "limit",
                        },
                    );
                }
                (head, size) = (Vec::new(), 0);
                transaction_id = None;
            }
            Event::StartTls { discarded } => {
                conn.write_all(&server.take_output(), command_timeout)
                    .await?;
                if discarded > 0 {
                    tracing::info!(%ip, discarded, "discarded plaintext sent after STARTTLS");
                    tracked.starttls_leftovers += discarded as u64;
                    inbound.outbox.emit(
                        policy.version,
                        events::Event::StartTlsLeftovers(events::StartTlsLeftovers {
                            session: tracked.session.clone(),
                            ip: ip.to_string(),
                            bytes: discarded as u64,
                        }),
                    );
                }
                let config = inbound
                    .tls
                    .for_session(&policy, &connect)
                    .map_err(std::io::Error::other)?;
                let Conn::Plain(tcp) = std::mem::replace(&mut conn, Conn::Gone) else {
                    break;
                };
                let handshake =
                    tokio::time::timeout(command_timeout, TlsAcceptor::from(config).accept(tcp))
                        .await;
                let stream = match handshake {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::info!(%ip, error = %e, "TLS handshake failed");
                        tracked.tls_failure = Some(e.to_string());
                        inbound.metrics().inbound_tls_failures.inc();
                        return Ok(outcome::TLS_FAILED);
                    }
                    Err(_) => {
                        tracing::info!(%ip, "TLS handshake timed out");
                        tracked.tls_failure = Some("handshake timed out".into());
                        inbound.metrics().inbound_tls_failures.inc();
                        return Ok(outcome::TLS_FAILED);
                    }
                };
                let (_, session) = stream.get_ref();
                let suite = session.negotiated_cipher_suite().map(|s| s.suite());
                tls = Some(TlsFacts {
                    suite: suite.map_or("unknown", postern_tls::suites::iana_suite),
                    version: session
                        .protocol_version()
                        .map_or("unknown", postern_tls::suites::iana_version),
                    key_exchange: session
                        .negotiated_key_exchange_group()
                        .map_or("unknown", |g| postern_tls::suites::iana_group(g.name())),
                    high: suite.is_some_and(postern_tls::suites::is_256_bit),
                    cert: check_chain(
                        session.peer_certificates(),
                        &policy.policy.trust.certificates(),
                    ),
                });
                if let Some(t) = &tls {
                    let labels = TlsSession {
                        version: t.version,
                        suite: t.suite,
                    };
                    inbound.metrics().inbound_tls.get_or_create(&labels).inc();
                }
                tracked.tls = tls.as_ref().map(TlsFacts::event);
                conn = Conn::Tls(Box::new(stream));
                server.tls_started();
                transaction_id = None;
            }
            Event::Close => {
                conn.write_all(&server.take_output(), command_timeout)
                    .await?;
                break;
            }
        }
    }
    if let Some(message) = incoming.take() {
        tokio::task::spawn_blocking(move || message.discard());
    }
    conn.shutdown(command_timeout).await;
    let limits = u64::from(server.limits_hit());
    if limits > 0 {
        let reason = Reason { reason: "limit" };
        inbound
            .metrics()
            .rejections
            .get_or_create(&reason)
            .inc_by(limits);
    }
    Ok(ended)
}

/// Where the session's mail comes from, for tracking.
fn source(ip: IpAddr, server: &Server, tls: Option<&TlsFacts>) -> events::Source {
    events::Source {
        ip: ip.to_string(),
        helo: server.helo().unwrap_or_default().to_string(),
        tls: tls.map(TlsFacts::event),
    }
}

/// The transaction's recipients, `postmaster` replaced by the configured address.
fn recipients(inbound: &Inbound, server: &Server, policy: &CompiledPolicy) -> Vec<String> {
    let postmaster = policy
        .settings
        .postmaster
        .clone()
        .unwrap_or_else(|| format!("postmaster@{}", inbound.hostname));
    server
        .recipients()
        .iter()
        .map(|r| {
            if r.0.eq_ignore_ascii_case("postmaster") {
                postmaster.clone()
            } else {
                r.0.clone()
            }
        })
        .collect()
}

/// Starts the spool file of the current transaction, with its Received header.
fn begin(
    inbound: &Inbound,
    server: &Server,
    policy: &CompiledPolicy,
    ip: IpAddr,
    tls: Option<&TlsFacts>,
    id: &Option<String>,
) -> Incoming {
    let id = id.clone().unwrap_or_else(|| ulid::Ulid::new().to_string());
    let params = server.mail_params().cloned().unwrap_or_default();
    let recipients = recipients(inbound, server, policy);
    let now = postern_time::now_s();
    let helo = server.helo().unwrap_or("unknown").to_string();
    let trace = Trace {
        helo: &helo,
        ip,
        hostname: &inbound.hostname,
        id: &id,
        recipients: &recipients,
        esmtp: server.esmtp(),
        smtputf8: params.smtputf8,
        tls: tls.map(|t| (t.suite, t.version, t.cert.as_str())),
    };
    let envelope = Envelope {
        id: id.clone(),
        sender: server.sender().map(|s| s.0.clone()).unwrap_or_default(),
        recipients: recipients.clone(),
        received_at: postern_time::rfc3339_s(now),
        client_ip: ip.to_string(),
        helo: helo.clone(),
        tls: tls.map(|t| format!("{} {}", t.version, t.suite)),
        policy_version: policy.version,
        smtputf8: params.smtputf8,
        eight_bit: params.eight_bit,
        tls_optional: false,
    };
    inbound
        .spool
        .begin(&envelope, header(&trace, now).as_bytes())
}
