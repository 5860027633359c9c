//! Runs the SMTP client over one connection until its transaction ends (the shape of
//! mini-redis's `Handler`: a short `run` hands each client event to its own method). Every read
//! and write is under its step's deadline and the session's; the TLS verdicts of the plan's
//! level are asked at each step, and a verdict that ends the attempt says QUIT first.

use std::sync::Arc;
use std::time::Duration;

use postern_policy::{
    CipherStrength, TlsStep, after_ehlo, after_handshake, after_handshake_failure,
    after_starttls_refused,
};
use postern_smtp::{Client, ClientEvent, Envelope, Extensions, Outcome, Reply};
use postern_tls::servercert::{AcceptAnyServerCert, judge_server_chain};
use rustls::pki_types::{ServerName, UnixTime};
use tokio::time::{Instant, timeout, timeout_at};

use super::connection::{Connection, Stream, Target, TlsInfo, WriteError, write};
use super::deliver::{Attempt, Context, Stop};

/// One transaction's conversation.
pub(super) struct Driver<'a, 'c> {
    pub(super) conn: &'a mut Connection,
    pub(super) target: &'a Target,
    pub(super) cx: &'a Context<'c>,
    pub(super) envelope: &'a Envelope,
    /// The `may` fallback's connection: no STARTTLS.
    pub(super) plaintext_only: bool,
    pub(super) record: &'a mut Attempt,
    /// Set when the TLS policy ends the attempt: the result once the QUIT is out.
    verdict: Option<Stop>,
    /// The reply being waited for, counted by replies parsed, and its deadline.
    waiting: Option<(u64, Instant)>,
}

impl<'a, 'c> Driver<'a, 'c> {
    pub(super) fn new(
        conn: &'a mut Connection,
        target: &'a Target,
        cx: &'a Context<'c>,
        envelope: &'a Envelope,
        plaintext_only: bool,
        record: &'a mut Attempt,
    ) -> Self {
        Driver {
            conn,
            target,
            cx,
            envelope,
            plaintext_only,
            record,
            verdict: None,
            waiting: None,
        }
    }

    pub(super) async fn run(mut self) -> Result<Outcome, Stop> {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match self.conn.client.poll() {
                ClientEvent::NeedInput => self.exchange(&mut buf).await?,
                ClientEvent::Greeted { extensions, tls } => self.greeted(&extensions, tls),
                ClientEvent::StartTlsRefused(reply) => self.starttls_refused(&reply),
                ClientEvent::ResetRefused(reply) => {
                    self.conn.reset_refused = true;
                    let (host, ip) = self.peer();
                    return Err(Stop::defer(format!(
                        "4.4.2 host {host}[{ip}] refused RSET: {}",
                        reply.one_line()
                    )));
                }
                ClientEvent::StartTls { discarded } => self.starttls(discarded).await?,
                ClientEvent::Done(outcome) => return self.done(outcome).await,
            }
        }
    }

    fn peer(&self) -> (String, String) {
        (self.target.host.clone(), self.record.ip.clone())
    }

    fn failed(&self, why: &str) -> Stop {
        let (host, ip) = self.peer();
        Stop::defer(format!(
            "4.4.2 conversation with {host}[{ip}] {why} while {}",
            self.conn.client.stage()
        ))
    }

    fn lost(&self, e: &dyn std::fmt::Display) -> Stop {
        let (host, ip) = self.peer();
        Stop::defer(format!("4.4.2 lost connection with {host}[{ip}]: {e}"))
    }

    /// The policy's verdict, when it ended the attempt, wins over what failed after it (a next
    /// hop that closes after refusing STARTTLS fails the QUIT that follows).
    fn stop(&mut self, otherwise: impl FnOnce(&Self) -> Stop) -> Stop {
        match self.verdict.take() {
            Some(v) => v,
            None => otherwise(self),
        }
    }

    /// Writes what the client has to say, then reads until it has more to work on.
    async fn exchange(&mut self, buf: &mut [u8]) -> Result<(), Stop> {
        let d = self.cx.deadlines;
        let body = self.conn.client.sending_body();
        let output = self.conn.client.take_output();
        if !output.is_empty() {
            let per_write = if body { d.data } else { d.command };
            match write(
                &mut self.conn.stream,
                &output,
                per_write,
                self.conn.session_end,
            )
            .await
            {
                Ok(()) => self.waiting = None,
                Err(WriteError::Io(e)) => return Err(self.stop(|s| s.lost(&e))),
                Err(WriteError::TimedOut) if body => {
                    return Err(self.stop(|s| {
                        let (host, ip) = s.peer();
                        Stop::defer(format!(
                            "4.4.2 conversation with {host}[{ip}] timed out while sending message body"
                        ))
                    }));
                }
                Err(WriteError::TimedOut) => return Err(self.stop(|s| s.failed("timed out"))),
            }
        }
        let deadline = self.reply_deadline();
        let session_expires = self.conn.session_end <= deadline;
        let read = timeout_at(
            deadline.min(self.conn.session_end),
            self.conn.stream.read(buf),
        )
        .await;
        match read {
            Ok(Ok(0)) => Err(self.stop(|s| s.lost(&"connection closed"))),
            Ok(Ok(n)) => {
                self.conn.client.receive(&buf[..n]);
                Ok(())
            }
            Ok(Err(e)) => Err(self.stop(|s| s.lost(&e))),
            Err(_) if session_expires => {
                Err(self.stop(|s| s.failed("exceeded the session time limit")))
            }
            Err(_) => Err(self.stop(|s| s.failed("timed out"))),
        }
    }

    /// The deadline of the reply being waited for: the greeting's or a command's, from when
    /// the wait for it began.
    fn reply_deadline(&mut self) -> Instant {
        let d = self.cx.deadlines;
        let replies = self.conn.client.replies();
        match self.waiting {
            Some((seen, at)) if seen == replies => at,
            _ => {
                let stage = self.conn.client.stage();
                let greeting = stage.contains("greeting") || stage.contains("EHLO");
                let at = Instant::now() + if greeting { d.greeting } else { d.command };
                self.waiting = Some((replies, at));
                at
            }
        }
    }

    fn greeted(&mut self, extensions: &Extensions, tls: bool) {
        self.record.greeted = true;
        let (host, ip) = self.peer();
        if tls {
            return proceed(&mut self.conn.client, self.envelope, extensions, &host, &ip);
        }
        let step = if self.plaintext_only {
            TlsStep::Plain
        } else {
            after_ehlo(self.target.level, extensions.starttls, &host, &ip)
        };
        match step {
            TlsStep::StartTls => self.conn.client.start_tls(),
            TlsStep::Plain => proceed(&mut self.conn.client, self.envelope, extensions, &host, &ip),
            other => self.end_by_policy(other),
        }
    }

    fn starttls_refused(&mut self, reply: &Reply) {
        self.record.starttls_refused = true;
        let (host, ip) = self.peer();
        let step = after_starttls_refused(self.target.level, &host, &ip, &reply.one_line());
        self.end_by_policy(step);
    }

    /// QUIT, then the verdict (a deferral, or the `may` fallback).
    fn end_by_policy(&mut self, step: TlsStep) {
        self.conn.client.quit(Reply::new(450, "4.7.0 TLS policy"));
        self.verdict = Some(step.into());
    }

    async fn starttls(&mut self, discarded: usize) -> Result<(), Stop> {
        if discarded > 0 {
            let (host, ip) = self.peer();
            tracing::info!(%host, %ip, discarded, "discarded what the next hop sent after its STARTTLS reply");
        }
        handshake(self.conn, self.target, self.cx).await?;
        let certificate = self
            .conn
            .tls
            .as_ref()
            .expect("set by the handshake")
            .certificate;
        self.record.certificate = Some(certificate);
        if let Err(step) = after_handshake(self.target.level, certificate) {
            // The EHLO queued by tls_started is followed by nothing: say QUIT instead.
            let _ = self.conn.client.take_output();
            let command = self.cx.deadlines.command;
            let _ = timeout(command, self.conn.stream.write(b"QUIT\r\n")).await;
            return Err(step.into());
        }
        Ok(())
    }

    async fn done(self, outcome: Outcome) -> Result<Outcome, Stop> {
        if self.verdict.is_some() || !self.conn.client.reusable() {
            // The QUIT (if any); whether it arrives does not change the outcome.
            let quit = self.conn.client.take_output();
            let limit = self.cx.deadlines.command.min(Duration::from_secs(5));
            let _ = timeout(limit, self.conn.stream.write(&quit)).await;
        }
        self.conn.uses += 1;
        match self.verdict {
            Some(step) => Err(step),
            None => Ok(outcome),
        }
    }
}

/// Writes the STARTTLS command's leftovers, runs the handshake under the command deadline and
/// records how it went.
async fn handshake(conn: &mut Connection, target: &Target, cx: &Context<'_>) -> Result<(), Stop> {
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
        certificate: judged,
    });
    conn.stream = Stream::Tls(Box::new(tls));
    conn.client.tls_started();
    Ok(())
}

/// Goes on with the transaction, unless the message needs SMTPUTF8 and the next hop does not
/// offer it: then every recipient bounces (docs/src/smtp.md; no downgrade exists).
fn proceed(
    client: &mut Client,
    envelope: &Envelope,
    extensions: &Extensions,
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
