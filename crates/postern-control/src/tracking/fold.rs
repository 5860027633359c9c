//! The event fold (docs/src/tracking.md): what the control plane keeps of each message, built from
//! its
//! worker's events one at a time. Pure. Every part of a record is bounded (timeline, attempts,
//! epochs) and folding touches the event's own recipient and the marks, so the thousandth event
//! of a message costs what the first did.

use std::collections::{BTreeMap, VecDeque};

use postern_events::{self as ev, Event, Violation};
use serde::{Deserialize, Serialize};

use super::record::{
    AttemptRecord, DeliveryRecord, Marks, MessageRecord, RcptStatus, SourceRecord, Status,
    SummaryRecord, TimelineRecord, TlsRecord,
};
use postern_time::rfc3339_ms as rfc3339;

/// What the store keeps: the record, and what indexing and deduplication need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// Unix ms of the first event: the message's place in time-ordered indexes.
    pub first_ms: u64,
    /// Whether a Received event was seen (else the message was rejected).
    pub received: bool,
    /// Per (worker, outbox epoch), as `worker epoch`, the highest sequence folded in: a
    /// worker's events for one message come in order, so anything at or below it is a replay.
    pub applied: BTreeMap<String, u64>,
    /// The keys of `applied`, oldest first (at most `MAX_EPOCHS`).
    #[serde(default)]
    pub epochs: VecDeque<String>,
    /// Timeline entries ever folded in. The store keeps the newest `MAX_TIMELINE` beside the
    /// record (entry `n` under its own key), so a fold never rewrites the whole timeline.
    #[serde(default)]
    pub timeline_total: u64,
    #[serde(alias = "view")]
    pub message: MessageRecord,
}

/// The newest timeline entries kept.
pub const MAX_TIMELINE: usize = 500;
/// The newest attempts kept per recipient.
const MAX_ATTEMPTS: usize = 10;
/// The worker epochs remembered for replay detection.
const MAX_EPOCHS: usize = 16;

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
            epochs: VecDeque::new(),
            timeline_total: 0,
            message: MessageRecord {
                id: id.to_string(),
                worker: worker.to_string(),
                received_ms: at_ms,
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
                violations: Vec::new(),
                deliveries: Vec::new(),
                dsn: None,
                timeline: VecDeque::new(),
                timeline_dropped: 0,
            },
        }
    }

    pub fn summary(&self) -> SummaryRecord {
        let v = &self.message;
        SummaryRecord {
            id: v.id.clone(),
            worker: v.worker.clone(),
            received_ms: v.received_ms,
            sender: v.sender.clone(),
            recipients: v.recipients.clone(),
            subject: v.subject.clone(),
            message_id: v.message_id.clone(),
            status: v.status,
            marks: v.marks,
            policy_version: v.policy_version,
        }
    }

    fn delivery(&mut self, recipient: &str) -> &mut DeliveryRecord {
        let v = &mut self.message;
        let i = match v.deliveries.iter().position(|d| d.recipient == recipient) {
            Some(i) => i,
            None => {
                v.deliveries.push(DeliveryRecord {
                    recipient: recipient.to_string(),
                    status: RcptStatus::Queued,
                    host: None,
                    ip: None,
                    tls: None,
                    reason: None,
                    attempts: VecDeque::new(),
                });
                v.deliveries.len() - 1
            }
        };
        &mut v.deliveries[i]
    }

    fn add_recipient(&mut self, r: &str) {
        if !self.message.recipients.iter().any(|x| x == r) {
            self.message.recipients.push(r.to_string());
        }
    }

    fn violated(&mut self, violation: Option<Violation>) {
        if let Some(v) = violation
            && !self.message.violations.contains(&v)
        {
            self.message.violations.push(v);
        }
    }

    fn forget_oldest_epoch(&mut self) {
        if let Some(oldest) = self.epochs.pop_front() {
            self.applied.remove(&oldest);
        }
    }

    /// Folds one event in, unless it was folded in before or comes from a worker that does not
    /// own the message (the one whose event made the record: the worker that received it).
    pub fn apply(&mut self, worker: &str, epoch: &str, record: &ev::Record) -> Fold {
        if worker != self.message.worker {
            return Fold::Foreign;
        }
        let key = format!("{worker} {epoch}");
        if self.applied.get(&key).is_some_and(|s| *s >= record.seq) {
            return Fold::Replay;
        }
        if !self.applied.contains_key(&key) {
            if self.applied.len() >= MAX_EPOCHS {
                // A worker restarted many times while the message waited: its oldest epochs
                // can no longer be replayed (an outbox replays only what was not ACKed).
                self.forget_oldest_epoch();
            }
            self.epochs.push_back(key.clone());
        }
        self.applied.insert(key, record.seq);
        if record.event.queue_id().is_some() && !matches!(record.event, Event::Rejected(_)) {
            // Any queue event shows the 250 was given, even if its Received was lost.
            self.received = true;
        }
        let (kind, detail) = match &record.event {
            Event::Received(m) => {
                self.received = true;
                let v = &mut self.message;
                v.worker = worker.to_string();
                v.sender = m.sender.clone();
                v.subject = m.subject.clone();
                v.message_id = m.message_id.clone();
                v.size = Some(m.size);
                v.policy_version = record.policy_version;
                v.source = Some(SourceRecord {
                    ip: m.source.ip.clone(),
                    helo: m.source.helo.clone(),
                    tls: m.source.tls.clone().map(TlsRecord::client),
                });
                for r in &m.recipients {
                    self.add_recipient(r);
                    self.delivery(r);
                }
                let from = self.message.source.as_ref().map(SourceRecord::display);
                (
                    "received",
                    format!("from {} size {}", from.unwrap_or_default(), m.size),
                )
            }
            Event::Rejected(r) => {
                if self.message.sender.is_empty() {
                    self.message.sender = r.sender.clone();
                }
                if self.message.policy_version == 0 {
                    self.message.policy_version = record.policy_version;
                }
                if self.message.source.is_none() {
                    self.message.source = Some(SourceRecord {
                        ip: r.source.ip.clone(),
                        helo: r.source.helo.clone(),
                        tls: r.source.tls.clone().map(TlsRecord::client),
                    });
                }
                self.violated(r.violation);
                if let Some(rcpt) = &r.recipient {
                    self.add_recipient(rcpt);
                    let d = self.delivery(rcpt);
                    d.status = RcptStatus::Rejected;
                    d.reason = Some(r.reply.clone());
                }
                self.message.rejections.push(r.reply.clone());
                ("rejected", r.reply.clone())
            }
            Event::Attempt(a) => {
                let view = AttemptRecord {
                    at_ms: record.at_ms,
                    host: a.leg.as_ref().map(|l| l.host.clone()),
                    ip: a.leg.as_ref().map(|l| l.ip.clone()),
                    tls: a
                        .leg
                        .as_ref()
                        .and_then(|l| l.tls.clone())
                        .map(TlsRecord::server),
                    tls_fallback: a.leg.as_ref().is_some_and(|l| l.tls_fallback),
                    reply: a.reply.clone(),
                    violation: a.violation,
                    policy: a.policy.clone(),
                };
                self.violated(a.violation);
                self.message.marks.tls_fallback |= view.tls_fallback;
                let d = self.delivery(&a.recipient);
                d.host = view.host.clone();
                d.ip = view.ip.clone();
                d.tls = view.tls.clone();
                d.reason = Some(a.reply.clone());
                if d.attempts.len() >= MAX_ATTEMPTS {
                    d.attempts.pop_front();
                }
                d.attempts.push_back(view);
                let to = d.display().unwrap_or_else(|| "no next hop".into());
                ("attempt", format!("<{}> to {to}: {}", a.recipient, a.reply))
            }
            Event::Deferred(x) => {
                self.violated(x.violation);
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
                    self.message.dsn = x.dsn.clone();
                }
                let dsn = match &x.dsn {
                    Some(id) => format!("; DSN {id}"),
                    None => "; no DSN (the message was itself a DSN)".into(),
                };
                ("bounced", format!("<{}>: {}{dsn}", x.recipient, x.reason))
            }
            Event::Deleted(x) => {
                for d in &mut self.message.deliveries {
                    if matches!(d.status, RcptStatus::Queued | RcptStatus::Deferred) {
                        d.status = RcptStatus::Bounced;
                        d.reason = Some("deleted by an operator".into());
                    }
                }
                let how = if x.dsn { "with a DSN" } else { "without a DSN" };
                ("deleted", format!("deleted by an operator {how}"))
            }
            // Not message events (the store handles them): nothing to fold.
            Event::Connection(_)
            | Event::StartTlsLeftovers(_)
            | Event::OutboxGap(_)
            | Event::StsPolicy(_)
            | Event::TlsSession(_)
            | Event::TlsReportReceived(_) => {
                return Fold::Replay;
            }
        };
        self.timeline_total += 1;
        let timeline = &mut self.message.timeline;
        if timeline.len() >= MAX_TIMELINE {
            timeline.pop_front();
            self.message.timeline_dropped += 1;
        }
        timeline.push_back(TimelineRecord {
            at_ms: record.at_ms,
            kind: kind.to_string(),
            worker: worker.to_string(),
            policy_version: record.policy_version,
            detail,
            truncated: record.truncated,
        });
        self.refresh();
        Fold::Applied
    }

    /// Recomputes the status and the marks (docs/src/tracking.md) from the source and each
    /// recipient's latest leg; `violation` and `tls_fallback` only ever turn on.
    fn refresh(&mut self) {
        let v = &mut self.message;
        // The inbound session is a leg (docs/src/tracking.md), of a refused transaction too: a
        // 530's
        // session is marked plaintext.
        let source = v.source.iter().map(|s| s.tls.is_some());
        // The leg of a recipient is the attempt that ended it (or the latest).
        let legs = v
            .deliveries
            .iter()
            .filter(|d| d.host.is_some())
            .map(|d| d.tls.is_some());
        let (mut tls, mut plaintext) = (false, false);
        for encrypted in source.chain(legs) {
            tls |= encrypted;
            plaintext |= !encrypted;
        }
        v.marks.tls = tls;
        v.marks.plaintext = plaintext;
        v.marks.violation = !v.violations.is_empty();
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
            truncated: false,
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
            violation: None,
            policy: ev::PolicySource::Default,
        })
    }

    /// An attempt the TLS policy deferred.
    fn refused_attempt(id: &str, rcpt: &str, reply: &str, violation: Violation) -> Event {
        let Event::Attempt(mut a) = attempt(id, rcpt, false, false, reply) else {
            unreachable!()
        };
        a.violation = Some(violation);
        Event::Attempt(a)
    }

    #[test]
    fn legs_marks_and_status() {
        let mut m = Stored::new("Q", "w", 1000);
        assert_eq!(
            m.apply("w", "E", &record(1, received("Q", true, &["b@y", "c@y"]))),
            Fold::Applied
        );
        assert_eq!(m.message.status, Status::Queued);
        let tls_only = Marks {
            tls: true,
            ..Marks::default()
        };
        assert_eq!(m.message.marks, tls_only);
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
                refused_attempt(
                    "Q",
                    "c@y",
                    "450 4.7.5 Server certificate not trusted",
                    Violation::CertificateNotTrusted,
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
                    violation: Some(Violation::CertificateNotTrusted),
                }),
            ),
        );
        assert_eq!(m.message.status, Status::Deferred);
        assert!(m.message.marks.violation && m.message.marks.tls && m.message.marks.plaintext);
        let d = &m.message.deliveries[0];
        assert_eq!(
            d.display().as_deref(),
            Some("mx.y.example [198.51.100.2] (via TLS)")
        );
        assert_eq!(
            d.tls.as_ref().unwrap().server_certificate,
            Some(ev::Certificate::None)
        );
        assert_eq!(
            m.message.source.as_ref().unwrap().display(),
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
        assert_eq!(m.message.status, Status::Bounced);
        assert!(m.message.marks.tls_fallback);
        assert_eq!(m.message.dsn.as_deref(), Some("D"));
        assert_eq!(m.message.timeline.len(), 7);
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
                    violation: Some(Violation::MustUseTls),
                }),
            ),
        );
        assert_eq!(m.message.status, Status::Rejected);
        assert!(m.message.marks.violation);
        // Its session was in plaintext: `?plaintext=true&violation=true` finds it.
        assert!(m.message.marks.plaintext && !m.message.marks.tls);
        assert_eq!(m.message.sender, "a@strict.example");
        assert_eq!(m.message.violations, [Violation::MustUseTls]);
        // A refusal that is not the TLS policy's is no violation, whatever its text says.
        let mut relay = Stored::new("D", "w", 1000);
        relay.apply(
            "w",
            "E",
            &record(
                1,
                Event::Rejected(ev::Rejected {
                    queue_id: "D".into(),
                    session: "S".into(),
                    source: source(true),
                    sender: "a@x.example".into(),
                    recipient: Some("b@elsewhere.example".into()),
                    reply: "554 5.7.1 <b@elsewhere.example>: Relay access denied".into(),
                    violation: None,
                }),
            ),
        );
        assert!(!relay.message.marks.violation && relay.message.marks.tls);
    }

    #[test]
    fn history_is_bounded_and_marks_outlive_it() {
        let mut m = Stored::new("Q", "w", 1000);
        m.apply("w", "E", &record(1, received("Q", true, &["b@y"])));
        m.apply(
            "w",
            "E",
            &record(
                2,
                refused_attempt(
                    "Q",
                    "b@y",
                    "450 4.7.4 not offered",
                    Violation::TlsNotOffered,
                ),
            ),
        );
        m.apply(
            "w",
            "E",
            &record(3, attempt("Q", "b@y", false, true, "451 try")),
        );
        let size_at = |m: &Stored| serde_json::to_vec(m).unwrap().len();
        let mut seq = 4;
        let mut fold_until = |m: &mut Stored, n: u64| {
            while seq < n {
                m.apply(
                    "w",
                    "E",
                    &record(seq, attempt("Q", "b@y", false, false, "451 try")),
                );
                seq += 1;
            }
        };
        fold_until(&mut m, 600);
        let at_600 = size_at(&m);
        fold_until(&mut m, 2_000);
        let v = &m.message;
        assert_eq!(v.timeline.len(), MAX_TIMELINE);
        assert_eq!(v.timeline_dropped, 2_000 - 1 - MAX_TIMELINE as u64);
        assert_eq!(v.deliveries[0].attempts.len(), MAX_ATTEMPTS);
        // The newest are kept.
        assert_eq!(v.timeline.back().unwrap().kind, "attempt");
        // The violating and falling-back attempts are long gone; their marks stay.
        assert!(v.marks.violation && v.marks.tls_fallback);
        assert_eq!(v.violations, [Violation::TlsNotOffered]);
        // The record stops growing (same-length texts: within a few digits of the counters).
        assert!(size_at(&m) <= at_600 + 16, "{} > {at_600}", size_at(&m));
        assert_eq!(m.timeline_total, 1_999);
    }

    #[test]
    fn epochs_remembered_are_bounded() {
        let mut m = Stored::new("Q", "w", 1000);
        for epoch in 0..40 {
            let e = format!("E{epoch}");
            assert_eq!(
                m.apply("w", &e, &record(1, received("Q", true, &["b@y"]))),
                Fold::Applied
            );
        }
        assert_eq!(m.applied.len(), MAX_EPOCHS);
        assert_eq!(m.epochs.len(), MAX_EPOCHS);
        // The newest epoch still detects its replays.
        assert_eq!(
            m.apply("w", "E39", &record(1, received("Q", true, &["b@y"]))),
            Fold::Replay
        );
    }
}
