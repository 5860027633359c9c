//! The inbound SMTP listener (docs/src/policy.md#inbound, policy.md#relay-control, smtp.md):
//! accepts connections within the session
//! limits, runs each session on the policy version current when it connected, and on shutdown
//! stops accepting and gives sessions in flight a grace period.

mod conn;
mod headers;
pub mod proxy;
mod received;
mod refusals;
mod report;
mod session;
mod tls;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use tls::TlsConfigs;

use crate::metrics::{Metrics, session as outcome};
use crate::outbox::Outbox;
use crate::policy::PolicyStore;
use crate::spool::Spool;

/// The SMTP server's limits from `/v1/settings`, whose defaults are the only ones.
pub fn smtp_limits(s: &postern_policy::SmtpLimits) -> postern_smtp::Limits {
    postern_smtp::Limits {
        max_command_line: s.max_command_line as usize,
        max_line: s.max_line as usize,
        max_message_size: s.max_message_size,
        max_header_size: s.max_header_size,
        max_recipients: s.max_recipients,
        max_hard_errors: s.max_hard_errors,
        max_commands_before_mail: s.max_commands_before_mail,
        max_received_headers: s.max_received_headers,
    }
}

pub const NO_POLICY: &str = "421 4.3.2 Service not available: no policy\r\n";

/// What every session shares.
pub struct Inbound {
    pub policy: Arc<PolicyStore>,
    pub spool: Spool,
    pub hostname: String,
    pub tls: TlsConfigs,
    /// Tells the delivery queue about each message queued.
    pub queued: tokio::sync::mpsc::UnboundedSender<String>,
    pub outbox: Arc<Outbox>,
    /// Networks whose connections start with a PROXY protocol header (empty: off).
    pub proxy_protocol_from: Vec<ipnet::IpNet>,
    sessions: Mutex<HashMap<IpAddr, u32>>,
    refusals: refusals::Refusals,
}

impl Inbound {
    pub fn new(
        policy: Arc<PolicyStore>,
        spool: Spool,
        hostname: String,
        tls: TlsConfigs,
        queued: tokio::sync::mpsc::UnboundedSender<String>,
        outbox: Arc<Outbox>,
        proxy_protocol_from: Vec<ipnet::IpNet>,
    ) -> Arc<Inbound> {
        Arc::new(Inbound {
            policy,
            spool,
            hostname,
            tls,
            queued,
            outbox,
            proxy_protocol_from,
            sessions: Mutex::default(),
            refusals: Default::default(),
        })
    }
}

/// Releases a session's place in the concurrency counts when it ends.
struct Place<'a> {
    inbound: &'a Inbound,
    ip: IpAddr,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.inbound.metrics().sessions_active.dec();
        let mut sessions = self.inbound.sessions.lock().expect("sessions lock");
        if let Some(n) = sessions.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                sessions.remove(&self.ip);
            }
        }
    }
}

impl Inbound {
    fn metrics(&self) -> &Metrics {
        &self.policy.metrics
    }

    /// Takes a place for a session from `ip`, within the overall and per-IP limits.
    fn place(&self, ip: IpAddr, max: u32, max_per_ip: u32) -> Option<Place<'_>> {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        let total: u32 = sessions.values().sum();
        let mine = sessions.get(&ip).copied().unwrap_or(0);
        if total >= max || mine >= max_per_ip {
            return None;
        }
        *sessions.entry(ip).or_insert(0) += 1;
        self.metrics().sessions_active.inc();
        Some(Place { inbound: self, ip })
    }
}

pub async fn serve(
    listener: TcpListener,
    inbound: Arc<Inbound>,
    mut draining: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut sessions = JoinSet::new();
    let mut drained = false;
    tokio::spawn(report_refusals(inbound.clone(), shutdown.clone()));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => break,
            _ = draining.wait_for(|d| *d) => {
                drained = true;
                break;
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
        };
        match accepted {
            Ok((stream, peer)) => {
                sessions.spawn(connection(stream, peer, inbound.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "SMTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // SIGTERM: no new sessions (the listener closes, so connections are refused rather than
    // left in the backlog); those in flight get the grace period, then are abandoned (a
    // message without its 250 is simply not kept).
    drop(listener);
    if drained {
        // Drained: senders are refused and try another worker or MX; the sessions in flight
        // finish as usual, and the process waits for its SIGTERM.
        tokio::select! {
            _ = async { while sessions.join_next().await.is_some() {} } => {}
            _ = shutdown.wait_for(|s| *s) => {}
        }
        let _ = shutdown.wait_for(|s| *s).await;
    }
    shutdown_sessions(&inbound, sessions).await;
}

/// Gives the sessions in flight the grace period, then abandons them.
async fn shutdown_sessions(inbound: &Inbound, mut sessions: JoinSet<()>) {
    let grace = inbound
        .policy
        .current()
        .map_or(30, |p| p.settings.smtp.shutdown_grace_s);
    let _ = tokio::time::timeout(Duration::from_secs(grace.into()), async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    sessions.shutdown().await;
}

async fn connection(mut stream: TcpStream, peer: SocketAddr, inbound: Arc<Inbound>) {
    // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; rules and limits want IPv4.
    let mut ip = peer.ip().to_canonical();
    let mut early = Vec::new();
    if !inbound.proxy_protocol_from.is_empty() {
        let from = &inbound.proxy_protocol_from;
        match proxy::read_header(&mut stream, peer, from, proxy::HEADER_TIMEOUT).await {
            Ok(proxied) => (ip, early) = (proxied.client, proxied.early),
            Err(e) => {
                // No greeting: whoever this is does not speak for a client.
                tracing::warn!(peer = %peer, error = %e, "connection closed");
                inbound.metrics().session_ended(outcome::PROXY_REFUSED);
                let _ = stream.shutdown().await;
                return;
            }
        }
    }
    let Some(policy) = inbound.policy.current() else {
        inbound.metrics().session_ended(outcome::REFUSED_NO_POLICY);
        let _ = stream.write_all(NO_POLICY.as_bytes()).await;
        let _ = stream.shutdown().await;
        refused(&inbound, ip, 0, NO_POLICY);
        return;
    };
    let limits = &policy.settings.smtp;
    let Some(_place) = inbound.place(ip, limits.max_sessions, limits.max_sessions_per_ip) else {
        inbound.metrics().session_ended(outcome::REFUSED_LIMIT);
        let reply = postern_smtp::Reply::too_many_connections(&inbound.hostname);
        let _ = stream.write_all(&reply.to_bytes()).await;
        let _ = stream.shutdown().await;
        refused(&inbound, ip, policy.version, &reply.to_string());
        return;
    };
    let outcome = match session::run(stream, ip, early, &inbound, policy).await {
        Ok(outcome) => outcome,
        Err(e) => {
            tracing::debug!(%ip, error = %e, "SMTP session ended with an error");
            outcome::ERROR
        }
    };
    inbound.metrics().session_ended(outcome);
}

/// Tracks a connection refused before its session began (counted per source and minute).
fn refused(inbound: &Inbound, ip: IpAddr, version: u64, reply: &str) {
    let now = postern_time::now_ms();
    for (version, event) in inbound.refusals.refused(ip, version, reply, now) {
        inbound.outbox.emit(version, event);
    }
}

/// How often the refusal counts that grew are reported.
const REFUSALS_EVERY: Duration = Duration::from_secs(5);

async fn report_refusals(inbound: Arc<Inbound>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let stop = tokio::select! {
            _ = tokio::time::sleep(REFUSALS_EVERY) => false,
            _ = shutdown.wait_for(|s| *s) => true,
        };
        for (version, event) in inbound.refusals.flush(postern_time::now_ms()) {
            inbound.outbox.emit(version, event);
        }
        if stop {
            return;
        }
    }
}
