//! MTA-STS knowledge: the recipient domains' policies as workers fetched them (one `StsPolicy`
//! event per fetch), the newest per domain, for `POST /v1/policy/evaluate`. Kept typed (mode,
//! patterns, times in milliseconds); the REST view is made at the API edge.

use postern_events::{Mode, MxPattern, StsPolicy};
use postern_sts::Policy;
use serde::{Deserialize, Serialize};

/// A domain's MTA-STS policy, as a worker last fetched it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownSts {
    pub domain: String,
    /// The `_mta-sts` record id it was fetched under.
    pub id: String,
    pub mode: Mode,
    pub max_age: u64,
    pub mx: Vec<MxPattern>,
    /// Unix milliseconds (an RFC 3339 `fetched_at` in stores before issue 24).
    #[serde(alias = "fetched_at", deserialize_with = "super::record::ms")]
    pub fetched_ms: u64,
    /// The worker that fetched it.
    pub worker: String,
}

impl KnownSts {
    pub fn new(worker: &str, p: &StsPolicy) -> KnownSts {
        KnownSts {
            domain: p.domain.clone(),
            id: p.id.clone(),
            mode: p.mode,
            max_age: p.max_age,
            mx: p.mx.clone(),
            fetched_ms: p.fetched_ms,
            worker: worker.to_string(),
        }
    }

    /// `fetched_ms` + `max_age`.
    pub fn expires_ms(&self) -> u64 {
        self.fetched_ms
            .saturating_add(self.max_age.saturating_mul(1000))
    }

    pub fn valid_at_ms(&self, now_ms: u64) -> bool {
        now_ms < self.expires_ms()
    }

    /// The policy, as the delivery plan reads it.
    pub fn policy(&self) -> Policy {
        Policy {
            mode: self.mode,
            max_age: self.max_age,
            mx: self.mx.clone(),
        }
    }
}

/// A stored entry (one that cannot be read is as none: the next fetch replaces it).
#[cfg(test)]
fn known(bytes: &[u8]) -> Option<KnownSts> {
    serde_json::from_slice(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a store before issue 24 kept (times as RFC 3339) reads as the typed record.
    #[test]
    fn a_policy_of_the_previous_format_is_read() {
        let old = br#"{"domain":"partner.example","id":"20261207","mode":"enforce","max_age":86400,
            "mx":["*.partner.example"],"fetched_at":"2026-12-07T10:00:00.000Z",
            "expires_at":"2026-12-08T10:00:00.000Z","worker":"w1"}"#;
        let k = known(old).expect("read");
        assert_eq!(k.mode, Mode::Enforce);
        assert_eq!(
            k.fetched_ms,
            postern_time::parse_rfc3339_ms("2026-12-07T10:00:00Z").unwrap()
        );
        assert_eq!(
            postern_time::rfc3339_ms(k.expires_ms()),
            "2026-12-08T10:00:00.000Z"
        );
        assert!(k.policy().allows("mx1.partner.example"));
    }
}
