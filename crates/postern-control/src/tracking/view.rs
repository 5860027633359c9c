//! What tracking shows (PRODUCT.md 5, 6): the REST views of messages and connections, built by
//! the event fold (`fold.rs`) and read by the queries.

use std::collections::VecDeque;

use postern_events::{self as ev, Certificate, Violation};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use postern_time::rfc3339_ms as rfc3339;

/// A TLS session: `client_certificate` on the inbound leg, `server_certificate` outbound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TlsView {
    pub version: String,
    pub cipher: String,
    pub key_exchange: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<Certificate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<Certificate>,
}

impl TlsView {
    pub(super) fn client(t: ev::Tls) -> TlsView {
        TlsView {
            version: t.version,
            cipher: t.cipher,
            key_exchange: t.key_exchange,
            client_certificate: Some(t.certificate),
            server_certificate: None,
        }
    }

    pub(super) fn server(t: ev::Tls) -> TlsView {
        TlsView {
            server_certificate: Some(t.certificate),
            client_certificate: None,
            ..TlsView::client(t)
        }
    }
}

/// `name [ip]`, with ` (via TLS)` when encrypted.
pub(super) fn display(name: &str, ip: &str, tls: bool) -> String {
    let via = if tls { " (via TLS)" } else { "" };
    format!("{name} [{ip}]{via}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SourceView {
    pub ip: String,
    pub helo: String,
    pub tls: Option<TlsView>,
    /// e.g. `client.example [192.0.2.7] (via TLS)`.
    pub display: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RcptStatus {
    Queued,
    Deferred,
    Delivered,
    Bounced,
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AttemptView {
    /// RFC 3339.
    pub at: String,
    pub host: Option<String>,
    pub ip: Option<String>,
    pub tls: Option<TlsView>,
    pub tls_fallback: bool,
    pub reply: String,
    /// Set when the TLS policy deferred the attempt.
    pub violation: Option<Violation>,
    /// What set the TLS level: `rule`, `mta-sts` or `default`.
    #[serde(default = "default_source")]
    pub policy_source: String,
    /// The MTA-STS policy followed: its record id and mode.
    #[serde(default)]
    pub sts_policy_id: Option<String>,
    #[serde(default)]
    pub sts_mode: Option<postern_sts::Mode>,
    /// What MTA-STS found wrong (a TLS-RPT result type); in `testing` mode the delivery went on.
    #[serde(default)]
    pub sts_failure: Option<postern_sts::ResultType>,
}

fn default_source() -> String {
    "default".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    pub recipient: String,
    pub status: RcptStatus,
    /// The last attempt's next hop.
    pub host: Option<String>,
    pub ip: Option<String>,
    pub tls: Option<TlsView>,
    /// e.g. `mx.partner.example [198.51.100.2] (via TLS)`.
    pub display: Option<String>,
    /// The last reply or reason.
    pub reason: Option<String>,
    /// The newest attempts, oldest first (at most 10; the timeline has the rest in brief).
    #[schema(value_type = Vec<AttemptView>)]
    pub attempts: VecDeque<AttemptView>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Marks {
    /// Some leg encrypted.
    pub tls: bool,
    /// Some leg in plaintext.
    pub plaintext: bool,
    /// A TLS rule refused or deferred it: a 530, a 421 4.7.x, a 4.7.4 or a 4.7.5
    /// (`violations` says which).
    pub violation: bool,
    /// A `may` delivery fell back to plaintext.
    pub tls_fallback: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Rejected,
    Deferred,
    Queued,
    Bounced,
    Delivered,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Rejected => "rejected",
            Status::Deferred => "deferred",
            Status::Queued => "queued",
            Status::Bounced => "bounced",
            Status::Delivered => "delivered",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TimelineEntry {
    /// RFC 3339.
    pub at: String,
    /// The event kind: received, rejected, attempt, deferred, delivered, bounced, deleted.
    pub kind: String,
    pub worker: String,
    pub policy_version: u64,
    pub detail: String,
    /// A field of the event was cut to its cap by the worker (a megabyte reply, say).
    #[serde(default)]
    pub truncated: bool,
}

/// One message as tracking shows it (`GET /v1/messages/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MessageView {
    /// The queue id (the tracking id made at MAIL FROM).
    pub id: String,
    pub worker: String,
    /// RFC 3339: the first event (MAIL FROM refused, or the 250).
    pub received_at: String,
    pub sender: String,
    pub recipients: Vec<String>,
    /// Decoded (RFC 2047).
    pub subject: Option<String>,
    pub message_id: Option<String>,
    pub size: Option<u64>,
    pub status: Status,
    pub marks: Marks,
    /// The policy version the inbound session enforced.
    pub policy_version: u64,
    pub source: Option<SourceView>,
    /// Replies that refused the transaction or some recipient.
    pub rejections: Vec<String>,
    /// The kinds of TLS policy violation seen, each once, in the order first seen.
    #[serde(default)]
    pub violations: Vec<Violation>,
    pub deliveries: Vec<DeliveryView>,
    /// The queue id of a DSN sent for it.
    pub dsn: Option<String>,
    /// The newest events, oldest first (at most 500).
    #[schema(value_type = Vec<TimelineEntry>)]
    pub timeline: VecDeque<TimelineEntry>,
    /// Older events left out of `timeline`.
    #[serde(default)]
    pub timeline_dropped: u64,
}

/// A message in a list (`GET /v1/messages`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MessageSummary {
    pub id: String,
    pub worker: String,
    pub received_at: String,
    pub sender: String,
    pub recipients: Vec<String>,
    pub subject: Option<String>,
    pub message_id: Option<String>,
    pub status: Status,
    pub marks: Marks,
    pub policy_version: u64,
}

/// A message as lists filter and show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    pub first_ms: u64,
    pub summary: MessageSummary,
}

/// A connection as tracking shows it (`GET /v1/connections`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConnectionView {
    pub session: String,
    pub worker: String,
    pub ip: String,
    /// RFC 3339.
    pub started_at: String,
    pub helo: Option<String>,
    pub tls: Option<TlsView>,
    /// Why the STARTTLS handshake failed.
    pub tls_failure: Option<String>,
    /// The reply that refused the connection at once.
    pub refused: Option<String>,
    pub messages: u32,
    /// Bytes the client sent in plaintext after its STARTTLS, discarded; 0 when none.
    #[serde(default)]
    pub starttls_leftovers: u64,
    /// For a refused connection: how many refusals of this address within its minute this
    /// record stands for.
    #[serde(default)]
    pub refused_count: u32,
    pub policy_version: u64,
    pub display: String,
}

impl ConnectionView {
    pub fn new(worker: &str, version: u64, c: &ev::Connection) -> ConnectionView {
        ConnectionView {
            session: c.session.clone(),
            worker: worker.to_string(),
            ip: c.ip.clone(),
            started_at: rfc3339(c.started_ms),
            helo: c.helo.clone(),
            tls: c.tls.clone().map(TlsView::client),
            tls_failure: c.tls_failure.clone(),
            refused: c.refused.clone(),
            messages: c.messages,
            starttls_leftovers: c.starttls_leftovers,
            refused_count: if c.refused.is_some() {
                c.refused_count.max(1)
            } else {
                0
            },
            policy_version: version,
            display: display(
                c.helo.as_deref().unwrap_or("unknown"),
                &c.ip,
                c.tls.is_some(),
            ),
        }
    }
}
