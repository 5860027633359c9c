//! The REST views of tracking (docs/src/tracking.md, interfaces.md), made at the API edge from what
//! the stores
//! keep (`tracking::record`): times as RFC 3339, peers as logs name them. A view can change
//! without a data migration.

use std::collections::VecDeque;

use postern_events::{Certificate, PolicySource, Violation};
use serde::Serialize;
use utoipa::ToSchema;

use crate::tracking::record::{
    AttemptRecord, ConnectionRecord, DeliveryRecord, Marks, MessageRecord, RcptStatus,
    SourceRecord, Status, SummaryRecord, TimelineRecord, TlsRecord,
};
use postern_time::rfc3339_ms as rfc3339;

/// A TLS session: `client_certificate` on the inbound leg, `server_certificate` outbound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TlsView {
    pub version: String,
    pub cipher: String,
    pub key_exchange: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<Certificate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<Certificate>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SourceView {
    pub ip: String,
    pub helo: String,
    pub tls: Option<TlsView>,
    /// e.g. `client.example [192.0.2.7] (via TLS)`.
    pub display: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
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
    #[serde(default)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
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

/// A connection as tracking shows it (`GET /v1/connections`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
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

impl From<&TlsRecord> for TlsView {
    fn from(t: &TlsRecord) -> Self {
        TlsView {
            version: t.version.clone(),
            cipher: t.cipher.clone(),
            key_exchange: t.key_exchange.clone(),
            client_certificate: t.client_certificate,
            server_certificate: t.server_certificate,
        }
    }
}

impl From<&SourceRecord> for SourceView {
    fn from(s: &SourceRecord) -> Self {
        SourceView {
            ip: s.ip.clone(),
            helo: s.helo.clone(),
            tls: s.tls.as_ref().map(Into::into),
            display: s.display(),
        }
    }
}

impl From<&AttemptRecord> for AttemptView {
    fn from(a: &AttemptRecord) -> Self {
        let sts = match &a.policy {
            PolicySource::MtaSts(s) => Some(s),
            _ => None,
        };
        AttemptView {
            at: rfc3339(a.at_ms),
            host: a.host.clone(),
            ip: a.ip.clone(),
            tls: a.tls.as_ref().map(Into::into),
            tls_fallback: a.tls_fallback,
            reply: a.reply.clone(),
            violation: a.violation,
            policy_source: match a.policy {
                PolicySource::Rule { .. } => "rule",
                PolicySource::MtaSts(_) => "mta-sts",
                PolicySource::Default => "default",
            }
            .into(),
            sts_policy_id: sts.map(|s| s.id.clone()),
            sts_mode: sts.map(|s| s.mode),
            sts_failure: sts.and_then(|s| s.failure.clone()),
        }
    }
}

impl From<&DeliveryRecord> for DeliveryView {
    fn from(d: &DeliveryRecord) -> Self {
        DeliveryView {
            recipient: d.recipient.clone(),
            status: d.status,
            host: d.host.clone(),
            ip: d.ip.clone(),
            tls: d.tls.as_ref().map(Into::into),
            display: d.display(),
            reason: d.reason.clone(),
            attempts: d.attempts.iter().map(Into::into).collect(),
        }
    }
}

impl From<&TimelineRecord> for TimelineEntry {
    fn from(t: &TimelineRecord) -> Self {
        TimelineEntry {
            at: rfc3339(t.at_ms),
            kind: t.kind.clone(),
            worker: t.worker.clone(),
            policy_version: t.policy_version,
            detail: t.detail.clone(),
            truncated: t.truncated,
        }
    }
}

impl From<&MessageRecord> for MessageView {
    fn from(m: &MessageRecord) -> Self {
        MessageView {
            id: m.id.clone(),
            worker: m.worker.clone(),
            received_at: rfc3339(m.received_ms),
            sender: m.sender.clone(),
            recipients: m.recipients.clone(),
            subject: m.subject.clone(),
            message_id: m.message_id.clone(),
            size: m.size,
            status: m.status,
            marks: m.marks,
            policy_version: m.policy_version,
            source: m.source.as_ref().map(Into::into),
            rejections: m.rejections.clone(),
            violations: m.violations.clone(),
            deliveries: m.deliveries.iter().map(Into::into).collect(),
            dsn: m.dsn.clone(),
            timeline: m.timeline.iter().map(Into::into).collect(),
            timeline_dropped: m.timeline_dropped,
        }
    }
}

impl From<&SummaryRecord> for MessageSummary {
    fn from(m: &SummaryRecord) -> Self {
        MessageSummary {
            id: m.id.clone(),
            worker: m.worker.clone(),
            received_at: rfc3339(m.received_ms),
            sender: m.sender.clone(),
            recipients: m.recipients.clone(),
            subject: m.subject.clone(),
            message_id: m.message_id.clone(),
            status: m.status,
            marks: m.marks,
            policy_version: m.policy_version,
        }
    }
}

impl From<&ConnectionRecord> for ConnectionView {
    fn from(c: &ConnectionRecord) -> Self {
        ConnectionView {
            session: c.session.clone(),
            worker: c.worker.clone(),
            ip: c.ip.clone(),
            started_at: rfc3339(c.started_ms),
            helo: c.helo.clone(),
            tls: c.tls.as_ref().map(Into::into),
            tls_failure: c.tls_failure.clone(),
            refused: c.refused.clone(),
            messages: c.messages,
            starttls_leftovers: c.starttls_leftovers,
            refused_count: c.refused_count,
            policy_version: c.policy_version,
            display: c.display(),
        }
    }
}
