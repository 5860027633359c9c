//! One delivery attempt to one next-hop address, under one outbound decision (PRODUCT.md 2.3):
//! the shell around `postern_smtp::Client`. It owns the socket, the STARTTLS handshake (suites
//! by strength, any certificate accepted during the handshake, judged afterwards), the `may`
//! fallback to a new plaintext connection, and the timeouts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use postern_policy::{CipherStrength, Level};
use postern_smtp::{Client, ClientEvent, Envelope, Outcome, Reply};
use postern_tls::servercert::{AcceptAnyServerCert, ServerCertStatus, check_server_chain};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::tls_steps::{
    Step, after_ehlo, after_handshake, after_handshake_failure, after_starttls_refused,
};

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

/// How the attempt travelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    pub version: &'static str,
    pub cipher: &'static str,
    pub key_exchange: &'static str,
    pub certificate: ServerCertStatus,
}

/// The record of one attempt (PRODUCT.md 5: host, IP, TLS, reply and reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub host: String,
    pub ip: String,
    pub tls: Option<TlsInfo>,
    /// A `may` delivery that fell back to plaintext.
    pub tls_fallback: bool,
    /// Per recipient: the server's reply, or our deferral (code 4xx) when TLS failed.
    pub outcome: Outcome,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Gone,
}

impl Stream {
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

fn deferred(envelope: &Envelope, text: &str) -> Outcome {
    let reply = Reply::new(450, text);
    Outcome {
        recipients: envelope
            .recipients
            .iter()
            .map(|r| (r.clone(), reply.clone()))
            .collect(),
        session: Some(reply),
    }
}

/// Delivers `message` to `target`. Never fails: whatever happens is in the returned outcome.
pub async fn attempt(
    target: &Target,
    helo: &str,
    envelope: &Envelope,
    message: &[u8],
    trust: &[CertificateDer<'static>],
    timeout: Duration,
) -> Attempt {
    let ip = target.addr.ip().to_string();
    let mut record = Attempt {
        host: target.host.clone(),
        ip: ip.clone(),
        tls: None,
        tls_fallback: false,
        outcome: deferred(envelope, "4.4.0 not attempted"),
    };
    // `may` may need a second, plaintext connection after a TLS failure.
    for plaintext_only in [false, true] {
        match session(
            target,
            helo,
            envelope,
            message,
            trust,
            timeout,
            plaintext_only,
            &mut record,
        )
        .await
        {
            Ok(outcome) => {
                record.outcome = outcome;
                return record;
            }
            Err(Step::FallbackPlain) if !plaintext_only => {
                record.tls_fallback = true;
                record.tls = None;
            }
            Err(Step::Defer(text)) => {
                record.outcome = deferred(envelope, &text);
                return record;
            }
            Err(_) => break,
        }
    }
    record.outcome = deferred(envelope, "4.4.0 delivery could not be completed");
    record
}

#[allow(clippy::too_many_arguments)]
async fn session(
    target: &Target,
    helo: &str,
    envelope: &Envelope,
    message: &[u8],
    trust: &[CertificateDer<'static>],
    timeout: Duration,
    plaintext_only: bool,
    record: &mut Attempt,
) -> Result<Outcome, Step> {
    let (host, ip) = (target.host.as_str(), record.ip.clone());
    let connect = tokio::time::timeout(timeout, TcpStream::connect(target.addr)).await;
    let tcp = match connect {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            return Err(Step::Defer(format!(
                "4.4.1 connect to {host}[{ip}]:{}: {e}",
                target.addr.port()
            )));
        }
        Err(_) => {
            return Err(Step::Defer(format!(
                "4.4.1 connect to {host}[{ip}]:{}: timed out",
                target.addr.port()
            )));
        }
    };
    let _ = tcp.set_nodelay(true);
    let mut stream = Stream::Plain(tcp);
    let mut client = Client::new(helo, envelope.clone(), message.to_vec());
    let mut buf = vec![0u8; 16 * 1024];
    // Set when the TLS policy ends the attempt: the client says QUIT, then this is the result.
    let mut verdict: Option<Step> = None;
    let lost = |e: &dyn std::fmt::Display| {
        Step::Defer(format!("4.4.2 lost connection with {host}[{ip}]: {e}"))
    };
    loop {
        match client.poll() {
            ClientEvent::NeedInput => {
                // A next hop that closes after refusing STARTTLS fails the QUIT that follows;
                // the refusal, not the write error, is then the reason.
                if let Err(e) = stream.write(&client.take_output()).await {
                    return Err(verdict.unwrap_or_else(|| lost(&e)));
                }
                match tokio::time::timeout(timeout, stream.read(&mut buf)).await {
                    Ok(Ok(0)) => return Err(verdict.unwrap_or_else(|| lost(&"connection closed"))),
                    Ok(Ok(n)) => client.receive(&buf[..n]),
                    Ok(Err(e)) => return Err(verdict.unwrap_or_else(|| lost(&e))),
                    Err(_) => return Err(verdict.unwrap_or_else(|| lost(&"timed out"))),
                }
            }
            ClientEvent::Greeted {
                extensions,
                tls: true,
            } => proceed(&mut client, envelope, &extensions, host, &ip),
            ClientEvent::Greeted {
                extensions,
                tls: false,
            } => {
                let step = if plaintext_only {
                    Step::Plain
                } else {
                    after_ehlo(target.level, extensions.starttls, host, &ip)
                };
                match step {
                    Step::StartTls => client.start_tls(),
                    Step::Plain => proceed(&mut client, envelope, &extensions, host, &ip),
                    other => {
                        client.quit(Reply::new(450, "4.7.0 TLS policy"));
                        verdict = Some(other);
                    }
                }
            }
            ClientEvent::StartTlsRefused(reply) => {
                let step = after_starttls_refused(target.level, host, &ip, &reply);
                client.quit(Reply::new(450, "4.7.0 TLS policy"));
                verdict = Some(step);
            }
            ClientEvent::StartTls { discarded } => {
                if discarded > 0 {
                    tracing::info!(host, %ip, discarded, "discarded what the next hop sent after its STARTTLS reply");
                }
                stream
                    .write(&client.take_output())
                    .await
                    .map_err(|e| lost(&e))?;
                let Stream::Plain(tcp) = std::mem::replace(&mut stream, Stream::Gone) else {
                    unreachable!("STARTTLS twice")
                };
                let high_only =
                    target.level.requires_tls() && target.strength == CipherStrength::High;
                let provider = Arc::new(postern_tls::suites::provider(high_only, false));
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                    .expect("TLS 1.2 and 1.3 are supported")
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert::new()))
                    .with_no_client_auth();
                let Ok(name) = ServerName::try_from(target.host.clone()) else {
                    return Err(after_handshake_failure(target.level));
                };
                let handshake = tokio::time::timeout(
                    timeout,
                    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name.clone(), tcp),
                )
                .await;
                let Ok(Ok(tls)) = handshake else {
                    return Err(after_handshake_failure(target.level));
                };
                let (_, conn) = tls.get_ref();
                let suite = conn.negotiated_cipher_suite().map(|s| s.suite());
                let certificate = check_server_chain(conn.peer_certificates(), trust, &name);
                record.tls = Some(TlsInfo {
                    version: conn
                        .protocol_version()
                        .map_or("unknown", postern_tls::suites::iana_version),
                    cipher: suite.map_or("unknown", postern_tls::suites::iana_suite),
                    key_exchange: conn
                        .negotiated_key_exchange_group()
                        .map_or("unknown", |g| postern_tls::suites::iana_group(g.name())),
                    certificate,
                });
                stream = Stream::Tls(Box::new(tls));
                client.tls_started();
                if let Err(step) = after_handshake(target.level, certificate) {
                    // The EHLO queued by tls_started is followed by nothing: say QUIT instead.
                    let _ = client.take_output();
                    let _ = stream.write(b"QUIT\r\n").await;
                    return Err(step);
                }
            }
            ClientEvent::Done(outcome) => {
                let _ = stream.write(&client.take_output()).await;
                return match verdict {
                    Some(step) => Err(step),
                    None => Ok(outcome),
                };
            }
        }
    }
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
