//! The delivery queue (docs/src/policy.md#outbound, policy.md#queue-retries-and-bounces): every
//! spooled message is delivered from the spool
//! in rounds (`round.rs`), scheduled in memory (`schedule.rs`) from the spool listing at start,
//! the ids of new messages, and each round's next due time. Connections are bounded twice: per
//! destination, then overall, and a round waiting for its destination's slot holds no global
//! one. Progress is kept in `<id>.state` beside the message; when writing it fails, the state
//! stays in memory, so a recipient that got a 2xx is never sent the message again by this
//! worker (a crash between the 2xx and the write is the only duplicate, as in Postfix).

use std::sync::Arc;
use std::time::Duration;

use postern_events::Event;
use postern_policy::CompiledPolicy;
use tokio::sync::{mpsc, watch};

use super::connector::Connector;
use super::dns::Dns;
use super::own::OwnAddresses;
use super::route::RouteError;
use super::scheduler::Scheduler;
use crate::outbox::Outbox;
use crate::policy::PolicyStore;
use crate::spool::{Spool, SpoolError};

/// A round that could not finish its local work (a spool read, a state write, a DSN, a
/// removal) is due again after this (`queue.first_retry_s`, at most a minute), without
/// delivering anything already delivered.
pub fn local_retry_s(policy: &CompiledPolicy) -> u64 {
    u64::from(policy.settings.queue.first_retry_s).min(60)
}

/// Rounds in flight at most (Postfix's `qmgr_message_active_limit`). Rounds beyond the
/// connection limits wait for a slot holding an envelope, a state and at most a small body
/// (`round::SMALL_MESSAGE`), so a stalled destination's backlog never keeps other mail from
/// starting its round.
const ACTIVE_LIMIT: usize = 20_000;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("spool read failed: {0}")]
    Read(#[from] std::io::Error),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("a blocking task failed: {0}")]
    Task(String),
    #[error("delivery stopped")]
    Stopped,
    #[error("not an envelope address: {0}")]
    Address(String),
}

/// The queue: parts with one owner each. The scheduler owns when messages are due; the
/// connector owns routes, connections and slots; the MTA-STS resolver owns the domains'
/// policies; a `Round` (`round.rs`) owns one message while it is delivered.
pub struct Queue {
    pub(super) spool: Spool,
    pub(super) policy: Arc<PolicyStore>,
    /// Our host name (DSNs and reports are from it; the connector says EHLO with it).
    pub(super) hostname: String,
    /// Ids of newly queued messages (from the SMTP sessions, and our own DSNs).
    pub(super) queued: mpsc::UnboundedSender<String>,
    pub(super) outbox: Arc<Outbox>,
    pub(super) scheduler: Scheduler,
    pub(super) connector: Connector,
    /// MTA-STS policies of recipient domains (issue 15).
    pub(super) sts: crate::sts::StsCache,
}

impl Queue {
    pub fn new(
        spool: Spool,
        policy: Arc<PolicyStore>,
        hostname: String,
        own: OwnAddresses,
        queued: mpsc::UnboundedSender<String>,
        outbox: Arc<Outbox>,
    ) -> Arc<Queue> {
        let dns = Arc::new(Dns::default());
        let scheduler = Scheduler::new(spool.list().unwrap_or_default());
        let sts = crate::sts::StsCache::open(spool.root(), dns.clone());
        Arc::new(Queue {
            connector: Connector::new(dns, hostname.clone(), own),
            scheduler,
            sts,
            spool,
            policy,
            hostname,
            queued,
            outbox,
        })
    }

    /// Runs delivery rounds until `shutdown` turns true.
    pub async fn run(
        self: Arc<Self>,
        mut new_ids: mpsc::UnboundedReceiver<String>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let (done_tx, mut done) = mpsc::unbounded_channel::<(String, Option<u64>)>();
        loop {
            if let Some(policy) = self.policy.current() {
                loop {
                    let id = {
                        let mut schedule = self.scheduler.schedule();
                        if schedule.running.len() >= ACTIVE_LIMIT {
                            break;
                        }
                        match schedule.take_due(self.scheduler.now()) {
                            Some(id) => id,
                            None => break,
                        }
                    };
                    let (this, policy, done_tx) = (self.clone(), policy.clone(), done_tx.clone());
                    tokio::spawn(async move {
                        let next = match this.round(&id, &policy).await {
                            Ok(next) => next,
                            Err(e) => {
                                tracing::error!(%id, error = %e, "delivery round failed");
                                Some(this.scheduler.now() + local_retry_s(&policy))
                            }
                        };
                        let _ = done_tx.send((id, next));
                    });
                }
            }
            let wait = self
                .scheduler
                .schedule()
                .next_due()
                .map_or(Duration::from_secs(1), |at| {
                    Duration::from_secs(at.saturating_sub(self.scheduler.now()).min(1))
                });
            tokio::select! {
                Some(id) = new_ids.recv() => self.scheduler.schedule().insert(id, 0),
                Some((id, next)) = done.recv() => self.round_done(id, next),
                _ = self.scheduler.wake.notified() => {}
                _ = tokio::time::sleep(wait.max(Duration::from_millis(50))) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// Reschedules a message after its round, or carries out what was asked during it.
    fn round_done(self: &Arc<Self>, id: String, next: Option<u64>) {
        let deletion = self.scheduler.schedule().round_done(&id, next);
        if let Some(dsn) = deletion {
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.delete_now(&id, dsn).await {
                    tracing::error!(%id, error = %e, "deleting a queued message failed");
                }
            });
        }
    }

    pub(super) fn policy_version(&self) -> u64 {
        self.policy.version()
    }

    /// Records a tracking event under `policy`'s version.
    pub(super) fn track(&self, policy: &CompiledPolicy, event: Event) {
        self.outbox.emit(policy.version, event);
    }

    /// Messages queued here (waiting or in a round).
    pub fn queued(&self) -> usize {
        self.scheduler.schedule().len()
    }

    /// (active, deferred): messages due or in a round, and those waiting for a later attempt.
    pub fn counts(&self) -> (usize, usize) {
        self.scheduler.counts()
    }
}

/// Runs `f` on a blocking thread with the spool (spool files are read and written there, never
/// on the runtime's threads).
pub(super) async fn blocking<T: Send + 'static>(
    spool: &Spool,
    f: impl FnOnce(&Spool) -> std::io::Result<T> + Send + 'static,
) -> Result<T, QueueError> {
    let spool = spool.clone();
    tokio::task::spawn_blocking(move || f(&spool))
        .await
        .map_err(|e| QueueError::Task(e.to_string()))?
        .map_err(QueueError::Read)
}
