//! What TLS-RPT reports are made of (RFC 8460), in SQL: every session workers report with a
//! recipient domain's MX hosts (`TlsSession` events), by UTC day and domain, keyed by worker,
//! epoch and sequence (a replayed event is kept once), and the reports built from them. A
//! session names its MTA-STS policy by id; the policy's lines and patterns are kept once per
//! day, domain and id.

use std::collections::HashMap;

use postern_events::{MxPattern, ResultType, SessionPolicy, TlsSession};
use postern_sts::tlsrpt::{Aggregate, Applied, Session};
use serde::{Deserialize, Serialize};

use super::pack::{pack, unpack};
use super::{Conn, P};
use crate::tracking::TrackingError;

/// `YYYY-MM-DD` (UTC) of unix milliseconds.
pub fn day_of(ms: u64) -> String {
    postern_time::rfc3339_ms(ms)[..10].to_string()
}

/// A session as stored: its policy by id. (Sessions kept by the sled store before issue 23
/// carry their policy whole, in `sts`.)
#[derive(Debug, Serialize, Deserialize)]
pub struct StoredSession {
    pub domain: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sts: Option<SessionPolicy>,
    pub result: Option<ResultType>,
    pub sending_ip: Option<String>,
    pub receiving_mx: Option<String>,
    pub receiving_ip: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StoredPolicy {
    pub lines: Vec<String>,
    pub mx: Vec<MxPattern>,
}

/// The report's `mx-host` values.
fn mx_hosts(mx: Vec<MxPattern>) -> Vec<String> {
    mx.iter().map(|m| m.as_str().to_string()).collect()
}

/// Stores a session, once.
pub fn put_session(
    c: &mut Conn,
    worker: &str,
    epoch: &str,
    seq: u64,
    s: &TlsSession,
) -> Result<(), TrackingError> {
    let day = day_of(s.at_ms);
    if let Some(p) = &s.sts {
        let stored = StoredPolicy {
            lines: p.lines.clone(),
            mx: p.mx.clone(),
        };
        put_policy(c, &day, &s.domain, &p.id, &stored)?;
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
    put_stored_session(c, &day, worker, epoch, seq, &stored)
}

pub fn put_stored_session(
    c: &mut Conn,
    day: &str,
    worker: &str,
    epoch: &str,
    seq: u64,
    s: &StoredSession,
) -> Result<(), TrackingError> {
    c.execute(
        "INSERT INTO tls_sessions (day, domain, worker, epoch, seq, record)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        &[
            P::from(day),
            P::from(s.domain.as_str()),
            P::from(worker),
            P::from(epoch),
            P::from(seq),
            P::B(pack(s)),
        ],
    )?;
    Ok(())
}

pub fn put_policy(
    c: &mut Conn,
    day: &str,
    domain: &str,
    id: &str,
    p: &StoredPolicy,
) -> Result<(), TrackingError> {
    c.execute(
        "INSERT INTO tls_policies (day, domain, id, record) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
        &[P::from(day), P::from(domain), P::from(id), P::B(pack(p))],
    )?;
    Ok(())
}

/// The sessions of `day`, one domain's aggregate at a time, in domain order (only one
/// domain's is in memory at once; the day's policies are read first).
pub fn sessions_by_domain(
    c: &mut Conn,
    day: &str,
    each: &mut dyn FnMut(String, Aggregate),
) -> Result<(), TrackingError> {
    let mut policies: HashMap<(String, String), Applied> = HashMap::new();
    c.query(
        "SELECT domain, id, record FROM tls_policies WHERE day = $1",
        &[P::from(day)],
        &mut |r| {
            let p: StoredPolicy = unpack(&r.blob(2)?)?;
            let applied = Applied::Sts {
                lines: p.lines,
                mx: mx_hosts(p.mx),
            };
            policies.insert((r.text(0)?, r.text(1)?), applied);
            Ok(())
        },
    )?;
    let mut current: Option<(String, Aggregate)> = None;
    c.query(
        "SELECT record FROM tls_sessions WHERE day = $1 ORDER BY domain, worker, epoch, seq",
        &[P::from(day)],
        &mut |r| {
            let s: StoredSession = unpack(&r.blob(0)?)?;
            if current.as_ref().is_none_or(|(d, _)| *d != s.domain) {
                if let Some((d, aggregate)) = current.take() {
                    each(d, aggregate);
                }
                current = Some((s.domain.clone(), Aggregate::default()));
            }
            let applied = match (s.sts, s.policy_id) {
                (Some(p), _) => Applied::Sts {
                    lines: p.lines,
                    mx: mx_hosts(p.mx),
                },
                (None, Some(id)) => policies
                    .get(&(s.domain.clone(), id))
                    .cloned()
                    .unwrap_or(Applied::NoPolicyFound),
                (None, None) => Applied::NoPolicyFound,
            };
            let (_, aggregate) = current.as_mut().expect("a domain");
            aggregate.add(Session {
                applied,
                result: s.result,
                sending_ip: s.sending_ip,
                receiving_mx: s.receiving_mx,
                receiving_ip: s.receiving_ip,
            });
            Ok(())
        },
    )?;
    if let Some((d, aggregate)) = current {
        each(d, aggregate);
    }
    Ok(())
}

/// Stores built reports, (domain, JSON) each, replacing that day's earlier ones.
pub fn put_reports(
    c: &mut Conn,
    date: &str,
    reports: &[(String, Vec<u8>)],
) -> Result<(), TrackingError> {
    for (domain, report) in reports {
        c.execute(
            "INSERT INTO tls_reports (day, domain, report) VALUES ($1, $2, $3)
             ON CONFLICT (day, domain) DO UPDATE SET report = excluded.report",
            &[
                P::from(date),
                P::from(domain.as_str()),
                P::B(report.clone()),
            ],
        )?;
    }
    Ok(())
}

/// Built reports, newest day first (domains in order within a day), of one day or domain.
pub fn reports(
    c: &mut Conn,
    date: Option<&str>,
    domain: Option<&str>,
) -> Result<Vec<Vec<u8>>, TrackingError> {
    c.rows(
        "SELECT report FROM tls_reports
         WHERE ($1 = '' OR day = $1) AND ($2 = '' OR domain = $2)
         ORDER BY day DESC, domain DESC",
        &[
            P::from(date.unwrap_or_default()),
            P::from(domain.unwrap_or_default()),
        ],
        |r| r.blob(0),
    )
}

/// Sessions, policies and built reports of days before `first_day`; how many went.
pub fn prune(c: &mut Conn, first_day: &str) -> Result<u64, TrackingError> {
    let mut removed = 0;
    for table in ["tls_sessions", "tls_policies", "tls_reports"] {
        removed += c.execute(
            &format!("DELETE FROM {table} WHERE day < $1"),
            &[P::from(first_day)],
        )?;
    }
    Ok(removed)
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
