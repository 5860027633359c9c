//! What the lab asks of a real MTA, whichever it is: how it sends to Postern for one
//! recipient domain (a client profile), how it listens as a next hop (a server profile), and
//! what its own log says happened to one message.

use std::path::Path;
use std::time::{Duration, Instant};

use super::pki::Files;

/// How a sending MTA treats TLS towards Postern, as its operator would configure it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientTls {
    /// Never STARTTLS (Postfix `none`, Exim `hosts_avoid_tls`).
    Never,
    /// Opportunistic (Postfix `may`, Exim's default).
    May,
    /// Opportunistic, TLS 1.2 at most.
    MayTls12,
    /// TLS required, TLS 1.2 with AES-128-GCM only (a peer without 256-bit suites).
    RequireAes128,
}

/// One way of sending: mail to `domain` leaves the MTA from `bind_ip` with these TLS settings.
#[derive(Clone, Debug)]
pub struct ClientProfile {
    /// A short name, unique per MTA (a transport or log name).
    pub name: String,
    pub domain: String,
    pub bind_ip: String,
    pub tls: ClientTls,
    pub cert: Option<Files>,
}

/// What a next hop does about STARTTLS on one listening port.
#[derive(Clone, Debug)]
pub enum ServerTls {
    Offer(Files),
    /// Offered, TLS 1.2 at most.
    Tls12(Files),
    NotOffered,
    /// Advertised, but no certificate can be loaded: Exim answers STARTTLS with
    /// `454 TLS currently unavailable`, Postfix's smtpd with 220 and a failed handshake.
    NoCertificate,
}

#[derive(Clone, Debug)]
pub struct ServerProfile {
    pub name: String,
    pub port: u16,
    pub tls: ServerTls,
}

/// What a sending MTA's log says about one message to one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Delivered; the next hop's reply (Postern's `250 ... queued as <ID>`).
    Sent(String),
    /// Deferred or bounced, with the MTA's account of why (it quotes the reply it got).
    Deferred(String),
    Bounced(String),
}

impl Fate {
    pub fn text(&self) -> &str {
        match self {
            Fate::Sent(t) | Fate::Deferred(t) | Fate::Bounced(t) => t,
        }
    }
}

/// How one message arrived at a next hop, from that MTA's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// `TLSv1.3`, `TLSv1.2`, or `None` in plaintext.
    pub tls: Option<String>,
    pub line: String,
}

/// The queue id in a `250` reply: Postern's and Postfix's `queued as <ID>`, Exim's `id=<ID>`.
pub fn queue_id(reply: &str) -> String {
    let after = reply
        .split("queued as ")
        .nth(1)
        .or_else(|| reply.split("id=").nth(1));
    let id = after
        .unwrap_or("")
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '-');
    id.into_iter().next().unwrap_or("").to_string()
}

/// Reads a log file (missing means empty).
pub fn read_log(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// Polls `check` every 100 ms until it returns `Some` or `timeout` passes; `None` then (the
/// caller turns that into a failed cell rather than a panic, so the suite goes on).
pub async fn poll<T>(timeout: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The TLS version in an MTA's wording (`TLSv1.3`, `TLS1.3`, `TLS1.2:...`), as `TLSv1.x`.
pub fn tls_version(text: &str) -> Option<String> {
    ["1.3", "1.2"].iter().find_map(|v| {
        (text.contains(&format!("TLSv{v}")) || text.contains(&format!("TLS{v}")))
            .then(|| format!("TLSv{v}"))
    })
}

/// Runs a command to its end; panics with its output unless it succeeds.
pub fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}
