//! One delivery attempt to one next-hop address, under one outbound decision
//! (docs/src/policy.md#outbound):
//! a cached connection first, else a new one (`drive.rs` runs the conversation), then the
//! `may` fallback to a new plaintext connection; the connection goes back to the pool when it
//! ended its transaction cleanly. Never fails: whatever happened is in the returned `Attempt`.

use std::sync::Arc;

use postern_policy::{AttemptFacts, Certificate, TlsStep, Violation};
use postern_smtp::{Client, Envelope, Outcome, Reply};
use rustls::pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use super::connection::{Connection, Stream};
pub use super::connection::{Deadlines, Target, TlsInfo};
use super::drive::Driver;
use super::pool::{Pool, PoolKey};

/// Why an attempt stopped before its transaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Stop {
    /// The `may` fallback: a new plaintext connection to the same host.
    FallbackPlain,
    /// Deferred, by the TLS policy (with its verdict's kind) or for a reason of our own.
    Defer {
        reply: Reply,
        violation: Option<Violation>,
    },
}

impl Stop {
    /// Deferred for a reason of our own, written as the reply's text.
    pub(super) fn defer(text: String) -> Stop {
        Stop::Defer {
            reply: Reply::new(450, text),
            violation: None,
        }
    }
}

/// A TLS verdict that ends the attempt (`StartTls` and `Plain` go on, and never get here).
impl From<TlsStep> for Stop {
    fn from(step: TlsStep) -> Stop {
        match step {
            TlsStep::Defer(d) => Stop::Defer {
                reply: d.reply(),
                violation: Some(d.violation),
            },
            TlsStep::FallbackPlain => Stop::FallbackPlain,
            TlsStep::StartTls | TlsStep::Plain => Stop::defer("4.4.0 TLS step out of order".into()),
        }
    }
}

/// The record of one attempt (docs/src/tracking.md: host, IP, TLS, reply and reason).
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
    /// How the server's certificate was judged, whenever a handshake completed (also when the
    /// policy then deferred for it, and the attempt kept no TLS).
    pub certificate: Option<Certificate>,
    /// The server answered STARTTLS with an error (a `may` fallback is then its doing).
    pub starttls_refused: bool,
}

fn deferred(envelope: &Envelope, reply: Reply) -> Outcome {
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
        outcome: deferred(envelope, Reply::new(450, "4.4.0 not attempted")),
        violation: None,
        local_ip: None,
        certificate: None,
        starttls_refused: false,
    };
    let key = PoolKey::new(target, cx.generation);
    if reuse(target, cx, envelope, &message, &key, &mut record).await {
        return record;
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
    record.outcome = deferred(
        envelope,
        Reply::new(450, "4.4.0 delivery could not be completed"),
    );
    record
}

/// Delivers over a cached connection, if one is waiting; whether the attempt is over. One that
/// fails before RSET is answered is not counted against the message, which goes on over a new
/// connection.
async fn reuse(
    target: &Target,
    cx: &Context<'_>,
    envelope: &Envelope,
    message: &Arc<[u8]>,
    key: &PoolKey,
    record: &mut Attempt,
) -> bool {
    while let Some(mut conn) = cx.pool.and_then(|p| p.take(key)) {
        if envelope.smtputf8 && !conn.client.extensions().smtputf8 {
            // A new session says why this next hop cannot take the message (no downgrade).
            finish(conn, cx, key.clone());
            return false;
        }
        conn.client.reset(envelope.clone(), message.clone());
        record.local_ip = conn.stream.local_ip();
        record.certificate = conn.tls.as_ref().map(|t| t.certificate);
        let before = conn.client.replies();
        match Driver::new(&mut conn, target, cx, envelope, false, record)
            .run()
            .await
        {
            Ok(outcome) => {
                record.greeted = true;
                record.reused = true;
                record.tls = conn.tls.clone();
                record.outcome = outcome;
                finish(conn, cx, key.clone());
                return true;
            }
            Err(_) if conn.client.replies() == before || conn.reset_refused => {
                record.certificate = None;
                tracing::debug!(host = %target.host, ip = %record.ip, "a cached connection failed; opening a new one");
            }
            Err(stop) => {
                record.greeted = true;
                record.reused = true;
                stopped(record, stop, envelope);
                return true;
            }
        }
    }
    false
}

fn stopped(record: &mut Attempt, stop: Stop, envelope: &Envelope) {
    match stop {
        Stop::Defer { reply, violation } => {
            record.outcome = deferred(envelope, reply);
            record.violation = violation;
        }
        Stop::FallbackPlain => {
            record.outcome = deferred(
                envelope,
                Reply::new(450, "4.4.0 delivery could not be completed"),
            )
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
    let outcome = Driver::new(&mut conn, target, cx, envelope, plaintext_only, record)
        .run()
        .await?;
    record.tls = conn.tls.clone();
    Ok((outcome, conn))
}

impl Attempt {
    /// What the delivery plan judges.
    pub fn facts(&self) -> AttemptFacts<'_> {
        AttemptFacts {
            host: &self.host,
            greeted: self.greeted,
            reused: self.reused,
            // The verdict counts when the transaction ran in TLS, or when the policy deferred
            // for the certificate; an attempt lost after its handshake is judged as plaintext
            // (as before the delivery plan).
            certificate: self
                .tls
                .as_ref()
                .map(|t| t.certificate)
                .or(self.certificate.filter(|_| {
                    matches!(
                        self.violation,
                        Some(Violation::CertificateNotTrusted | Violation::CertificateNotVerified)
                    )
                })),
            violation: self.violation,
            fallback: self.tls_fallback,
            starttls_refused: self.starttls_refused,
        }
    }
}
