//! One delivery attempt to one next-hop address, under one outbound decision (PRODUCT.md 2.3):
//! the shell around `postern_smtp::Client`. It owns the socket, the STARTTLS handshake (suites
//! by strength, any certificate accepted during the handshake, judged afterwards), the `may`
//! fallback to a new plaintext connection, the deadline of every step, and the reuse of a
//! connection that ended its last transaction cleanly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use postern_policy::{
    Certificate, CipherStrength, DeliverySettings, Level, TlsStep, Violation, after_ehlo,
    after_handshake, after_handshake_failure, after_starttls_refused,
};
use postern_smtp::{Client, ClientEvent, Envelope, Outcome, Reply};
use postern_tls::servercert::{AcceptAnyServerCert, judge_server_chain};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

use super::pool::{Pool, PoolKey};

/// Why an attempt stopped before its transaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stop {
    /// The `may` fallback: a new plaintext connection to the same host.
    FallbackPlain,
    /// Deferred, by the TLS policy (with its verdict's kind) or for a reason of our own.
    Defer {
        text: String,
        violation: Option<Violation>,
    },
}

impl Stop {
    fn defer(text: String) -> Stop {
        Stop::Defer {
            text,
            violation: None,
        }
    }
}

/// A TLS verdict that ends the attempt (`StartTls` and `Plain` go on, and never get here).
impl From<TlsStep> for Stop {
    fn from(step: TlsStep) -> Stop {
        match step {
            TlsStep::Defer(d) => Stop::Defer {
                text: d.to_string(),
                violation: Some(d.violation),
            },
            TlsStep::FallbackPlain => Stop::FallbackPlain,
            TlsStep::StartTls | TlsStep::Plain => Stop::defer("4.4.0 TLS step out of order".into()),
        }
    }
}

/// Where and how to deliver.
#[derive(Debug, Clone)]
pub struct Target {
    /// The reference name: the MX host, the configured next-hop host, or the IP of an
    /// `[ip]:port` next hop. Also the SNI.
    pub host: String,
    pub addr: SocketAddr,
    pub level: Level,
    pub strength: CipherStrength,
}

/// The deadline of each step (`settings.delivery`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub connect: Duration,
    pub greeting: Duration,
    pub command: Duration,
    /// Each write of the message body must make progress within this.
    pub data: Duration,
    pub session: Duration,
}

impl Deadlines {
    pub fn of(d: &DeliverySettings) -> Deadlines {
        let s = |v: u32| Duration::from_secs(v.into());
        Deadlines {
            connect: s(d.connect_timeout_s),
            greeting: s(d.greeting_timeout_s),
            command: s(d.command_timeout_s),
            data: s(d.data_timeout_s),
            session: s(d.session_timeout_s),
        }
    }

    /// Every step (and the session) within `each`: for tests and tools.
    pub fn all(each: Duration) -> Deadlines {
        Deadlines {
            connect: each,
            greeting: each,
            command: each,
            data: each,
            session: each * 10,
        }
    }
}

/// How the attempt travelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    pub version: &'static str,
    pub cipher: &'static str,
    pub key_exchange: &'static str,
    pub certificate: Certificate,
    /// An untrusted chain failed on its expiry date (TLS-RPT's `certificate-expired`).
    pub expired: bool,
}

/// The record of one attempt (PRODUCT.md 5: host, IP, TLS, reply and reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub host: String,
    pub ip: String,
    pub tls: Option<TlsInfo>,
    /// A `may` delivery that fell back to plaintext.
    pub tls_fallback: bool,
    /// Whether a session got past the greeting (what `mx_session_limit` counts).
    pub greeted: bool,
    /// Whether the transaction ran on a connection that carried an earlier message.
    pub reused: bool,
    /// Per recipient: the server's reply, or our deferral (code 4xx) when TLS failed.
    pub outcome: Outcome,
    /// Set when the TLS policy deferred the attempt.
    pub violation: Option<Violation>,
    /// Our address on the last connection (TLS-RPT's sending-mta-ip).
    pub local_ip: Option<String>,
    /// The policy refused the server's certificate because it had expired.
    pub certificate_expired: bool,
    /// The server answered STARTTLS with an error (a `may` fallback is then its doing).
    pub starttls_refused: bool,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Gone,
}

impl Stream {
    fn local_ip(&self) -> Option<String> {
        let tcp = match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
            Stream::Gone => return None,
        };
        tcp.local_addr().ok().map(|a| a.ip().to_string())
    }

    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
            Stream::Gone => Ok(0),
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Stream::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Stream::Gone => Ok(()),
        }
    }
}

/// An open session with a next hop, between transactions or in one.
pub struct Connection {
    stream: Stream,
    client: Client,
    tls: Option<TlsInfo>,
    /// When the session was opened (the reuse time limit counts from here).
    pub(super) born: Instant,
    /// The whole session ends by then, whatever its progress.
    session_end: Instant,
    /// Transactions carried so far.
    pub(super) uses: u32,
    /// The next hop refused RSET on reuse.
    reset_refused: bool,
}

impl Connection {
    /// Ends the session: QUIT, in the background and within a few seconds, so that a next hop
    /// that stopped reading never holds a delivery slot.
    pub fn close(mut self) {
        self.client.close();
        let quit = self.client.take_output();
        tokio::spawn(async move {
            let _ = timeout(Duration::from_secs(5), self.stream.write(&quit)).await;
        });
    }
}

fn deferred(envelope: &Envelope, text: &str) -> Outcome {
    let reply = Reply::new(450, text);
    Outcome {
        recipients: envelope
            .recipients
            .iter()
            .map(|r| (r.clone(), reply.clone()))
            .collect(),
        session: Some(reply),
        local: true,
    }
}

/// What one attempt needs besides its target and message.
pub struct Context<'a> {
    pub helo: &'a str,
    pub trust: &'a [CertificateDer<'static>],
    pub deadlines: Deadlines,
    /// Idle connections to reuse and return; `None` opens and closes one per attempt.
    pub pool: Option<&'a Pool>,
    /// Connections are reused only under the same policy version (its trust and rules).
    pub generation: u64,
}

/// Delivers `message` to `target`. Never fails: whatever happens is in the returned outcome.
pub async fn attempt(
    target: &Target,
    cx: &Context<'_>,
    envelope: &Envelope,
    message: Arc<[u8]>,
) -> Attempt {
    let ip = target.addr.ip().to_string();
    let mut record = Attempt {
        host: target.host.clone(),
        ip: ip.clone(),
        tls: None,
        tls_fallback: false,
        greeted: false,
        reused: false,
        outcome: deferred(envelope, "4.4.0 not attempted"),
        violation: None,
        local_ip: None,
        certificate_expired: false,
        starttls_refused: false,
    };
    let key = PoolKey::new(target, cx.generation);
    // A cached connection first; one that fails before RSET is answered is not counted
    // against the message, which goes on over a new connection.
    while let Some(mut conn) = cx.pool.and_then(|p| p.take(&key)) {
        if envelope.smtputf8 && !conn.client.extensions().smtputf8 {
            // A new session says why this next hop cannot take the message (no downgrade).
            finish(conn, cx, key.clone());
            break;
        }
        conn.client.reset(envelope.clone(), message.clone());
        record.local_ip = conn.stream.local_ip();
        let before = conn.client.replies();
        match drive(&mut conn, target, cx, envelope, false, &mut record).await {
            Ok(outcome) => {
                record.greeted = true;
                record.reused = true;
                record.tls = conn.tls.clone();
                record.outcome = outcome;
                finish(conn, cx, key);
                return record;
            }
            Err(_) if conn.client.replies() == before || conn.reset_refused => {
                tracing::debug!(host = %target.host, %ip, "a cached connection failed; opening a new one");
            }
            Err(stop) => {
                record.greeted = true;
                record.reused = true;
                stopped(&mut record, stop, envelope);
                return record;
            }
        }
    }
    // `may` may need a second, plaintext connection after a TLS failure.
    for plaintext_only in [false, true] {
        match session(
            target,
            cx,
            envelope,
            message.clone(),
            plaintext_only,
            &mut record,
        )
        .await
        {
            Ok((outcome, conn)) => {
                record.outcome = outcome;
                if plaintext_only {
                    // A fallback connection is never offered to the next `may` message.
                    conn.close();
                } else {
                    finish(conn, cx, key);
                }
                return record;
            }
            Err(Stop::FallbackPlain) if !plaintext_only => record.tls_fallback = true,
            Err(stop) => {
                stopped(&mut record, stop, envelope);
                return record;
            }
        }
    }
    record.outcome = deferred(envelope, "4.4.0 delivery could not be completed");
    record
}

fn stopped(record: &mut Attempt, stop: Stop, envelope: &Envelope) {
    match stop {
        Stop::Defer { text, violation } => {
            record.outcome = deferred(envelope, &text);
            record.violation = violation;
        }
        Stop::FallbackPlain => {
            record.outcome = deferred(envelope, "4.4.0 delivery could not be completed")
        }
    }
}

/// A connection after its transaction: back to the pool when it can carry another, else QUIT.
fn finish(conn: Connection, cx: &Context<'_>, key: PoolKey) {
    match cx.pool {
        Some(pool) if conn.client.reusable() => pool.put(key, conn),
        _ => conn.close(),
    }
}

/// A new connection, through the greeting, EHLO and STARTTLS, and the first transaction.
async fn session(
    target: &Target,
    cx: &Context<'_>,
    envelope: &Envelope,
    message: Arc<[u8]>,
    plaintext_only: bool,
    record: &mut Attempt,
) -> Result<(Outcome, Connection), Stop> {
    let (host, ip, port) = (target.host.as_str(), &record.ip, target.addr.port());
    let born = Instant::now();
    let session_end = born + cx.deadlines.session;
    let tcp = match timeout(cx.deadlines.connect, TcpStream::connect(target.addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            return Err(Stop::defer(format!(
                "4.4.1 connect to {host}[{ip}]:{port}: {e}"
            )));
        }
        Err(_) => {
            return Err(Stop::defer(format!(
                "4.4.1 connect to {host}[{ip}]:{port}: Connection timed out"
            )));
        }
    };
    let _ = tcp.set_nodelay(true);
    record.local_ip = tcp.local_addr().ok().map(|a| a.ip().to_string());
    let mut conn = Connection {
        stream: Stream::Plain(tcp),
        client: Client::new(cx.helo, envelope.clone(), message),
        tls: None,
        born,
        session_end,
        uses: 0,
        reset_refused: false,
    };
    let outcome = drive(&mut conn, target, cx, envelope, plaintext_only, record).await?;
    record.tls = conn.tls.clone();
    Ok((outcome, conn))
}

/// Runs the client over the connection until its transaction ends, every step under its
/// deadline. Set when the TLS policy ends the attempt, `verdict` is the result after QUIT.
async fn drive(
    conn: &mut Connection,
    target: &Target,
    cx: &Context<'_>,
    envelope: &Envelope,
    plaintext_only: bool,
    record: &mut Attempt,
) -> Result<Outcome, Stop> {
    let (host, ip) = (target.host.as_str(), record.ip.clone());
    let d = cx.deadlines;
    let mut buf = vec![0u8; 16 * 1024];
    let mut verdict: Option<Stop> = None;
    // The reply being waited for, counted by replies parsed, and its deadline.
    let mut waiting: Option<(u64, Instant)> = None;
    let failed = |conn: &Connection, why: &str| {
        Stop::defer(format!(
            "4.4.2 conversation with {host}[{ip}] {why} while {}",
            conn.client.stage()
        ))
    };
    let lost = |e: &dyn std::fmt::Display| {
        Stop::defer(format!("4.4.2 lost connection with {host}[{ip}]: {e}"))
    };
    loop {
        match conn.client.poll() {
            ClientEvent::NeedInput => {
                let body = conn.client.sending_body();
                let output = conn.client.take_output();
                if !output.is_empty() {
                    let per_write = if body { d.data } else { d.command };
                    match write(&mut conn.stream, &output, per_write, conn.session_end).await {
                        Ok(()) => waiting = None,
                        Err(WriteError::Io(e)) => {
                            // A next hop that closes after refusing STARTTLS fails the QUIT
                            // that follows; the refusal, not the write error, is the reason.
                            return Err(verdict.unwrap_or_else(|| lost(&e)));
                        }
                        Err(WriteError::TimedOut) => {
                            return Err(verdict.unwrap_or_else(|| {
                                if body {
                                    Stop::defer(format!(
                                        "4.4.2 conversation with {host}[{ip}] timed out while sending message body"
                                    ))
                                } else {
                                    failed(conn, "timed out")
                                }
                            }));
                        }
                    }
                }
                let replies = conn.client.replies();
                let deadline = match waiting {
                    Some((seen, at)) if seen == replies => at,
                    _ => {
                        let greeting = conn.client.stage().contains("greeting")
                            || conn.client.stage().contains("EHLO");
                        let at = Instant::now() + if greeting { d.greeting } else { d.command };
                        waiting = Some((replies, at));
                        at
                    }
                };
                let session_expires = conn.session_end <= deadline;
                match timeout_at(deadline.min(conn.session_end), conn.stream.read(&mut buf)).await {
                    Ok(Ok(0)) => return Err(verdict.unwrap_or_else(|| lost(&"connection closed"))),
                    Ok(Ok(n)) => conn.client.receive(&buf[..n]),
                    Ok(Err(e)) => return Err(verdict.unwrap_or_else(|| lost(&e))),
                    Err(_) if session_expires => {
                        return Err(verdict
                            .unwrap_or_else(|| failed(conn, "exceeded the session time limit")));
                    }
                    Err(_) => return Err(verdict.unwrap_or_else(|| failed(conn, "timed out"))),
                }
            }
            ClientEvent::Greeted {
                extensions,
                tls: true,
            } => {
                record.greeted = true;
                proceed(&mut conn.client, envelope, &extensions, host, &ip)
            }
            ClientEvent::Greeted {
                extensions,
                tls: false,
            } => {
                record.greeted = true;
                let step = if plaintext_only {
                    TlsStep::Plain
                } else {
                    after_ehlo(target.level, extensions.starttls, host, &ip)
                };
                match step {
                    TlsStep::StartTls => conn.client.start_tls(),
                    TlsStep::Plain => proceed(&mut conn.client, envelope, &extensions, host, &ip),
                    other => {
                        conn.client.quit(Reply::new(450, "4.7.0 TLS policy"));
                        verdict = Some(other.into());
                    }
                }
            }
            ClientEvent::StartTlsRefused(reply) => {
                record.starttls_refused = true;
                let step = after_starttls_refused(target.level, host, &ip, &reply.one_line());
                conn.client.quit(Reply::new(450, "4.7.0 TLS policy"));
                verdict = Some(step.into());
            }
            ClientEvent::ResetRefused(reply) => {
                conn.reset_refused = true;
                return Err(Stop::defer(format!(
                    "4.4.2 host {host}[{ip}] refused RSET: {}",
                    reply.one_line()
                )));
            }
            ClientEvent::StartTls { discarded } => {
                if discarded > 0 {
                    tracing::info!(host, %ip, discarded, "discarded what the next hop sent after its STARTTLS reply");
                }
                starttls(conn, target, cx).await?;
                let tls = conn.tls.as_ref().expect("set by the handshake");
                if let Err(step) = after_handshake(target.level, tls.certificate) {
                    record.certificate_expired = tls.expired;
                    // The EHLO queued by tls_started is followed by nothing: say QUIT instead.
                    let _ = conn.client.take_output();
                    let _ = timeout(d.command, conn.stream.write(b"QUIT\r\n")).await;
                    return Err(step.into());
                }
            }
            ClientEvent::Done(outcome) => {
                if verdict.is_some() || !conn.client.reusable() {
                    // The QUIT (if any); whether it arrives does not change the outcome.
                    let quit = conn.client.take_output();
                    let _ = timeout(
                        d.command.min(Duration::from_secs(5)),
                        conn.stream.write(&quit),
                    )
                    .await;
                }
                conn.uses += 1;
                return match verdict {
                    Some(step) => Err(step),
                    None => Ok(outcome),
                };
            }
        }
    }
}

/// Writes the STARTTLS command's leftovers, runs the handshake under the command deadline and
/// records how it went.
async fn starttls(conn: &mut Connection, target: &Target, cx: &Context<'_>) -> Result<(), Stop> {
    let d = cx.deadlines;
    let ip = target.addr.ip().to_string();
    let output = conn.client.take_output();
    if let Err(e) = write(&mut conn.stream, &output, d.command, conn.session_end).await {
        return Err(Stop::defer(format!(
            "4.4.2 lost connection with {}[{ip}]: {e}",
            target.host
        )));
    }
    let Stream::Plain(tcp) = std::mem::replace(&mut conn.stream, Stream::Gone) else {
        unreachable!("STARTTLS twice")
    };
    let high_only = target.level.requires_tls() && target.strength == CipherStrength::High;
    let provider = Arc::new(postern_tls::suites::provider(high_only, false));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("TLS 1.2 and 1.3 are supported")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert::new()))
        .with_no_client_auth();
    let Ok(name) = ServerName::try_from(target.host.clone()) else {
        return Err(after_handshake_failure(target.level).into());
    };
    let handshake = timeout_at(
        (Instant::now() + d.command).min(conn.session_end),
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name.clone(), tcp),
    )
    .await;
    let Ok(Ok(tls)) = handshake else {
        return Err(after_handshake_failure(target.level).into());
    };
    let (_, session) = tls.get_ref();
    let suite = session.negotiated_cipher_suite().map(|s| s.suite());
    let judged = judge_server_chain(
        session.peer_certificates(),
        cx.trust,
        &name,
        UnixTime::now(),
    );
    conn.tls = Some(TlsInfo {
        version: session
            .protocol_version()
            .map_or("unknown", postern_tls::suites::iana_version),
        cipher: suite.map_or("unknown", postern_tls::suites::iana_suite),
        key_exchange: session
            .negotiated_key_exchange_group()
            .map_or("unknown", |g| postern_tls::suites::iana_group(g.name())),
        certificate: judged.certificate,
        expired: judged.expired,
    });
    conn.stream = Stream::Tls(Box::new(tls));
    conn.client.tls_started();
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("{0}")]
    Io(std::io::Error),
    #[error("timed out")]
    TimedOut,
}

/// Writes `bytes` in pieces, each of which must be taken within `per_write` (a next hop that
/// stops reading is given up on, one that reads slowly is not), and all before `end`.
async fn write(
    stream: &mut Stream,
    bytes: &[u8],
    per_write: Duration,
    end: Instant,
) -> Result<(), WriteError> {
    for piece in bytes.chunks(64 * 1024) {
        let deadline = (Instant::now() + per_write).min(end);
        match timeout_at(deadline, stream.write(piece)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(WriteError::Io(e)),
            Err(_) => return Err(WriteError::TimedOut),
        }
    }
    Ok(())
}

/// Goes on with the transaction, unless the message needs SMTPUTF8 and the next hop does not
/// offer it: then every recipient bounces (PRODUCT.md 4; no downgrade exists).
fn proceed(
    client: &mut Client,
    envelope: &Envelope,
    extensions: &postern_smtp::Extensions,
    host: &str,
    ip: &str,
) {
    if envelope.smtputf8 && !extensions.smtputf8 {
        client.quit(Reply::new(
            554,
            format!("5.6.7 SMTPUTF8 is required, but was not offered by host {host}[{ip}]"),
        ));
    } else {
        client.proceed();
    }
}
