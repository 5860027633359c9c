//! The policy cache's state machine (RFC 8461 5.1), for one domain: given what DNS said, the
//! cached policy and the last failed fetch, whether to fetch and what to use meanwhile. A cached
//! policy is replaced only after a fetch and parse succeed; an unexpired one is used whenever
//! DNS or HTTPS fails; failures are retried no sooner than `FAILURE_BACKOFF_S` later.

use serde::{Deserialize, Serialize};

use crate::policy::Policy;

/// After a failed fetch, the domain's policy is not fetched again for this long (seconds).
pub const FAILURE_BACKOFF_S: u64 = 300;

/// A policy is used for at least this long (seconds) whatever its `max_age`: a domain that
/// publishes `max_age: 1` would otherwise have its policy fetched for every delivery.
pub const MIN_LIFETIME_S: u64 = 60;

/// A policy as fetched: its record id, the policy, its text and when it was fetched (unix s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cached {
    /// The `id` of the `_mta-sts` record the policy was fetched under.
    pub id: String,
    /// The parsed policy file.
    pub policy: Policy,
    /// The body as served (TLS-RPT reports quote its lines).
    pub text: String,
    /// When the policy was fetched (unix s).
    pub fetched_at: u64,
}

impl Cached {
    /// When it expires (unix s): `fetched_at` plus `max_age`, but at least `MIN_LIFETIME_S`.
    pub fn expires_at(&self) -> u64 {
        self.fetched_at
            .saturating_add(self.policy.max_age.max(MIN_LIFETIME_S))
    }

    /// Whether it has not yet expired at `now` (unix s).
    pub fn valid_at(&self, now: u64) -> bool {
        now < self.expires_at()
    }

    /// Past half its lifetime: fetched again (if the fetch fails, it is still used).
    fn due_for_refresh(&self, now: u64) -> bool {
        let half = (self.policy.max_age / 2).max(MIN_LIFETIME_S);
        now >= self.fetched_at.saturating_add(half)
    }
}

/// What the `_mta-sts` TXT lookup gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Txt {
    /// Exactly one valid record, with this id.
    Record(String),
    /// No valid record (none, several, malformed, or the name does not exist).
    Absent,
    /// The lookup failed (timeout, SERVFAIL).
    Failed,
}

/// What to do for a delivery now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Fetch the policy; on failure, use the cached one if it is still valid.
    Fetch,
    /// Use the cached policy as it is.
    UseCached,
    /// No policy applies.
    NoPolicy,
}

/// What to do at `now` (unix s), given the cached policy, the TXT lookup and the last failed
/// fetch: fetch for a new `id`, a missing or expired policy or one past half its `max_age`
/// (not within `FAILURE_BACKOFF_S` of a failure); else use the cached policy if valid.
pub fn next_step(now: u64, cached: Option<&Cached>, txt: &Txt, last_failure: Option<u64>) -> Step {
    let valid = cached.filter(|c| c.valid_at(now));
    let backing_off = last_failure.is_some_and(|f| now < f.saturating_add(FAILURE_BACKOFF_S));
    let fetch = match txt {
        Txt::Record(id) => match valid {
            None => true,
            Some(c) => c.id != *id || c.due_for_refresh(now),
        },
        // Without a record a cached policy stands until it expires (RFC 8461 5.1); there is
        // nothing to fetch.
        Txt::Absent | Txt::Failed => false,
    };
    match (fetch && !backing_off, valid) {
        (true, _) => Step::Fetch,
        (false, Some(_)) => Step::UseCached,
        (false, None) => Step::NoPolicy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Mode, MxPattern};

    fn cached(id: &str, fetched_at: u64, max_age: u64) -> Cached {
        Cached {
            id: id.into(),
            policy: Policy {
                mode: Mode::Enforce,
                max_age,
                mx: vec![MxPattern::parse("mx.example").unwrap()],
            },
            text: String::new(),
            fetched_at,
        }
    }

    #[test]
    fn nothing_cached_fetches_when_there_is_a_record() {
        assert_eq!(
            next_step(100, None, &Txt::Record("1".into()), None),
            Step::Fetch
        );
        assert_eq!(next_step(100, None, &Txt::Absent, None), Step::NoPolicy);
        assert_eq!(next_step(100, None, &Txt::Failed, None), Step::NoPolicy);
    }

    #[test]
    fn a_current_policy_is_used_until_half_its_age_then_refreshed() {
        let c = cached("1", 1000, 1000);
        let rec = Txt::Record("1".into());
        assert_eq!(next_step(1000, Some(&c), &rec, None), Step::UseCached);
        assert_eq!(next_step(1499, Some(&c), &rec, None), Step::UseCached);
        assert_eq!(next_step(1500, Some(&c), &rec, None), Step::Fetch);
        // Expired: fetched again, and not used if that fails (the caller checks validity).
        assert_eq!(next_step(2000, Some(&c), &rec, None), Step::Fetch);
        assert!(!c.valid_at(2000) && c.valid_at(1999));
    }

    #[test]
    fn a_tiny_max_age_is_stretched_to_a_minute() {
        let c = cached("1", 1000, 1);
        let rec = Txt::Record("1".into());
        assert_eq!(next_step(1059, Some(&c), &rec, None), Step::UseCached);
        assert_eq!(next_step(1060, Some(&c), &rec, None), Step::Fetch);
        assert!(c.valid_at(1059) && !c.valid_at(1060));
    }

    #[test]
    fn a_new_id_fetches_at_once() {
        let c = cached("1", 1000, 1000);
        assert_eq!(
            next_step(1001, Some(&c), &Txt::Record("2".into()), None),
            Step::Fetch
        );
    }

    #[test]
    fn dns_trouble_or_a_removed_record_keeps_an_unexpired_policy() {
        let c = cached("1", 1000, 1000);
        for txt in [Txt::Absent, Txt::Failed] {
            assert_eq!(next_step(1999, Some(&c), &txt, None), Step::UseCached);
            assert_eq!(next_step(2000, Some(&c), &txt, None), Step::NoPolicy);
        }
    }

    #[test]
    fn failures_are_rate_limited() {
        let rec = Txt::Record("2".into());
        assert_eq!(next_step(1000, None, &rec, Some(900)), Step::NoPolicy);
        assert_eq!(next_step(1200, None, &rec, Some(900)), Step::Fetch);
        // Meanwhile a valid cached policy is used.
        let c = cached("1", 800, 1000);
        assert_eq!(next_step(1000, Some(&c), &rec, Some(900)), Step::UseCached);
    }
}
