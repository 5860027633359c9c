//! What TLS-RPT reports are made of, kept beside tracking: every session workers report with a
//! recipient domain's MX hosts (`TlsSession` events), by UTC day and domain, and the reports
//! built from them. Session keys are `day \0 domain \0 worker \0 epoch \0 seq`, so a replayed
//! event overwrites itself and a day's sessions are one range.

use std::collections::BTreeMap;

use postern_events::TlsSession;

use super::{Tracking, TrackingError, corrupt};

/// `YYYY-MM-DD` (UTC) of unix milliseconds.
pub fn day_of(ms: u64) -> String {
    postern_time::rfc3339_ms(ms)[..10].to_string()
}

fn session_key(day: &str, domain: &str, worker: &str, epoch: &str, seq: u64) -> Vec<u8> {
    let mut key = format!("{day}\0{domain}\0{worker}\0{epoch}\0").into_bytes();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

impl Tracking {
    pub(super) fn store_session(
        &self,
        worker: &str,
        epoch: &str,
        seq: u64,
        s: &TlsSession,
    ) -> Result<(), TrackingError> {
        let key = session_key(&day_of(s.at_ms), &s.domain, worker, epoch, seq);
        self.tls_sessions
            .insert(key, serde_json::to_vec(s).expect("sessions serialise"))?;
        Ok(())
    }

    /// The sessions of `day` (`YYYY-MM-DD`), by recipient domain.
    pub fn tls_sessions(
        &self,
        day: &str,
    ) -> Result<BTreeMap<String, Vec<TlsSession>>, TrackingError> {
        let mut by_domain: BTreeMap<String, Vec<TlsSession>> = BTreeMap::new();
        for entry in self.tls_sessions.scan_prefix(format!("{day}\0")) {
            let (_, value) = entry?;
            let s: TlsSession = serde_json::from_slice(&value).map_err(corrupt)?;
            by_domain.entry(s.domain.clone()).or_default().push(s);
        }
        Ok(by_domain)
    }

    /// Stores built reports, (domain, JSON) each, under `date \0 domain`, replacing that
    /// day's earlier ones (durable after `flush_async`).
    pub fn put_tls_reports(
        &self,
        date: &str,
        reports: &[(String, Vec<u8>)],
    ) -> Result<(), TrackingError> {
        for (domain, report) in reports {
            self.tls_reports
                .insert(format!("{date}\0{domain}"), report.as_slice())?;
        }
        Ok(())
    }

    /// Stored reports, newest day first, optionally of one day or one domain.
    pub fn tls_reports(
        &self,
        date: Option<&str>,
        domain: Option<&str>,
    ) -> Result<Vec<Vec<u8>>, TrackingError> {
        let prefix = date.map(|d| format!("{d}\0")).unwrap_or_default();
        let mut out = Vec::new();
        for entry in self.tls_reports.scan_prefix(prefix).rev() {
            let (key, value) = entry?;
            let key = String::from_utf8_lossy(&key);
            if domain.is_some_and(|d| key.split('\0').nth(1) != Some(d)) {
                continue;
            }
            out.push(value.to_vec());
        }
        Ok(out)
    }

    /// Whether as many received reports are kept as may be (`MAX_RECEIVED`).
    /// Drops sessions and built reports of days before `first_day` (retention).
    pub(super) fn prune_tls(&self, first_day: &str) -> Result<u64, TrackingError> {
        let mut removed = 0;
        for tree in [&self.tls_sessions, &self.tls_reports] {
            for entry in tree.range(..first_day.as_bytes()) {
                let (key, _) = entry?;
                tree.remove(key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_dates() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(86_400_000 - 1), "1970-01-01");
        assert_eq!(day_of(86_400_000), "1970-01-02");
    }
}
