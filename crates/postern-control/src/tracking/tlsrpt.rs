//! What TLS-RPT reports are made of, kept beside tracking: every session workers report with a
//! recipient domain's MX hosts (`TlsSession` events), by UTC day and domain, and the reports
//! built from them. Session keys are `day \0 domain \0 worker \0 epoch \0 seq`, so a replayed
//! event overwrites itself and a day's sessions are one range, each domain's contiguous. A
//! session names its MTA-STS policy by id; the policy's lines and mx patterns are stored once
//! per day, domain and id (`day \0 domain \0 id`), not once per session.

use std::collections::HashMap;

use postern_events::{MxPattern, ResultType, SessionPolicy, TlsSession};
use postern_sts::tlsrpt::{Aggregate, Applied, Session};
use serde::{Deserialize, Serialize};

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

/// A session as stored: its policy by id. (Sessions stored before issue 23 carry their
/// policy whole, in `sts`.)
#[derive(Debug, Serialize, Deserialize)]
struct StoredSession {
    domain: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    policy_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sts: Option<SessionPolicy>,
    result: Option<ResultType>,
    sending_ip: Option<String>,
    receiving_mx: Option<String>,
    receiving_ip: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredPolicy {
    lines: Vec<String>,
    mx: Vec<MxPattern>,
}

/// The report's `mx-host` values.
fn mx_hosts(mx: Vec<MxPattern>) -> Vec<String> {
    mx.iter().map(|m| m.as_str().to_string()).collect()
}

fn policy_key(day: &str, domain: &str, id: &str) -> String {
    format!("{day}\0{domain}\0{id}")
}

impl Tracking {
    pub(super) fn store_session(
        &self,
        worker: &str,
        epoch: &str,
        seq: u64,
        s: &TlsSession,
    ) -> Result<(), TrackingError> {
        let day = day_of(s.at_ms);
        if let Some(p) = &s.sts {
            let key = policy_key(&day, &s.domain, &p.id);
            if self.tls_policies.get(&key)?.is_none() {
                let stored = StoredPolicy {
                    lines: p.lines.clone(),
                    mx: p.mx.clone(),
                };
                self.tls_policies.insert(
                    key,
                    serde_json::to_vec(&stored).expect("policies serialise"),
                )?;
            }
        }
        let stored = StoredSession {
            domain: s.domain.clone(),
            policy_id: s.sts.as_ref().map(|p| p.id.clone()),
            sts: None,
            result: s.result.clone(),
            sending_ip: s.sending_ip.clone(),
            receiving_mx: s.receiving_mx.clone(),
            receiving_ip: s.receiving_ip.clone(),
        };
        let key = session_key(&day, &s.domain, worker, epoch, seq);
        self.tls_sessions.insert(
            key,
            serde_json::to_vec(&stored).expect("sessions serialise"),
        )?;
        Ok(())
    }

    /// The sessions of `day` (`YYYY-MM-DD`), one recipient domain at a time: `each` gets the
    /// domain and its sessions' aggregate, in domain order. Only one domain's aggregate and its
    /// policies are in memory at once (blocking: run it off the async threads).
    pub fn tls_sessions_by_domain(
        &self,
        day: &str,
        mut each: impl FnMut(String, Aggregate),
    ) -> Result<(), TrackingError> {
        let mut current: Option<(String, Aggregate, HashMap<String, Applied>)> = None;
        for entry in self.tls_sessions.scan_prefix(format!("{day}\0")) {
            let (_, value) = entry?;
            let s: StoredSession = serde_json::from_slice(&value).map_err(corrupt)?;
            if current.as_ref().is_none_or(|(d, _, _)| *d != s.domain) {
                if let Some((d, aggregate, _)) = current.take() {
                    each(d, aggregate);
                }
                current = Some((s.domain.clone(), Aggregate::default(), HashMap::new()));
            }
            let (domain, aggregate, policies) = current.as_mut().expect("a domain");
            let applied = match (s.sts, s.policy_id) {
                (Some(p), _) => Applied::Sts {
                    lines: p.lines,
                    mx: mx_hosts(p.mx),
                },
                (None, Some(id)) => match policies.get(&id) {
                    Some(a) => a.clone(),
                    None => {
                        let found = self.tls_policies.get(policy_key(day, domain, &id))?;
                        let applied = match found {
                            Some(v) => {
                                let p: StoredPolicy =
                                    serde_json::from_slice(&v).map_err(corrupt)?;
                                Applied::Sts {
                                    lines: p.lines,
                                    mx: mx_hosts(p.mx),
                                }
                            }
                            None => Applied::NoPolicyFound,
                        };
                        policies.insert(id, applied.clone());
                        applied
                    }
                },
                (None, None) => Applied::NoPolicyFound,
            };
            aggregate.add(Session {
                applied,
                result: s.result,
                sending_ip: s.sending_ip,
                receiving_mx: s.receiving_mx,
                receiving_ip: s.receiving_ip,
            });
        }
        if let Some((d, aggregate, _)) = current {
            each(d, aggregate);
        }
        Ok(())
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

    /// Drops sessions and built reports of days before `first_day` (retention).
    pub(super) fn prune_tls(&self, first_day: &str) -> Result<u64, TrackingError> {
        let mut removed = 0;
        for tree in [&self.tls_sessions, &self.tls_policies, &self.tls_reports] {
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
