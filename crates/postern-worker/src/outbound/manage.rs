//! Operators' queue commands (docs/src/interfaces.md): list, retry one now, flush a destination,
//! delete
//! with or without a DSN. They act on the queue's in-memory schedule and on the spool; a message
//! in a delivery round is retried or deleted when its round ends.

use std::sync::Arc;

use postern_events::{self as events, Event};
use postern_policy::normalize_lookup_domain;
use postern_smtp::EnhancedStatus;

use super::bounce::Bounce;
use super::queue::{Queue, QueueError, blocking};
use super::state::{MessageState, RcptState};
use crate::spool;

/// What `GET /v1/queue` asks of a worker.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// A recipient domain (any form; compared normalised).
    pub destination: Option<String>,
    /// A substring of a recipient's last reply, ignoring case.
    pub reason: Option<String>,
    /// Only queue ids after this one.
    pub after: Option<String>,
    pub limit: usize,
}

/// One queued message as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub envelope: spool::Envelope,
    pub size: u64,
    pub recipients: Vec<RcptState>,
    pub in_delivery: bool,
}

/// The text of a recipient bounced by an operator's delete with a DSN (Postfix's wording for
/// `postsuper -e`).
pub const DELETED: &str = "5.0.0 message is administratively expired";
/// `DELETED`'s enhanced status, for the DSN.
const DELETED_STATUS: EnhancedStatus = EnhancedStatus(5, 0, 0);

fn domain_of(address: &str) -> Option<String> {
    address
        .rsplit_once('@')
        .and_then(|(_, d)| normalize_lookup_domain(d))
}

impl Filter {
    fn matches(&self, recipients: &[RcptState]) -> bool {
        let destination = self
            .destination
            .as_deref()
            .and_then(normalize_lookup_domain);
        let reason = self.reason.as_deref().map(str::to_lowercase);
        recipients.iter().any(|r| {
            r.open()
                && destination
                    .as_ref()
                    .is_none_or(|d| domain_of(&r.address).as_ref() == Some(d))
                && reason.as_ref().is_none_or(|want| {
                    r.last
                        .as_deref()
                        .is_some_and(|last| last.to_lowercase().contains(want))
                })
        })
    }
}

impl Queue {
    /// The envelope, size and recipients' state of a queued message (the state in memory
    /// when its file could not be written).
    fn load(&self, id: &str) -> std::io::Result<(spool::Envelope, u64, Vec<RcptState>)> {
        let (envelope, size) = self.spool.read_envelope(id)?;
        let saved = self.spool.read_state::<MessageState>(id)?;
        let recipients = self.scheduler.state_of(id, &envelope, saved).recipients;
        Ok((envelope, size, recipients))
    }

    /// Queued messages matching `filter`, in queue id order (reads the spool: run it on a
    /// blocking thread).
    pub fn list(&self, filter: &Filter) -> std::io::Result<Vec<Listed>> {
        let mut out = Vec::new();
        for id in self.spool.list()? {
            if out.len() >= filter.limit {
                break;
            }
            if filter.after.as_ref().is_some_and(|after| id <= *after) {
                continue;
            }
            let (envelope, size, recipients) = match self.load(&id) {
                Ok(m) => m,
                // Delivered or deleted since the directory was read.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if !filter.matches(&recipients) {
                continue;
            }
            let in_delivery = self.scheduler.schedule().running.contains(&id);
            out.push(Listed {
                envelope,
                size,
                recipients,
                in_delivery,
            });
        }
        Ok(out)
    }

    /// Makes every deferred recipient of `id` due now; whether the message is queued here.
    pub fn retry(&self, id: &str) -> bool {
        let found = self.scheduler.schedule().force(id);
        self.scheduler.wake.notify_one();
        found
    }

    /// Makes every message with a non-final recipient in `destination` (any, when `None`) due
    /// now; how many. Reads the spool: run it on a blocking thread.
    pub fn flush(&self, destination: Option<&str>) -> std::io::Result<usize> {
        let Some(destination) = destination else {
            // The whole queue: no need to read anything.
            let mut schedule = self.scheduler.schedule();
            let ids: Vec<String> = schedule.ids().collect();
            let count = ids.iter().filter(|id| schedule.force(id)).count();
            drop(schedule);
            self.scheduler.wake.notify_one();
            return Ok(count);
        };
        let filter = Filter {
            destination: Some(destination.to_string()),
            limit: usize::MAX,
            ..Filter::default()
        };
        let mut count = 0;
        for listed in self.list(&filter)? {
            if self.scheduler.schedule().force(&listed.envelope.id) {
                count += 1;
            }
        }
        self.scheduler.wake.notify_one();
        Ok(count)
    }

    /// Deletes `id` (bouncing its non-final recipients first when `dsn`); whether it is
    /// queued here. A message in a delivery round goes when the round ends.
    pub async fn delete(self: &Arc<Self>, id: &str, dsn: bool) -> Result<bool, QueueError> {
        {
            let mut schedule = self.scheduler.schedule();
            if schedule.running.contains(id) {
                schedule.deleting.insert(id.to_string(), dsn);
                return Ok(true);
            }
            if !schedule.remove(id) {
                return Ok(false);
            }
        }
        match self.delete_now(id, dsn).await {
            Ok(()) => Ok(true),
            Err(e) => {
                // Still in the spool: it must stay in the schedule, or nothing would deliver it.
                self.scheduler.schedule().insert(id.to_string(), 0);
                self.scheduler.wake.notify_one();
                Err(e)
            }
        }
    }

    /// Removes a message that no round is working on.
    pub(super) async fn delete_now(&self, id: &str, dsn: bool) -> Result<(), QueueError> {
        if dsn {
            let owned = id.to_string();
            let loaded = blocking(&self.spool, move |s| {
                s.load::<MessageState>(&owned, u64::MAX)
            })
            .await;
            let (envelope, message, saved) = match loaded {
                Ok(m) => m,
                // Its round ended it (every recipient final): nothing is left to delete.
                Err(QueueError::Read(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            let message = message.unwrap_or_default();
            let recipients = self.scheduler.state_of(id, &envelope, saved).recipients;
            let failed: Vec<Bounce<'_>> = recipients
                .iter()
                .filter(|r| r.open())
                .map(|r| Bounce {
                    recipient: &r.address,
                    reason: DELETED,
                    status: Some(DELETED_STATUS),
                    remote_mta: None,
                })
                .collect();
            let dsn = self.report(id, &envelope, &message, &failed).await?;
            for f in &failed {
                self.outbox.emit(
                    self.policy_version(),
                    Event::Bounced(events::Bounced {
                        queue_id: id.to_string(),
                        recipient: f.recipient.to_string(),
                        reason: f.reason.to_string(),
                        dsn: dsn.clone(),
                    }),
                );
            }
        }
        match self.spool.remove(id).await {
            Ok(()) => {}
            // Its round ended it meanwhile.
            Err(spool::SpoolError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        self.scheduler.keep_unsaved(id, None);
        self.outbox.emit(
            self.policy_version(),
            Event::Deleted(events::Deleted {
                queue_id: id.to_string(),
                dsn,
            }),
        );
        tracing::info!(%id, dsn, "queued message deleted by an operator");
        Ok(())
    }
}
