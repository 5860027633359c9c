//! The tracking event catalogue (docs/src/tracking.md): what a worker reports of every connection,
//! message and delivery attempt. Typed, one struct per kind (no log strings), pure data: the
//! worker makes them, `postern-proto` carries them, the control plane indexes them.

#![forbid(unsafe_code)]

mod bound;

pub use bound::{
    EVENT as MAX_EVENT_TEXT, NAME as MAX_NAME, REPORT as MAX_REPORT, TEXT as MAX_TEXT,
};
use serde::{Deserialize, Serialize};

/// How a certificate was judged, and the kind of a TLS policy violation: the policy's own
/// types, so that nothing downstream parses reply text.
pub use postern_policy::{Certificate, Violation};
/// Which entry set an outbound attempt's TLS level: the delivery plan's own type.
pub use postern_policy::{PolicySource, StsApplied};
/// MTA-STS and TLS-RPT's vocabulary, typed (never a string past the wire).
pub use postern_sts::{Mode, MxPattern, ResultType};

/// A TLS session (IANA names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tls {
    pub version: String,
    pub cipher: String,
    pub key_exchange: String,
    /// The peer's certificate: the client's inbound, the server's outbound.
    pub certificate: Certificate,
}

/// Where a message came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub ip: String,
    pub helo: String,
    pub tls: Option<Tls>,
}

/// How a delivery attempt travelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leg {
    pub host: String,
    pub ip: String,
    pub tls: Option<Tls>,
    /// A `may` delivery that fell back to plaintext.
    pub tls_fallback: bool,
}

/// An SMTP session, reported when it ends (or is refused at connect).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// Unique per worker.
    pub session: String,
    pub ip: String,
    /// Unix milliseconds.
    pub started_ms: u64,
    pub helo: Option<String>,
    pub tls: Option<Tls>,
    /// Why a STARTTLS handshake failed.
    pub tls_failure: Option<String>,
    /// The reply that refused the connection (no policy, too many sessions).
    pub refused: Option<String>,
    /// Messages accepted in the session.
    pub messages: u32,
    /// Bytes the client sent in plaintext after its STARTTLS, discarded (an injection attempt,
    /// or a broken pipelining client); 0 when none.
    #[serde(default)]
    pub starttls_leftovers: u64,
    /// For a refused connection: the refusals of this source within its minute that this one
    /// record stands for (a flood is one record a minute, not one per connection).
    #[serde(default)]
    pub refused_count: u32,
}

/// A message accepted (after its 250).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    pub queue_id: String,
    pub session: String,
    pub source: Source,
    pub sender: String,
    pub recipients: Vec<String>,
    pub size: u64,
    /// Decoded (RFC 2047).
    pub subject: Option<String>,
    pub message_id: Option<String>,
}

/// A reply that refused part or all of a transaction. `queue_id` is the tracking id made at
/// MAIL FROM (the queue id if the message is later accepted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    pub queue_id: String,
    pub session: String,
    pub source: Source,
    pub sender: String,
    /// The recipient refused, for a RCPT TO reply.
    pub recipient: Option<String>,
    /// The reply sent, e.g. `530 5.7.0 <a@b.example>: Sender address rejected: Must use TLS`.
    pub reply: String,
    /// Set when the TLS policy refused it.
    pub violation: Option<Violation>,
}

/// One delivery attempt of one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub queue_id: String,
    pub recipient: String,
    /// None when no next hop was reached (no route, say).
    pub leg: Option<Leg>,
    /// The reply, or our own reason.
    pub reply: String,
    /// Set when the TLS policy ended the attempt (`4.7.4`, `4.7.5`).
    pub violation: Option<Violation>,
    /// What set the TLS level (events from before issue 15 have `Default`).
    #[serde(default)]
    pub policy: PolicySource,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deferred {
    pub queue_id: String,
    pub recipient: String,
    pub reason: String,
    /// Set when the TLS policy deferred it.
    pub violation: Option<Violation>,
    /// Unix milliseconds.
    pub next_attempt_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    pub queue_id: String,
    pub recipient: String,
    pub reply: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bounced {
    pub queue_id: String,
    pub recipient: String,
    pub reason: String,
    /// The queue id of the DSN sent; None when none could be (the message was itself a DSN,
    /// so it is dropped).
    pub dsn: Option<String>,
}

/// An operator deleted a queued message (`DELETE /v1/queue/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub queue_id: String,
    pub dsn: bool,
}

/// Bytes a client sent after its STARTTLS line, discarded (a command injection attempt, or a
/// broken client).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartTlsLeftovers {
    pub session: String,
    pub ip: String,
    pub bytes: u64,
}

/// Events the worker's full outbox dropped: `first_seq..=last_seq` of the same epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxGap {
    pub first_seq: u64,
    pub last_seq: u64,
}

/// A worker fetched a recipient domain's MTA-STS policy (RFC 8461): the control plane keeps the
/// newest per domain, for `POST /v1/policy/evaluate` and TLS-RPT reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StsPolicy {
    pub domain: String,
    /// The `_mta-sts` record's id the policy was fetched under.
    pub id: String,
    pub mode: Mode,
    pub max_age: u64,
    pub mx: Vec<MxPattern>,
    /// Unix milliseconds.
    pub fetched_ms: u64,
}

/// One SMTP session to a recipient domain's MX hosts, as TLS-RPT (RFC 8460) counts them: the
/// control plane builds each domain's daily report from these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsSession {
    /// The recipient (policy) domain.
    pub domain: String,
    /// The MTA-STS policy applied: its id, lines as served and mx patterns; `None` for
    /// `no-policy-found` (no policy, a local rule decided, or MTA-STS is off).
    pub sts: Option<SessionPolicy>,
    /// `None` for a success, else why it failed.
    pub result: Option<ResultType>,
    pub sending_ip: Option<String>,
    pub receiving_mx: Option<String>,
    pub receiving_ip: Option<String>,
    /// Unix milliseconds.
    pub at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionPolicy {
    pub id: String,
    /// The policy's lines as served (TLS-RPT's `policy-string`).
    pub lines: Vec<String>,
    pub mx: Vec<MxPattern>,
}

/// A TLS-RPT report about our domains arrived by mail at `settings.reports.receive_address`;
/// the worker took it out of the message (the control plane checks and stores it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsReportReceived {
    pub queue_id: String,
    /// The envelope sender.
    pub sender: String,
    /// The report's JSON.
    pub report: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    Connection(Connection),
    Received(Received),
    Rejected(Rejected),
    Attempt(Attempt),
    Deferred(Deferred),
    Delivered(Delivered),
    Bounced(Bounced),
    Deleted(Deleted),
    StartTlsLeftovers(StartTlsLeftovers),
    OutboxGap(OutboxGap),
    StsPolicy(StsPolicy),
    TlsSession(TlsSession),
    TlsReportReceived(TlsReportReceived),
}

impl Event {
    /// The message the event belongs to, if any.
    pub fn queue_id(&self) -> Option<&str> {
        match self {
            Event::Received(e) => Some(&e.queue_id),
            Event::Rejected(e) => Some(&e.queue_id),
            Event::Attempt(e) => Some(&e.queue_id),
            Event::Deferred(e) => Some(&e.queue_id),
            Event::Delivered(e) => Some(&e.queue_id),
            Event::Bounced(e) => Some(&e.queue_id),
            Event::Deleted(e) => Some(&e.queue_id),
            Event::Connection(_)
            | Event::StartTlsLeftovers(_)
            | Event::OutboxGap(_)
            | Event::StsPolicy(_)
            | Event::TlsSession(_)
            | Event::TlsReportReceived(_) => None,
        }
    }
}

/// An event as a worker records it: its place in the worker's outbox epoch, when, and under
/// which policy version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    /// Unix milliseconds.
    pub at_ms: u64,
    pub policy_version: u64,
    pub event: Event,
    /// A field of the event was cut to its cap (`Event::bound`).
    #[serde(default)]
    pub truncated: bool,
}
