//! The delivery state of one queued message (`<id>.state` beside it): per recipient its status,
//! attempt count, next attempt, last reply and the last few attempts (bounded: a message
//! deferred for five days does not grow without end). Pure: the queue decides when to write it.

use postern_events::Leg;
use postern_policy::QueueSettings;
use postern_smtp::{EnhancedStatus, Reply};
use serde::{Deserialize, Serialize};

use super::schedule::backoff;
use crate::spool;

/// Attempts kept per recipient (the count covers all of them).
pub const HISTORY_KEPT: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RcptStatus {
    Pending,
    Deferred,
    Delivered,
    Bounced,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RcptState {
    pub address: String,
    pub status: RcptStatus,
    pub attempts: u32,
    /// Unix seconds.
    pub next_attempt: u64,
    /// The last reply or reason.
    pub last: Option<String>,
    /// Its enhanced status (the DSN's Status), read from the reply where it was received.
    #[serde(default)]
    pub last_status: Option<EnhancedStatus>,
    /// The last attempt's next hop, `host[ip]`.
    pub host: Option<String>,
    /// The host name of the next hop that gave `last`, when it was its reply (the DSN's
    /// Remote-MTA); `None` when `last` is our own reason.
    #[serde(default)]
    pub remote_mta: Option<String>,
    /// Bounced, and its DSN is not spooled yet (a failed spool write is retried).
    #[serde(default)]
    pub dsn_pending: bool,
    /// The last attempts, oldest first (docs/src/tracking.md: host, IP, TLS, reply and reason).
    #[serde(default)]
    pub history: Vec<AttemptRecord>,
}

impl RcptState {
    pub fn pending(address: &str) -> RcptState {
        RcptState {
            address: address.to_string(),
            status: RcptStatus::Pending,
            attempts: 0,
            next_attempt: 0,
            last: None,
            last_status: None,
            host: None,
            remote_mta: None,
            dsn_pending: false,
            history: Vec::new(),
        }
    }

    /// Still to be delivered.
    pub fn open(&self) -> bool {
        matches!(self.status, RcptStatus::Pending | RcptStatus::Deferred)
    }
}

/// One delivery attempt of one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Unix seconds.
    pub at: u64,
    /// The next hop reached; `None` when none was (no route, say).
    pub leg: Option<Leg>,
    /// The reply, or our own reason.
    pub reply: String,
}

/// What an attempt made of a recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Delivered,
    Deferred { next_attempt: u64 },
    Bounced,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageState {
    /// Unix seconds the message was received (its age, which `queue.lifetime_s` bounds).
    pub created: u64,
    pub recipients: Vec<RcptState>,
}

impl MessageState {
    /// A message not yet attempted; its age counts from its arrival, whenever the first
    /// round runs.
    pub fn new(envelope: &spool::Envelope, now: u64) -> MessageState {
        let created =
            postern_time::parse_rfc3339_ms(&envelope.received_at).map_or(now, |ms| ms / 1000);
        MessageState {
            created,
            recipients: envelope
                .recipients
                .iter()
                .map(|r| RcptState::pending(r))
                .collect(),
        }
    }

    /// The recipients to attempt now.
    pub fn due(&self, now: u64, forced: bool) -> Vec<usize> {
        (0..self.recipients.len())
            .filter(|i| {
                let r = &self.recipients[*i];
                r.open() && (forced || r.next_attempt <= now)
            })
            .collect()
    }

    /// Records an attempt of recipient `i` that got `reply` (`remote_mta`: the next hop's name
    /// when the reply is its own). Returns what became of the recipient.
    pub fn record(
        &mut self,
        i: usize,
        now: u64,
        leg: Option<Leg>,
        reply: &Reply,
        remote_mta: Option<&str>,
        queue: &QueueSettings,
    ) -> Fate {
        let created = self.created;
        let r = &mut self.recipients[i];
        let text = reply.one_line();
        r.attempts = r.attempts.saturating_add(1);
        r.host = leg.as_ref().map(|l| format!("{}[{}]", l.host, l.ip));
        r.remote_mta = remote_mta.map(str::to_string);
        r.last = Some(text.clone());
        r.last_status = reply.status;
        if r.history.len() >= HISTORY_KEPT {
            r.history.remove(0);
        }
        r.history.push(AttemptRecord {
            at: now,
            leg,
            reply: text,
        });
        if reply.code < 300 {
            r.status = RcptStatus::Delivered;
            Fate::Delivered
        } else if reply.code >= 500 {
            r.status = RcptStatus::Bounced;
            r.dsn_pending = true;
            Fate::Bounced
        } else {
            r.status = RcptStatus::Deferred;
            // Never past the end of the lifetime, so that expiry is on time.
            let end = created.saturating_add(u64::from(queue.lifetime_s)).max(now);
            r.next_attempt = (now + backoff(r.attempts, queue)).min(end);
            Fate::Deferred {
                next_attempt: r.next_attempt,
            }
        }
    }

    /// Bounces recipient `i` for a reason of our own (no next hop involved).
    pub fn bounce(&mut self, i: usize, reason: &Reply) {
        let r = &mut self.recipients[i];
        r.status = RcptStatus::Bounced;
        r.dsn_pending = true;
        r.remote_mta = None;
        r.last = Some(reason.one_line());
        r.last_status = reason.status;
    }

    /// Bounces every open recipient once the message is older than `lifetime_s`; their indices.
    pub fn expire(&mut self, now: u64, queue: &QueueSettings) -> Vec<usize> {
        if now < self.created.saturating_add(u64::from(queue.lifetime_s)) {
            return Vec::new();
        }
        let expired: Vec<usize> = (0..self.recipients.len())
            .filter(|i| self.recipients[*i].open())
            .collect();
        for i in &expired {
            let r = &mut self.recipients[*i];
            let last = r.last.clone().unwrap_or_else(|| "none".into());
            r.status = RcptStatus::Bounced;
            r.dsn_pending = true;
            r.last = Some(format!("4.4.7 delivery time expired; last: {last}"));
        }
        expired
    }

    /// Recipients whose DSN is still to be spooled.
    pub fn dsn_pending(&self) -> Vec<usize> {
        (0..self.recipients.len())
            .filter(|i| self.recipients[*i].dsn_pending)
            .collect()
    }

    /// Nothing left to do: every recipient final and reported.
    pub fn finished(&self) -> bool {
        self.recipients.iter().all(|r| !r.open() && !r.dsn_pending)
    }

    /// When the next round is due: the earliest deferred recipient's time.
    pub fn next_due(&self) -> Option<u64> {
        self.recipients
            .iter()
            .filter(|r| r.open())
            .map(|r| r.next_attempt)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> QueueSettings {
        QueueSettings {
            first_retry_s: 300,
            max_retry_s: 3600,
            lifetime_s: 7200,
        }
    }

    fn state(recipients: &[&str]) -> MessageState {
        MessageState::new(
            &spool::Envelope {
                id: "ID".into(),
                sender: "a@b.example".into(),
                recipients: recipients.iter().map(|r| r.to_string()).collect(),
                received_at: "2026-12-01T00:00:00Z".into(),
                client_ip: "192.0.2.1".into(),
                helo: "c".into(),
                tls: None,
                policy_version: 1,
                smtputf8: false,
                eight_bit: false,
                tls_optional: false,
            },
            0,
        )
    }

    const RECEIVED: u64 = 1_796_083_200; // 2026-12-01T00:00:00Z

    #[test]
    fn age_counts_from_arrival_not_from_the_first_round() {
        let s = state(&["x@y.example"]);
        assert_eq!(s.created, RECEIVED);
        let mut s = s;
        assert!(s.expire(RECEIVED + 7199, &queue()).is_empty());
        assert_eq!(s.expire(RECEIVED + 7200, &queue()), [0]);
        assert_eq!(
            s.recipients[0].last.as_deref(),
            Some("4.4.7 delivery time expired; last: none")
        );
        assert!(s.recipients[0].dsn_pending);
        assert!(!s.finished(), "its DSN is still to be sent");
    }

    #[test]
    fn each_recipient_has_its_own_fate_and_retry_time() {
        let mut s = state(&["ok@y.example", "later@y.example", "no@y.example"]);
        let now = RECEIVED + 10;
        assert_eq!(s.due(now, false), [0, 1, 2]);
        let q = queue();
        assert_eq!(
            s.record(0, now, None, &Reply::new(250, "2.0.0 ok"), Some("mx"), &q),
            Fate::Delivered
        );
        assert_eq!(
            s.record(
                1,
                now,
                None,
                &Reply::new(451, "4.3.0 later"),
                Some("mx"),
                &q
            ),
            Fate::Deferred {
                next_attempt: now + 300
            }
        );
        assert_eq!(
            s.record(2, now, None, &Reply::new(550, "5.1.1 no"), Some("mx"), &q),
            Fate::Bounced
        );
        assert_eq!(s.due(now + 299, false), Vec::<usize>::new());
        assert_eq!(s.due(now + 299, true), [1], "forced: the deferred one only");
        assert_eq!(s.next_due(), Some(now + 300));
        assert_eq!(s.dsn_pending(), [2]);
        s.recipients[2].dsn_pending = false;
        assert!(!s.finished());
        s.record(
            1,
            now + 300,
            None,
            &Reply::new(250, "2.0.0 ok"),
            Some("mx"),
            &q,
        );
        assert!(s.finished());
    }

    #[test]
    fn retries_never_pass_the_lifetime_and_history_is_bounded() {
        let mut s = state(&["later@y.example"]);
        let q = queue();
        let mut now = RECEIVED;
        for _ in 0..50 {
            if let Fate::Deferred { next_attempt } =
                s.record(0, now, None, &Reply::new(421, "4.4.2 busy"), None, &q)
            {
                // Due again by the end of the lifetime (or at once when past it).
                assert!(next_attempt <= (RECEIVED + 7200).max(now), "{next_attempt}");
                now = next_attempt.max(now + 1);
            }
        }
        assert_eq!(s.recipients[0].attempts, 50);
        assert_eq!(s.recipients[0].history.len(), HISTORY_KEPT);
    }
}
