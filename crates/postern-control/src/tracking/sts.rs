//! The recipient domains' MTA-STS policies as workers fetched them (one `StsPolicy` event per
//! fetch): the newest per domain, for `POST /v1/policy/evaluate` (and TLS-RPT reports).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A domain's MTA-STS policy, as a worker last fetched it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KnownSts {
    pub domain: String,
    /// The `_mta-sts` record id it was fetched under.
    pub id: String,
    /// `enforce`, `testing` or `none`.
    pub mode: String,
    pub max_age: u64,
    /// The policy's `mx` patterns.
    pub mx: Vec<String>,
    /// RFC 3339.
    pub fetched_at: String,
    /// RFC 3339: `fetched_at` + `max_age`.
    pub expires_at: String,
    /// The worker that fetched it.
    pub worker: String,
}

impl KnownSts {
    pub fn new(worker: &str, p: &postern_events::StsPolicy) -> KnownSts {
        let expires = p.fetched_ms.saturating_add(p.max_age.saturating_mul(1000));
        KnownSts {
            domain: p.domain.clone(),
            id: p.id.clone(),
            mode: p.mode.clone(),
            max_age: p.max_age,
            mx: p.mx.clone(),
            fetched_at: postern_time::rfc3339_ms(p.fetched_ms),
            expires_at: postern_time::rfc3339_ms(expires),
            worker: worker.to_string(),
        }
    }

    fn ms(t: &str) -> u64 {
        postern_time::parse_rfc3339_ms(t).unwrap_or(0)
    }

    pub fn fetched_ms(&self) -> u64 {
        Self::ms(&self.fetched_at)
    }

    pub fn valid_at_ms(&self, now_ms: u64) -> bool {
        now_ms < Self::ms(&self.expires_at)
    }
}
