//! The tracking event catalogue (docs/src/tracking.md): what a worker reports of every connection,
//! message and delivery attempt. Typed, one struct per kind (no log strings), pure data: the
//! worker makes them, `postern-proto` carries them, the control plane indexes them.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

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
    /// Protocol version (`TLSv1.2`, `TLSv1.3`; `unknown` if none was negotiated).
    pub version: String,
    /// Cipher suite, e.g. `TLS_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// Key exchange group, e.g. `x25519` or `X25519MLKEM768`.
    pub key_exchange: String,
    /// The peer's certificate: the client's inbound, the server's outbound.
    pub certificate: Certificate,
}

/// Where a message came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The client's IP address.
    pub ip: String,
    /// The name the client gave in HELO/EHLO; empty when it gave none.
    pub helo: String,
    /// The session's TLS; None for plaintext.
    pub tls: Option<Tls>,
}

/// How a delivery attempt travelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leg {
    /// The next hop's name: the MX host, the configured next-hop host, or an `[ip]` hop's IP.
    pub host: String,
    /// The next hop's IP address.
    pub ip: String,
    /// The session's TLS; None for plaintext.
    pub tls: Option<Tls>,
    /// A `may` delivery that fell back to plaintext.
    pub tls_fallback: bool,
}

/// An SMTP session, reported when it ends (or is refused at connect).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// Unique per worker.
    pub session: String,
    /// The client's IP address.
    pub ip: String,
    /// Unix milliseconds.
    pub started_ms: u64,
    /// The name the client gave in HELO/EHLO, if any.
    pub helo: Option<String>,
    /// The session's TLS, once STARTTLS succeeded; None for plaintext.
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
    /// The message's queue id (made at MAIL FROM).
    pub queue_id: String,
    /// The SMTP session it came in ([`Connection::session`]).
    pub session: String,
    /// Where it came from.
    pub source: Source,
    /// The envelope sender (MAIL FROM); empty for the null sender.
    pub sender: String,
    /// The envelope recipients (RCPT TO); a bare `postmaster` as the configured address.
    pub recipients: Vec<String>,
    /// The message's size in bytes.
    pub size: u64,
    /// Decoded (RFC 2047).
    pub subject: Option<String>,
    /// The `Message-ID` header, if any.
    pub message_id: Option<String>,
}

/// A reply that refused part or all of a transaction. `queue_id` is the tracking id made at
/// MAIL FROM (the queue id if the message is later accepted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// The tracking id of the transaction.
    pub queue_id: String,
    /// The SMTP session ([`Connection::session`]).
    pub session: String,
    /// Where the transaction came from.
    pub source: Source,
    /// The transaction's envelope sender (MAIL FROM); empty for the null sender.
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
    /// The message's queue id.
    pub queue_id: String,
    /// The recipient tried.
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

/// A recipient's delivery deferred: it is tried again at `next_attempt_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deferred {
    /// The message's queue id.
    pub queue_id: String,
    /// The recipient deferred.
    pub recipient: String,
    /// The attempt's reply, or our own reason.
    pub reason: String,
    /// Set when the TLS policy deferred it.
    pub violation: Option<Violation>,
    /// Unix milliseconds.
    pub next_attempt_ms: u64,
}

/// A recipient delivered: the next hop accepted it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    /// The message's queue id.
    pub queue_id: String,
    /// The recipient delivered.
    pub recipient: String,
    /// The next hop's reply accepting it.
    pub reply: String,
}

/// A recipient failed for good (or an operator deleted its message with a DSN).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bounced {
    /// The message's queue id.
    pub queue_id: String,
    /// The recipient that failed.
    pub recipient: String,
    /// Why: the last reply, or our own reason.
    pub reason: String,
    /// The queue id of the DSN sent; None when none could be (the message was itself a DSN,
    /// so it is dropped).
    pub dsn: Option<String>,
}

/// An operator deleted a queued message (`DELETE /v1/queue/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    /// The deleted message's queue id.
    pub queue_id: String,
    /// Whether the operator asked for a DSN of the recipients still open.
    pub dsn: bool,
}

/// Bytes a client sent after its STARTTLS line, discarded (a command injection attempt, or a
/// broken client).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartTlsLeftovers {
    /// The SMTP session ([`Connection::session`]).
    pub session: String,
    /// The client's IP address.
    pub ip: String,
    /// How many bytes were discarded.
    pub bytes: u64,
}

/// Events the worker's full outbox dropped: `first_seq..=last_seq` of the same epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxGap {
    /// The first sequence lost.
    pub first_seq: u64,
    /// The last sequence lost.
    pub last_seq: u64,
}

/// A worker fetched a recipient domain's MTA-STS policy (RFC 8461): the control plane keeps the
/// newest per domain, for `POST /v1/policy/evaluate` and TLS-RPT reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StsPolicy {
    /// The recipient (policy) domain.
    pub domain: String,
    /// The `_mta-sts` record's id the policy was fetched under.
    pub id: String,
    /// The policy's `mode`.
    pub mode: Mode,
    /// The policy's `max_age`, in seconds.
    pub max_age: u64,
    /// The policy's `mx` patterns.
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
    /// Our IP address for the session; None when no connection was made.
    pub sending_ip: Option<String>,
    /// The MX host name tried, if any.
    pub receiving_mx: Option<String>,
    /// The MX host's IP address; None when no connection was tried.
    pub receiving_ip: Option<String>,
    /// Unix milliseconds.
    pub at_ms: u64,
}

/// The MTA-STS policy a TLS session was held under, as TLS-RPT reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionPolicy {
    /// The `_mta-sts` record's id the policy was fetched under.
    pub id: String,
    /// The policy's lines as served (TLS-RPT's `policy-string`).
    pub lines: Vec<String>,
    /// The policy's `mx` patterns.
    pub mx: Vec<MxPattern>,
}

/// A TLS-RPT report about our domains arrived by mail at `settings.reports.receive_address`;
/// the worker took it out of the message (the control plane checks and stores it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsReportReceived {
    /// The queue id of the message that carried it.
    pub queue_id: String,
    /// The envelope sender.
    pub sender: String,
    /// The report's JSON.
    pub report: String,
}

/// A tracking event, one variant per kind (serialized with a snake_case `kind` tag).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// An SMTP session ended or was refused.
    Connection(Connection),
    /// A message accepted.
    Received(Received),
    /// A transaction or recipient refused.
    Rejected(Rejected),
    /// A delivery attempt of one recipient.
    Attempt(Attempt),
    /// A recipient deferred.
    Deferred(Deferred),
    /// A recipient delivered.
    Delivered(Delivered),
    /// A recipient bounced.
    Bounced(Bounced),
    /// A queued message deleted by an operator.
    Deleted(Deleted),
    /// Plaintext after STARTTLS discarded.
    StartTlsLeftovers(StartTlsLeftovers),
    /// Events the outbox lost.
    OutboxGap(OutboxGap),
    /// An MTA-STS policy fetched.
    StsPolicy(StsPolicy),
    /// A session with a recipient domain's MX hosts, for TLS-RPT.
    TlsSession(TlsSession),
    /// A TLS-RPT report received by mail.
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
    /// The event's sequence number in the worker's outbox epoch, increasing.
    pub seq: u64,
    /// Unix milliseconds.
    pub at_ms: u64,
    /// The policy version the worker ran under (0 for an outbox gap).
    pub policy_version: u64,
    /// The event.
    pub event: Event,
    /// A field of the event was cut to its cap (`Event::bound`).
    #[serde(default)]
    pub truncated: bool,
}
