//! When each queued message is next due, and what operators asked for it: pure bookkeeping
//! with the time passed in, so that the retry schedule is tested without waiting.

use std::collections::{BTreeSet, HashMap, HashSet};

use postern_policy::QueueSettings;

/// Unix seconds now; the queue's only source of time, replaceable in tests.
pub trait Clock: Send + Sync {
    fn now(&self) -> u64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        postern_time::now_s()
    }
}

/// The delay before attempt `attempts + 1` of a deferred recipient: `first_retry_s`, doubling
/// to `max_retry_s` (docs/src/policy.md#queue-retries-and-bounces).
pub fn backoff(attempts: u32, queue: &QueueSettings) -> u64 {
    u64::from(queue.first_retry_s)
        .saturating_mul(1 << attempts.saturating_sub(1).min(20))
        .min(u64::from(queue.max_retry_s))
}

#[derive(Default)]
pub struct Schedule {
    /// (due, id), earliest first.
    due: BTreeSet<(u64, String)>,
    /// id → due, for the operators' commands.
    at: HashMap<String, u64>,
    /// Messages in a delivery round now.
    pub(super) running: HashSet<String>,
    /// Messages whose deferred recipients are due at their next round, whatever their time.
    forced: HashSet<String>,
    /// Deletions asked for during a round, done when it ends (the flag: with a DSN).
    pub(super) deleting: HashMap<String, bool>,
}

impl Schedule {
    pub fn insert(&mut self, id: String, at: u64) {
        if let Some(old) = self.at.insert(id.clone(), at) {
            self.due.remove(&(old, id.clone()));
        }
        self.due.insert((at, id));
    }

    pub fn remove(&mut self, id: &str) -> bool {
        match self.at.remove(id) {
            Some(at) => self.due.remove(&(at, id.to_string())),
            None => false,
        }
    }

    /// The first message due by `now`, marked running.
    pub fn take_due(&mut self, now: u64) -> Option<String> {
        let (at, _) = self.due.first()?;
        if *at > now {
            return None;
        }
        let (_, id) = self.due.pop_first()?;
        self.at.remove(&id);
        self.running.insert(id.clone());
        Some(id)
    }

    /// When the earliest waiting message is due.
    pub fn next_due(&self) -> Option<u64> {
        self.due.first().map(|(at, _)| *at)
    }

    /// Makes `id` due now with every deferred recipient; whether it is queued here.
    pub fn force(&mut self, id: &str) -> bool {
        if self.running.contains(id) {
            self.forced.insert(id.to_string());
            true
        } else if self.at.contains_key(id) {
            self.forced.insert(id.to_string());
            self.insert(id.to_string(), 0);
            true
        } else {
            false
        }
    }

    /// Whether `id`'s round was forced (and clears it: the round takes it).
    pub fn take_forced(&mut self, id: &str) -> bool {
        self.forced.remove(id)
    }

    /// A round of `id` ended: due again at `next` (`None`: it left the queue), at once when
    /// an operator forced it meanwhile. A deletion asked for meanwhile is returned instead.
    pub fn round_done(&mut self, id: &str, next: Option<u64>) -> Option<bool> {
        self.running.remove(id);
        if let Some(dsn) = self.deleting.remove(id) {
            self.forced.remove(id);
            return Some(dsn);
        }
        if let Some(at) = next {
            let at = if self.forced.contains(id) { 0 } else { at };
            self.insert(id.to_string(), at);
        } else {
            self.forced.remove(id);
        }
        None
    }

    /// Every queued id (waiting or in a round).
    pub fn ids(&self) -> impl Iterator<Item = String> + '_ {
        self.at.keys().chain(self.running.iter()).cloned()
    }

    pub fn len(&self) -> usize {
        self.at.len() + self.running.len()
    }

    /// Messages waiting for an attempt later than `now`.
    pub fn waiting_after(&self, now: u64) -> usize {
        self.due.range((now + 1, String::new())..).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_to_the_maximum() {
        let q = QueueSettings {
            first_retry_s: 300,
            max_retry_s: 3600,
            lifetime_s: 5 * 86400,
        };
        let delays: Vec<u64> = (1..=6).map(|n| backoff(n, &q)).collect();
        assert_eq!(delays, [300, 600, 1200, 2400, 3600, 3600]);
        assert_eq!(backoff(u32::MAX, &q), 3600, "no overflow");
    }

    #[test]
    fn messages_come_due_in_time_order() {
        let mut s = Schedule::default();
        s.insert("B".into(), 20);
        s.insert("A".into(), 10);
        assert_eq!(s.next_due(), Some(10));
        assert_eq!(s.take_due(9), None);
        assert_eq!(s.take_due(10).as_deref(), Some("A"));
        assert_eq!(s.take_due(15), None);
        assert_eq!(s.len(), 2, "a running message is still queued");
        s.insert("B".into(), 5);
        assert_eq!(s.take_due(5).as_deref(), Some("B"), "rescheduling moves it");
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn a_forced_message_is_due_now_and_after_its_running_round() {
        let mut s = Schedule::default();
        s.insert("A".into(), 1000);
        assert!(s.force("A"));
        assert_eq!(s.take_due(0).as_deref(), Some("A"));
        assert!(s.take_forced("A"));
        assert!(!s.take_forced("A"));
        // Forced while its round runs: due at once when the round ends.
        assert!(s.force("A"));
        assert_eq!(s.round_done("A", Some(5000)), None);
        assert_eq!(s.next_due(), Some(0));
        assert!(!s.force("Z"), "unknown ids are not queued here");
    }

    #[test]
    fn a_deletion_asked_during_a_round_wins_over_rescheduling() {
        let mut s = Schedule::default();
        s.insert("A".into(), 0);
        s.take_due(0);
        s.deleting.insert("A".into(), true);
        assert_eq!(s.round_done("A", Some(60)), Some(true));
        assert!(s.is_empty());
        s.insert("B".into(), 0);
        s.take_due(0);
        assert_eq!(s.round_done("B", None), None);
        assert!(s.is_empty(), "a finished message leaves the schedule");
    }
}
