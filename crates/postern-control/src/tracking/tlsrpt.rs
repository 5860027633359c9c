//! What TLS-RPT reports are made of, kept beside tracking: every session workers report with a
//! recipient domain's MX hosts (`TlsSession` events), by UTC day and domain, and the reports
//! built from them. Session keys are `day \0 domain \0 worker \0 epoch \0 seq`, so a replayed
//! event overwrites itself and a day's sessions are one range, each domain's contiguous. A
//! session names its MTA-STS policy by id; the policy's lines and mx patterns are stored once
//! per day, domain and id (`day \0 domain \0 id`), not once per session.

use std::collections::HashMap;
use std::path::Path;

use postern_events::{MxPattern, ResultType, SessionPolicy, TlsSession};
use postern_sts::tlsrpt::{Aggregate, Applied, Session};
use serde::{Deserialize, Serialize};

use super::stores::{Page, TlsRptStore};
use super::{TrackingError, corrupt};
use crate::reports::received::ReceivedReport;
use crate::reports::store::{Kept, ReceivedStore};

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

/// TLS-RPT in sled databases of its own: sessions, their policies and the reports built
/// (`<tracking>/tlsrpt`), and the reports received (`<tracking>/received`).
pub struct SledTlsRpt {
    db: sled::Db,
    sessions: sled::Tree,
    /// The MTA-STS policies the sessions name, once per day, domain and id.
    policies: sled::Tree,
    reports: sled::Tree,
    received: ReceivedStore,
}

impl SledTlsRpt {
    /// Opens the store under `path`, moving in what `main` kept before issue 24.
    pub fn open(path: &Path, main: &sled::Db) -> Result<SledTlsRpt, TrackingError> {
        let db = sled::Config::new()
            .path(path.join("tlsrpt"))
            .cache_capacity(32 * 1024 * 1024)
            .open()?;
        for name in ["tlsrpt/sessions", "tlsrpt/policies", "tlsrpt/reports"] {
            super::migrate(main, &db, name)?;
        }
        Ok(SledTlsRpt {
            sessions: db.open_tree("tlsrpt/sessions")?,
            policies: db.open_tree("tlsrpt/policies")?,
            reports: db.open_tree("tlsrpt/reports")?,
            received: ReceivedStore::open(&path.join("received"))?,
            db,
        })
    }
}

impl TlsRptStore for SledTlsRpt {
    fn put_session(
        &self,
        worker: &str,
        epoch: &str,
        seq: u64,
        s: &TlsSession,
    ) -> Result<(), TrackingError> {
        let day = day_of(s.at_ms);
        if let Some(p) = &s.sts {
            let key = policy_key(&day, &s.domain, &p.id);
            if self.policies.get(&key)?.is_none() {
                let stored = StoredPolicy {
                    lines: p.lines.clone(),
                    mx: p.mx.clone(),
                };
                self.policies.insert(
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
        self.sessions.insert(
            key,
            serde_json::to_vec(&stored).expect("sessions serialise"),
        )?;
        Ok(())
    }

    /// Only one domain's aggregate and its policies are in memory at once.
    fn sessions_by_domain(
        &self,
        day: &str,
        each: &mut dyn FnMut(String, Aggregate),
    ) -> Result<(), TrackingError> {
        let mut current: Option<(String, Aggregate, HashMap<String, Applied>)> = None;
        for entry in self.sessions.scan_prefix(format!("{day}\0")) {
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
                        let found = self.policies.get(policy_key(day, domain, &id))?;
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

    /// Under `date \0 domain`.
    fn put_reports(&self, date: &str, reports: &[(String, Vec<u8>)]) -> Result<(), TrackingError> {
        for (domain, report) in reports {
            self.reports
                .insert(format!("{date}\0{domain}"), report.as_slice())?;
        }
        Ok(())
    }

    fn reports(
        &self,
        date: Option<&str>,
        domain: Option<&str>,
    ) -> Result<Vec<Vec<u8>>, TrackingError> {
        let prefix = date.map(|d| format!("{d}\0")).unwrap_or_default();
        let mut out = Vec::new();
        for entry in self.reports.scan_prefix(prefix).rev() {
            let (key, value) = entry?;
            let key = String::from_utf8_lossy(&key);
            if domain.is_some_and(|d| key.split('\0').nth(1) != Some(d)) {
                continue;
            }
            out.push(value.to_vec());
        }
        Ok(out)
    }

    fn put_received(&self, report: ReceivedReport, budget: u64) -> Result<Kept, TrackingError> {
        self.received.put(report, budget)
    }

    fn received(
        &self,
        organization: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<ReceivedReport>, TrackingError> {
        self.received.page(organization, limit, cursor)
    }

    /// Sessions and built reports of days before the cutoff's, and reports received before it.
    fn prune(&self, cutoff_ms: u64) -> Result<u64, TrackingError> {
        let first_day = day_of(cutoff_ms);
        let mut removed = 0;
        for tree in [&self.sessions, &self.policies, &self.reports] {
            for entry in tree.range(..first_day.as_bytes()) {
                let (key, _) = entry?;
                tree.remove(key)?;
                removed += 1;
            }
        }
        Ok(removed + self.received.prune(cutoff_ms)?)
    }

    fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    fn flush(&self) -> Result<(), TrackingError> {
        self.received.flush()?;
        self.db.flush()?;
        Ok(())
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

    /// A session's policy is stored once per (day, domain, id), and a day's reports are built
    /// one domain at a time from what is stored.
    #[test]
    fn tls_sessions_store_their_policy_once() {
        let dir = tempfile::tempdir().unwrap();
        let t =
            SledTlsRpt::open(dir.path(), &sled::open(dir.path().join("main")).unwrap()).unwrap();
        let session = |seq: u64, domain: &str, result: Option<&str>| {
            (
                seq,
                postern_events::TlsSession {
                    domain: domain.into(),
                    sts: Some(postern_events::SessionPolicy {
                        id: "20261207".into(),
                        lines: (0..20).map(|i| format!("mx: mx{i}.{domain}")).collect(),
                        mx: vec![postern_events::MxPattern::parse(&format!("*.{domain}")).unwrap()],
                    }),
                    result: result.map(|r| postern_events::ResultType::parse(r).unwrap()),
                    sending_ip: Some("192.0.2.1".into()),
                    receiving_mx: Some(format!("mx.{domain}")),
                    receiving_ip: Some("198.51.100.7".into()),
                    at_ms: 86_400_000 * 20_000 + seq,
                },
            )
        };
        let mut batch = Vec::new();
        for seq in 1..=300 {
            let domain = if seq % 3 == 0 {
                "b.example"
            } else {
                "a.example"
            };
            let result = (seq % 10 == 0).then_some("certificate-expired");
            batch.push(session(seq, domain, result));
        }
        for (seq, s) in &batch {
            t.put_session("w", "E", *seq, s).unwrap();
        }
        assert_eq!(t.policies.len(), 2, "one policy per domain and id");
        let day = day_of(86_400_000 * 20_000);
        let mut reports = Vec::new();
        t.sessions_by_domain(&day, &mut |domain, aggregate| {
            let header = postern_sts::tlsrpt::ReportHeader {
                organization_name: "o".into(),
                contact_info: "c@o".into(),
                report_id: domain.clone(),
                start_datetime: String::new(),
                end_datetime: String::new(),
            };
            reports.push(aggregate.report(header, &domain));
        })
        .unwrap();
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[0].session_counts(), (180, 20), "a.example");
        assert_eq!(reports[1].session_counts(), (90, 10), "b.example");
        assert_eq!(reports[0].policies[0].policy.policy_string.len(), 20);
        assert_eq!(reports[0].policies[0].policy.mx_host, ["*.a.example"]);
    }
}
