//! What a round records: each recipient's result (its state, the tracking events, the mail
//! log line and the metrics), one DSN for the recipients bounced, and the state file, or the
//! message's removal once every recipient is final.

use postern_events::{self as events, Event, PolicySource};
use postern_policy::RuleRef;

use super::bounce::Bounce;
use super::maillog;
use super::measure;
use super::queue::blocking;
use super::round::{RcptResult, Round};
use super::state::Fate;

impl Round<'_> {
    /// Records what recipient `i` got, tracks it and logs it (a delivery or a deferral; a
    /// bounce is logged with its DSN).
    pub(super) fn record(&mut self, i: usize, r: RcptResult) {
        let (queue, policy, id) = (self.queue, self.policy, self.id);
        let from = self.envelope.sender.as_str();
        let state = &mut self.state;
        let now = queue.scheduler.now();
        let fate = state.record(
            i,
            now,
            r.leg.clone(),
            &r.reply,
            r.remote_mta.as_deref(),
            &policy.settings.queue,
        );
        let recipient = state.recipients[i].address.clone();
        let metrics = &queue.policy.metrics;
        let decision = policy.outbound(&recipient);
        let level = decision.level;
        match fate {
            Fate::Delivered => {
                measure::recipient(metrics, "delivered", level);
                let age = now.saturating_sub(state.created);
                metrics.delivery_seconds.observe(age as f64);
            }
            Fate::Deferred { .. } => {
                measure::recipient(metrics, "deferred", level);
                let (tls_policy, remote) = (r.violation.is_some(), r.remote_mta.is_some());
                measure::deferred(metrics, tls_policy, remote, &r.reply);
            }
            Fate::Bounced => {}
        }
        // The reply as `record` stored it.
        let text = state.recipients[i].last.clone().unwrap_or_default();
        if !matches!(fate, Fate::Bounced) {
            maillog::Outcome {
                queue_id: id,
                from,
                to: &recipient,
                leg: r.leg.as_ref(),
                delay_s: now.saturating_sub(state.created),
                dsn: state.recipients[i].last_status,
                status: if matches!(fate, Fate::Delivered) {
                    "sent"
                } else {
                    "deferred"
                },
                reply: &text,
            }
            .log();
        }
        queue.track(
            policy,
            Event::Attempt(events::Attempt {
                queue_id: id.to_string(),
                recipient: recipient.clone(),
                leg: r.leg,
                reply: text.clone(),
                violation: r.violation,
                policy: own_rule(r.policy, decision.level_rule),
            }),
        );
        match fate {
            Fate::Delivered => queue.track(
                policy,
                Event::Delivered(events::Delivered {
                    queue_id: id.to_string(),
                    recipient,
                    reply: text,
                }),
            ),
            Fate::Deferred { next_attempt } => queue.track(
                policy,
                Event::Deferred(events::Deferred {
                    queue_id: id.to_string(),
                    recipient,
                    reason: text,
                    next_attempt_ms: next_attempt * 1000,
                    violation: r.violation,
                }),
            ),
            // Tracked once its DSN is queued (`report_bounces`).
            Fate::Bounced => {}
        }
    }

    /// Queues one DSN for every bounced recipient not yet reported; a DSN that cannot be
    /// spooled is tried again at the next round (the recipients stay bounced meanwhile).
    pub(super) async fn report_bounces(&mut self) {
        let (queue, policy, id) = (self.queue, self.policy, self.id);
        let pending = self.state.dsn_pending();
        if pending.is_empty() {
            return;
        }
        let message = match self.body.take() {
            Some(b) => b,
            None => {
                let owned = id.to_string();
                match blocking(&queue.spool, move |s| s.read(&owned)).await {
                    Ok((_, m)) => m.into(),
                    Err(e) => {
                        tracing::error!(%id, error = %e, "reading a bounced message for its DSN failed; retried");
                        return;
                    }
                }
            }
        };
        let (envelope, state) = (&self.envelope, &mut self.state);
        let failed: Vec<Bounce<'_>> = pending
            .iter()
            .map(|i| {
                let r = &state.recipients[*i];
                Bounce {
                    recipient: &r.address,
                    reason: r.last.as_deref().unwrap_or("5.0.0 undeliverable"),
                    status: r.last_status,
                    remote_mta: r.remote_mta.as_deref(),
                }
            })
            .collect();
        let dsn = match queue.report(id, envelope, &message, &failed).await {
            Ok(dsn) => dsn,
            Err(e) => {
                tracing::error!(%id, error = %e, "queueing a DSN failed; retried");
                return;
            }
        };
        let now = queue.scheduler.now();
        let metrics = &queue.policy.metrics;
        for i in pending {
            let r = &mut state.recipients[i];
            r.dsn_pending = false;
            let reason = r.last.as_deref().unwrap_or_default();
            // A 4xx reason that ended in a bounce is the queue lifetime running out.
            let status = if r.last_status.is_some_and(|s| s.class() == 4) {
                "expired"
            } else {
                "bounced"
            };
            maillog::Outcome {
                queue_id: id,
                from: &envelope.sender,
                to: &r.address,
                leg: r.history.last().and_then(|a| a.leg.as_ref()),
                delay_s: now.saturating_sub(state.created),
                dsn: r.last_status,
                status,
                reply: reason,
            }
            .log();
            measure::recipient(metrics, status, policy.outbound(&r.address).level);
            queue.track(
                policy,
                Event::Bounced(events::Bounced {
                    queue_id: id.to_string(),
                    recipient: r.address.clone(),
                    reason: r.last.clone().unwrap_or_default(),
                    dsn: dsn.clone(),
                }),
            );
        }
    }

    /// Makes the round's result durable: the message leaves the spool when finished, else its
    /// state is written. Either may fail; the state is then kept in memory and wins over the
    /// file, so that nothing delivered is delivered again. When the message is next due.
    pub(super) async fn save(self, retry_s: u64) -> Option<u64> {
        let (queue, id, state) = (self.queue, self.id, self.state);
        let retry = queue.scheduler.now() + retry_s;
        if state.finished() {
            return match queue.spool.remove(id).await {
                Ok(()) => {
                    queue.scheduler.keep_unsaved(id, None);
                    None
                }
                Err(e) => {
                    tracing::error!(%id, error = %e, "removing a finished message failed; retried");
                    queue.scheduler.keep_unsaved(id, Some(state));
                    Some(retry)
                }
            };
        }
        let mut next = state.next_due().unwrap_or(retry);
        if !state.dsn_pending().is_empty() {
            next = next.min(retry);
        }
        match queue.spool.write_state(id, &state).await {
            Ok(()) => queue.scheduler.keep_unsaved(id, None),
            Err(e) => {
                tracing::error!(%id, error = %e, "writing a delivery state failed; kept in memory");
                queue.scheduler.keep_unsaved(id, Some(state));
            }
        }
        Some(next)
    }
}

/// A rule source names the recipient's own rule (a relay hop's group holds recipients of
/// several domains, each with its rule).
fn own_rule(source: PolicySource, rule: RuleRef<'_>) -> PolicySource {
    match (source, rule) {
        (PolicySource::Rule { .. }, RuleRef::Rule(rule)) => PolicySource::Rule {
            id: rule.id.clone(),
        },
        (source, _) => source,
    }
}
