//! The delivery queue (PRODUCT.md 2.3, 2.4): every spooled message is delivered from the spool
//! in rounds (`round.rs`), scheduled in memory (`schedule.rs`) from the spool listing at start,
//! the ids of new messages, and each round's next due time. Connections are bounded twice: per
//! destination, then overall, and a round waiting for its destination's slot holds no global
//! one. Progress is kept in `<id>.state` beside the message; when writing it fails, the state
//! stays in memory, so a recipient that got a 2xx is never sent the message again by this
//! worker (a crash between the 2xx and the write is the only duplicate, as in Postfix).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postern_events::Event;
use postern_policy::CompiledPolicy;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};

use super::own::OwnAddresses;
use super::pool::Pool;
use super::route::{RouteError, Router};
use super::schedule::{Clock, Schedule, SystemClock};
use super::state::MessageState;
use crate::outbox::Outbox;
use crate::policy::PolicyStore;
use crate::spool::{self, Spool, SpoolError};

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

type RouterKey = (Vec<String>, u16, Vec<ipnet::IpNet>);

pub struct Queue {
    pub(super) spool: Spool,
    /// MTA-STS policies of recipient domains (issue 15).
    pub(super) sts: crate::sts::StsCache,
    pub(super) policy: Arc<PolicyStore>,
    pub(super) hostname: String,
    /// The addresses that reach this worker: a next hop among them loops.
    pub(super) own: OwnAddresses,
    /// Ids of newly queued messages (from the SMTP sessions, and our own DSNs).
    pub(super) queued: mpsc::UnboundedSender<String>,
    pub(super) outbox: Arc<Outbox>,
    pub(super) schedule: Mutex<Schedule>,
    pub(super) clock: Arc<dyn Clock>,
    /// Wakes the run loop after an operator's command.
    pub(super) wake: Notify,
    /// States newer than their file (writing it failed): they win over the file.
    pub(super) unsaved: Mutex<HashMap<String, MessageState>>,
    /// Cached connections to next hops.
    pub(super) pool: Arc<Pool>,
    /// The resolver for the current (nameservers, MX port) settings.
    router: Mutex<Option<(RouterKey, Arc<Router>)>>,
    /// Connections overall (`delivery.concurrency`), replaced when the limit changes.
    global: Mutex<Option<(u32, Arc<Semaphore>)>>,
    /// Connections per destination (`delivery.per_destination_concurrency`).
    destinations: super::destinations::Destinations,
}

/// The two slots a delivery holds while it talks to a next hop.
pub(super) struct Slots {
    _destination: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
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
        let mut schedule = Schedule::default();
        for id in spool.list().unwrap_or_default() {
            schedule.insert(id, 0);
        }
        let sts = crate::sts::StsCache::open(spool.root());
        Arc::new(Queue {
            sts,
            spool,
            policy,
            hostname,
            own,
            queued,
            outbox,
            schedule: Mutex::new(schedule),
            clock: Arc::new(SystemClock),
            wake: Notify::new(),
            unsaved: Mutex::default(),
            pool: Pool::start(),
            router: Mutex::new(None),
            global: Mutex::new(None),
            destinations: Default::default(),
        })
    }

    pub(super) fn schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().expect("schedule lock")
    }

    pub(super) fn now(&self) -> u64 {
        self.clock.now()
    }

    pub(super) fn unsaved(&self) -> std::sync::MutexGuard<'_, HashMap<String, MessageState>> {
        self.unsaved.lock().expect("unsaved lock")
    }

    /// The delivery state of `id`: the one kept in memory when its file could not be written,
    /// else `saved` (the file's), else a new one.
    pub(super) fn state_of(
        &self,
        id: &str,
        envelope: &spool::Envelope,
        saved: Option<MessageState>,
    ) -> MessageState {
        let unsaved = self.unsaved().get(id).cloned();
        unsaved
            .or(saved)
            .unwrap_or_else(|| MessageState::new(envelope, self.now()))
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
                        let mut schedule = self.schedule();
                        if schedule.running.len() >= ACTIVE_LIMIT {
                            break;
                        }
                        match schedule.take_due(self.now()) {
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
                                Some(this.now() + local_retry_s(&policy))
                            }
                        };
                        let _ = done_tx.send((id, next));
                    });
                }
            }
            let wait = self
                .schedule()
                .next_due()
                .map_or(Duration::from_secs(1), |at| {
                    Duration::from_secs(at.saturating_sub(self.now()).min(1))
                });
            tokio::select! {
                Some(id) = new_ids.recv() => self.schedule().insert(id, 0),
                Some((id, next)) = done.recv() => self.round_done(id, next),
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait.max(Duration::from_millis(50))) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// Reschedules a message after its round, or carries out what was asked during it.
    fn round_done(self: &Arc<Self>, id: String, next: Option<u64>) {
        let deletion = self.schedule().round_done(&id, next);
        if let Some(dsn) = deletion {
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.delete_now(&id, dsn).await {
                    tracing::error!(%id, error = %e, "deleting a queued message failed");
                }
            });
        }
    }

    pub(super) fn router(&self, policy: &CompiledPolicy) -> Result<Arc<Router>, RouteError> {
        let d = &policy.settings.delivery;
        let key = (d.nameservers.clone(), d.mx_port, d.fetch_networks());
        let mut cache = self.router.lock().expect("router lock");
        if let Some((k, r)) = cache.as_ref()
            && *k == key
        {
            return Ok(r.clone());
        }
        let router = Arc::new(Router::new(&key.0, key.1)?.with_fetch_networks(key.2.clone()));
        *cache = Some((key, router.clone()));
        Ok(router)
    }

    /// Waits for a connection slot to `destination`, then for one overall: a delivery waiting
    /// behind a slow destination never holds a slot other destinations could use.
    pub(super) async fn slots(
        &self,
        destination: &str,
        policy: &CompiledPolicy,
    ) -> Result<Slots, QueueError> {
        let d = &policy.settings.delivery;
        let per_destination = self
            .destinations
            .semaphore(destination, d.per_destination_concurrency);
        let global = {
            let mut global = self.global.lock().expect("global slots lock");
            match global.as_ref() {
                Some((limit, s)) if *limit == d.concurrency => s.clone(),
                _ => {
                    let s = Arc::new(Semaphore::new(d.concurrency.max(1) as usize));
                    *global = Some((d.concurrency, s.clone()));
                    s
                }
            }
        };
        let destination = per_destination
            .acquire_owned()
            .await
            .map_err(|_| QueueError::Stopped)?;
        let global = global
            .acquire_owned()
            .await
            .map_err(|_| QueueError::Stopped)?;
        Ok(Slots {
            _destination: destination,
            _global: global,
        })
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
        self.schedule().len()
    }

    /// (active, deferred): messages due or in a round, and those waiting for a later attempt.
    pub fn counts(&self) -> (usize, usize) {
        let now = self.now();
        let schedule = self.schedule();
        let deferred = schedule.waiting_after(now);
        (schedule.len() - deferred, deferred)
    }
}
