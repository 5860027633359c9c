//! MTA-STS knowledge in SQL: per recipient domain, the newest policy a worker fetched.

use postern_events::StsPolicy;

use super::pack::{pack, unpack};
use super::{Conn, P};
use crate::tracking::TrackingError;
use crate::tracking::sts::KnownSts;

/// Keeps `known` if it is newer than what is known of its domain (whichever worker fetched it).
pub fn put(c: &mut Conn, known: &KnownSts) -> Result<(), TrackingError> {
    c.execute(
        "INSERT INTO sts_policies (domain, fetched_ms, expires_ms, record) VALUES ($1, $2, $3, $4)
         ON CONFLICT (domain) DO UPDATE SET fetched_ms = excluded.fetched_ms,
             expires_ms = excluded.expires_ms, record = excluded.record
         WHERE sts_policies.fetched_ms < excluded.fetched_ms",
        &[
            P::from(known.domain.as_str()),
            P::from(known.fetched_ms),
            P::from(known.expires_ms()),
            P::B(pack(known)),
        ],
    )?;
    Ok(())
}

pub fn record(c: &mut Conn, worker: &str, p: &StsPolicy) -> Result<(), TrackingError> {
    put(c, &KnownSts::new(worker, p))
}

/// What is known of `domain` (an entry that cannot be read is as none: the next fetch
/// replaces it).
pub fn get(c: &mut Conn, domain: &str) -> Result<Option<KnownSts>, TrackingError> {
    let found = c.rows(
        "SELECT record FROM sts_policies WHERE domain = $1",
        &[P::from(domain)],
        |r| r.blob(0),
    )?;
    Ok(found.first().and_then(|b| unpack(b).ok()))
}

/// Forgets the policies expired at `now_ms`; how many went.
pub fn prune(c: &mut Conn, now_ms: u64) -> Result<u64, TrackingError> {
    c.execute(
        "DELETE FROM sts_policies WHERE expires_ms <= $1",
        &[P::from(now_ms)],
    )
}
