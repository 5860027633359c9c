//! What the control plane keeps of each message and connection, built from the workers'
//! events (PRODUCT.md 5): the legs, the marks, the status and the timeline. Pure: `apply`
//! folds one event into a message.

use std::collections::BTreeMap;

use postern_events::{self as ev, Event};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Unix milliseconds as RFC 3339.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Certificate {
    Verified,
    Unverified,
    None,
}

impl From<ev::Certificate> for Certificate {
    fn from(c: ev::Certificate) -> Self {
        match c {
            ev::Certificate::Verified => Certificate::Verified,
            ev::Certificate::Unverified => Certificate::Unverified,
            ev::Certificate::None => Certificate::None,
        }
    }
}

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
    fn client(t: ev::Tls) -> TlsView {
        TlsView {
            version: t.version,
            cipher: t.cipher,
            key_exchange: t.key_exchange,
            client_certificate: Some(t.certificate.into()),
            server_certificate: None,
        }
    }

    fn server(t: ev::Tls) -> TlsView {
        TlsView {
            server_certificate: Some(t.certificate.into()),
            client_certificate: None,
            ..TlsView::client(t)
        }
    }
}

/// `name [ip]`, with ` (via TLS)` when encrypted.
fn display(name: &str, ip: &str, tls: bool) -> String {
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
    pub attempts: Vec<AttemptView>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Marks {
    /// Some leg encrypted.
    pub tls: bool,
    /// Some leg in plaintext.
    pub plaintext: bool,
    /// A TLS rule produced a 530, a 421 4.7.x, a 4.7.4 or a 4.7.5.
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
    pub deliveries: Vec<DeliveryView>,
    /// The queue id of a DSN sent for it.
    pub dsn: Option<String>,
    pub timeline: Vec<TimelineEntry>,
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

/// What the store keeps: the view, and what indexing and deduplication need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// Unix ms of the first event: the message's place in time-ordered indexes.
    pub first_ms: u64,
    /// Whether a Received event was seen (else the message was rejected).
    pub received: bool,
    /// Per (worker, outbox epoch), as `worker epoch`, the highest sequence folded in: a
    /// worker's events for one message come in order, so anything at or below it is a replay.
    pub applied: BTreeMap<String, u64>,
    pub view: MessageView,
}

/// Timelines are capped so that a message retried for days stays a small value.
const MAX_TIMELINE: usize = 500;
/// The attempts kept per recipient (the newest).
const MAX_ATTEMPTS: usize = 100;

/// What folding an event into a message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    Applied,
    /// Folded in before.
    Replay,
    /// From a worker other than the message's own: refused (and counted by the caller).
    Foreign,
}

impl Stored {
    pub fn new(id: &str, worker: &str, at_ms: u64) -> Stored {
        Stored {
            first_ms: at_ms,
            received: false,
            applied: BTreeMap::new(),
            view: MessageView {
                id: id.to_string(),
                worker: worker.to_string(),
                received_at: rfc3339(at_ms),
                sender: String::new(),
                recipients: Vec::new(),
                subject: None,
                message_id: None,
                size: None,
                status: Status::Rejected,
                marks: Marks::default(),
                policy_version: 0,
                source: None,
                rejections: Vec::new(),
                deliveries: Vec::new(),
                dsn: None,
                timeline: Vec::new(),
            },
        }
    }

    pub fn summary(&self) -> MessageSummary {
        let v = &self.view;
        MessageSummary {
            id: v.id.clone(),
            worker: v.worker.clone(),
            received_at: v.received_at.clone(),
            sender: v.sender.clone(),
            recipients: v.recipients.clone(),
            subject: v.subject.clone(),
            message_id: v.message_id.clone(),
            status: v.status,
            marks: v.marks,
            policy_version: v.policy_version,
        }
    }

    fn delivery(&mut self, recipient: &str) -> &mut DeliveryView {
        let v = &mut self.view;
        let i = match v.deliveries.iter().position(|d| d.recipient == recipient) {
            Some(i) => i,
            None => {
                v.deliveries.push(DeliveryView {
                    recipient: recipient.to_string(),
                    status: RcptStatus::Queued,
                    host: None,
                    ip: None,
                    tls: None,
                    display: None,
                    reason: None,
                    attempts: Vec::new(),
                });
                v.deliveries.len() - 1
            }
        };
        &mut v.deliveries[i]
    }

    fn add_recipient(&mut self, r: &str) {
        if !self.view.recipients.iter().any(|x| x == r) {
            self.view.recipients.push(r.to_string());
        }
    }

    /// Folds one event in, unless it was folded in before or comes from a worker that does not
    /// own the message (the one whose event made the record: the worker that received it).
    pub fn apply(&mut self, worker: &str, epoch: &str, record: &ev::Record) -> Fold {
        if worker != self.view.worker {
            return Fold::Foreign;
        }
        let key = format!("{worker} {epoch}");
        if self.applied.get(&key).is_some_and(|s| *s >= record.seq) {
            return Fold::Replay;
        }
        self.applied.insert(key, record.seq);
        if record.event.queue_id().is_some() && !matches!(record.event, Event::Rejected(_)) {
            // Any queue event shows the 250 was given, even if its Received was lost.
            self.received = true;
        }
        let at = rfc3339(record.at_ms);
        let (kind, detail) = match &record.event {
            Event::Received(m) => {
                self.received = true;
                let v = &mut self.view;
                v.worker = worker.to_string();
                v.sender = m.sender.clone();
                v.subject = m.subject.clone();
                v.message_id = m.message_id.clone();
                v.size = Some(m.size);
                v.policy_version = record.policy_version;
                let tls = m.source.tls.is_some();
                v.source = Some(SourceView {
                    display: display(&m.source.helo, &m.source.ip, tls),
                    ip: m.source.ip.clone(),
                    helo: m.source.helo.clone(),
                    tls: m.source.tls.clone().map(TlsView::client),
                });
                for r in &m.recipients {
                    self.add_recipient(r);
                    self.delivery(r);
                }
                let from = self.view.source.as_ref().map(|s| s.display.clone());
                (
                    "received",
                    format!("from {} size {}", from.unwrap_or_default(), m.size),
                )
            }
            Event::Rejected(r) => {
                if self.view.sender.is_empty() {
                    self.view.sender = r.sender.clone();
                }
                if self.view.policy_version == 0 {
                    self.view.policy_version = record.policy_version;
                }
                if self.view.source.is_none() {
                    let tls = r.source.tls.is_some();
                    self.view.source = Some(SourceView {
                        display: display(&r.source.helo, &r.source.ip, tls),
                        ip: r.source.ip.clone(),
                        helo: r.source.helo.clone(),
                        tls: r.source.tls.clone().map(TlsView::client),
                    });
                }
                if let Some(rcpt) = &r.recipient {
                    self.add_recipient(rcpt);
                    let d = self.delivery(rcpt);
                    d.status = RcptStatus::Rejected;
                    d.reason = Some(r.reply.clone());
                }
                self.view.rejections.push(r.reply.clone());
                ("rejected", r.reply.clone())
            }
            Event::Attempt(a) => {
                let view = AttemptView {
                    at: at.clone(),
                    host: a.leg.as_ref().map(|l| l.host.clone()),
                    ip: a.leg.as_ref().map(|l| l.ip.clone()),
                    tls: a
                        .leg
                        .as_ref()
                        .and_then(|l| l.tls.clone())
                        .map(TlsView::server),
                    tls_fallback: a.leg.as_ref().is_some_and(|l| l.tls_fallback),
                    reply: a.reply.clone(),
                };
                let d = self.delivery(&a.recipient);
                d.host = view.host.clone();
                d.ip = view.ip.clone();
                d.tls = view.tls.clone();
                d.display = a
                    .leg
                    .as_ref()
                    .map(|l| display(&l.host, &l.ip, l.tls.is_some()));
                d.reason = Some(a.reply.clone());
                if d.attempts.len() >= MAX_ATTEMPTS {
                    d.attempts.remove(0);
                }
                d.attempts.push(view);
                let to = d.display.clone().unwrap_or_else(|| "no next hop".into());
                ("attempt", format!("<{}> to {to}: {}", a.recipient, a.reply))
            }
            Event::Deferred(x) => {
                let d = self.delivery(&x.recipient);
                d.status = RcptStatus::Deferred;
                d.reason = Some(x.reason.clone());
                (
                    "deferred",
                    format!(
                        "<{}>: {}; next attempt {}",
                        x.recipient,
                        x.reason,
                        rfc3339(x.next_attempt_ms)
                    ),
                )
            }
            Event::Delivered(x) => {
                let d = self.delivery(&x.recipient);
                d.status = RcptStatus::Delivered;
                d.reason = Some(x.reply.clone());
                ("delivered", format!("<{}>: {}", x.recipient, x.reply))
            }
            Event::Bounced(x) => {
                let d = self.delivery(&x.recipient);
                d.status = RcptStatus::Bounced;
                d.reason = Some(x.reason.clone());
                if x.dsn.is_some() {
                    self.view.dsn = x.dsn.clone();
                }
                let dsn = match &x.dsn {
                    Some(id) => format!("; DSN {id}"),
                    None => "; no DSN (the message was itself a DSN)".into(),
                };
                ("bounced", format!("<{}>: {}{dsn}", x.recipient, x.reason))
            }
            Event::Deleted(x) => {
                for d in &mut self.view.deliveries {
                    if matches!(d.status, RcptStatus::Queued | RcptStatus::Deferred) {
                        d.status = RcptStatus::Bounced;
                        d.reason = Some("deleted by an operator".into());
                    }
                }
                let how = if x.dsn { "with a DSN" } else { "without a DSN" };
                ("deleted", format!("deleted by an operator {how}"))
            }
            // Not message events (the store handles them): nothing to fold.
            Event::Connection(_) | Event::StartTlsLeftovers(_) | Event::OutboxGap(_) => {
                return Fold::Replay;
            }
        };
        if self.view.timeline.len() < MAX_TIMELINE {
            self.view.timeline.push(TimelineEntry {
                at,
                kind: kind.to_string(),
                worker: worker.to_string(),
                policy_version: record.policy_version,
                detail,
            });
        }
        self.refresh();
        Fold::Applied
    }

    /// Recomputes the status and the marks (PRODUCT.md 5).
    fn refresh(&mut self) {
        let v = &mut self.view;
        let mut marks = Marks::default();
        // The inbound session is a leg (PRODUCT.md 5), of a refused transaction too: a 530's
        // session is marked plaintext.
        if let Some(s) = &v.source {
            marks.tls |= s.tls.is_some();
            marks.plaintext |= s.tls.is_none();
        }
        for d in &v.deliveries {
            // The leg of a recipient is the attempt that ended it (or the latest).
            if let Some(last) = d.attempts.last()
                && last.host.is_some()
            {
                marks.tls |= last.tls.is_some();
                marks.plaintext |= last.tls.is_none();
            }
            marks.tls_fallback |= d.attempts.iter().any(|a| a.tls_fallback);
            marks.violation |= d.attempts.iter().any(|a| is_violation(&a.reply));
        }
        marks.violation |= v.rejections.iter().any(|r| is_violation(r));
        v.marks = marks;
        let open = |s: RcptStatus| matches!(s, RcptStatus::Queued | RcptStatus::Deferred);
        v.status = if !self.received {
            Status::Rejected
        } else if v
            .deliveries
            .iter()
            .any(|d| d.status == RcptStatus::Deferred)
        {
            Status::Deferred
        } else if v.deliveries.iter().any(|d| open(d.status)) {
            Status::Queued
        } else if v.deliveries.iter().any(|d| d.status == RcptStatus::Bounced) {
            Status::Bounced
        } else {
            Status::Delivered
        };
    }
}

/// A reply a TLS rule produced: 530, 421 4.7.x, or the outbound 4.7.4 and 4.7.5 deferrals.
pub fn is_violation(reply: &str) -> bool {
    let mut words = reply.split_whitespace();
    let code = words.next().unwrap_or("");
    let status = words.next().unwrap_or("");
    code == "530"
        || (code == "421" && status.starts_with("4.7."))
        || status == "4.7.4"
        || status == "4.7.5"
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
            policy_version: version,
            display: display(
                c.helo.as_deref().unwrap_or("unknown"),
                &c.ip,
                c.tls.is_some(),
            ),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn source(tls: bool) -> ev::Source {
        ev::Source {
            ip: "192.0.2.7".into(),
            helo: "client.example".into(),
            tls: tls.then(|| ev::Tls {
                version: "TLSv1.3".into(),
                cipher: "TLS_AES_256_GCM_SHA384".into(),
                key_exchange: "x25519".into(),
                certificate: ev::Certificate::None,
            }),
        }
    }

    pub fn record(seq: u64, event: Event) -> ev::Record {
        ev::Record {
            seq,
            at_ms: 1_000 + seq,
            policy_version: 4,
            event,
        }
    }

    pub fn received(id: &str, tls: bool, rcpts: &[&str]) -> Event {
        Event::Received(ev::Received {
            queue_id: id.into(),
            session: "S".into(),
            source: source(tls),
            sender: "a@x.example".into(),
            recipients: rcpts.iter().map(|r| r.to_string()).collect(),
            size: 10,
            subject: Some("hi".into()),
            message_id: Some("m@x".into()),
        })
    }

    fn attempt(id: &str, rcpt: &str, tls: bool, fallback: bool, reply: &str) -> Event {
        Event::Attempt(ev::Attempt {
            queue_id: id.into(),
            recipient: rcpt.into(),
            leg: Some(ev::Leg {
                host: "mx.y.example".into(),
                ip: "198.51.100.2".into(),
                tls: source(tls).tls,
                tls_fallback: fallback,
            }),
            reply: reply.into(),
        })
    }

    #[test]
    fn legs_marks_and_status() {
        let mut m = Stored::new("Q", "w", 1000);
        assert_eq!(
            m.apply("w", "E", &record(1, received("Q", true, &["b@y", "c@y"]))),
            Fold::Applied
        );
        assert_eq!(m.view.status, Status::Queued);
        let tls_only = Marks {
            tls: true,
            ..Marks::default()
        };
        assert_eq!(m.view.marks, tls_only);
        m.apply(
            "w",
            "E",
            &record(2, attempt("Q", "b@y", true, false, "250 ok")),
        );
        m.apply(
            "w",
            "E",
            &record(
                3,
                Event::Delivered(ev::Delivered {
                    queue_id: "Q".into(),
                    recipient: "b@y".into(),
                    reply: "250 ok".into(),
                }),
            ),
        );
        m.apply(
            "w",
            "E",
            &record(
                4,
                attempt(
                    "Q",
                    "c@y",
                    false,
                    false,
                    "450 4.7.5 Server certificate not trusted",
                ),
            ),
        );
        m.apply(
            "w",
            "E",
            &record(
                5,
                Event::Deferred(ev::Deferred {
                    queue_id: "Q".into(),
                    recipient: "c@y".into(),
                    reason: "450 4.7.5 Server certificate not trusted".into(),
                    next_attempt_ms: 9_000,
                }),
            ),
        );
        assert_eq!(m.view.status, Status::Deferred);
        assert!(m.view.marks.violation && m.view.marks.tls && m.view.marks.plaintext);
        let d = &m.view.deliveries[0];
        assert_eq!(
            d.display.as_deref(),
            Some("mx.y.example [198.51.100.2] (via TLS)")
        );
        assert_eq!(
            d.tls.as_ref().unwrap().server_certificate,
            Some(Certificate::None)
        );
        assert_eq!(
            m.view.source.as_ref().unwrap().display,
            "client.example [192.0.2.7] (via TLS)"
        );
        // A replay changes nothing.
        let before = m.clone();
        assert_eq!(
            m.apply("w", "E", &record(4, attempt("Q", "c@y", false, false, "x"))),
            Fold::Replay
        );
        assert_eq!(m, before);
        // Another worker can neither rewrite the message nor have its sequence taken for ours.
        assert_eq!(
            m.apply(
                "intruder",
                "E",
                &record(99, attempt("Q", "c@y", false, false, "forged"))
            ),
            Fold::Foreign
        );
        assert_eq!(m, before);
        m.apply(
            "w",
            "E",
            &record(6, attempt("Q", "c@y", false, true, "250 ok")),
        );
        m.apply(
            "w",
            "E",
            &record(
                7,
                Event::Bounced(ev::Bounced {
                    queue_id: "Q".into(),
                    recipient: "c@y".into(),
                    reason: "550 no".into(),
                    dsn: Some("D".into()),
                }),
            ),
        );
        assert_eq!(m.view.status, Status::Bounced);
        assert!(m.view.marks.tls_fallback);
        assert_eq!(m.view.dsn.as_deref(), Some("D"));
        assert_eq!(m.view.timeline.len(), 7);
    }

    #[test]
    fn a_transaction_without_a_250_is_rejected() {
        let mut m = Stored::new("R", "w", 1000);
        m.apply(
            "w",
            "E",
            &record(
                1,
                Event::Rejected(ev::Rejected {
                    queue_id: "R".into(),
                    session: "S".into(),
                    source: source(false),
                    sender: "a@strict.example".into(),
                    recipient: None,
                    reply: "530 5.7.0 <a@strict.example>: Sender address rejected: Must use TLS"
                        .into(),
                }),
            ),
        );
        assert_eq!(m.view.status, Status::Rejected);
        assert!(m.view.marks.violation);
        // Its session was in plaintext: `?plaintext=true&violation=true` finds it.
        assert!(m.view.marks.plaintext && !m.view.marks.tls);
        assert_eq!(m.view.sender, "a@strict.example");
        assert!(!is_violation("554 5.7.1 <x>: Relay access denied"));
        assert!(is_violation(
            "421 4.7.1 <x>: Sender address rejected: Unverified client certificate"
        ));
        assert!(is_violation(
            "450 4.7.4 TLS is required, but was not offered by host x[1.2.3.4]"
        ));
    }
}
