//! The scheduler: when each queued message is next due (`Schedule`), the delivery states kept
//! in memory because their file could not be written, the clock, and the wake-up the run loop
//! waits on after an operator's command. It owns that state; rounds and commands ask it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::schedule::{Clock, Schedule, SystemClock};
use super::state::MessageState;
use crate::spool;

pub struct Scheduler {
    schedule: Mutex<Schedule>,
    /// States newer than their file (writing it failed): they win over the file.
    unsaved: Mutex<HashMap<String, MessageState>>,
    clock: Arc<dyn Clock>,
    /// Wakes the run loop after an operator's command.
    pub(super) wake: Notify,
}

impl Scheduler {
    /// Every message in `ids` due at once.
    pub fn new(ids: impl IntoIterator<Item = String>) -> Scheduler {
        let mut schedule = Schedule::default();
        for id in ids {
            schedule.insert(id, 0);
        }
        Scheduler {
            schedule: Mutex::new(schedule),
            unsaved: Mutex::default(),
            clock: Arc::new(SystemClock),
            wake: Notify::new(),
        }
    }

    pub(super) fn schedule(&self) -> MutexGuard<'_, Schedule> {
        self.schedule.lock().expect("schedule lock")
    }

    pub(super) fn now(&self) -> u64 {
        self.clock.now()
    }

    pub(super) fn unsaved(&self) -> MutexGuard<'_, HashMap<String, MessageState>> {
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

    /// Keeps `state` in memory (its file could not be written), or forgets the memory copy
    /// (`None`: the file is current, or the message is gone).
    pub(super) fn keep_unsaved(&self, id: &str, state: Option<MessageState>) {
        match state {
            Some(state) => self.unsaved().insert(id.to_string(), state),
            None => self.unsaved().remove(id),
        };
    }

    /// (active, deferred): messages due or in a round, and those waiting for a later attempt.
    pub fn counts(&self) -> (usize, usize) {
        let now = self.now();
        let schedule = self.schedule();
        let deferred = schedule.waiting_after(now);
        (schedule.len() - deferred, deferred)
    }
}
