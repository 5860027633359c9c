//! TLS-RPT reports (RFC 8460) about our deliveries: each UTC day, one report per recipient
//! domain built from the sessions workers reported (`tracking::tlsrpt`), stored, and sent by a
//! connected worker (which looks up the domain's `_smtp._tls` record, mails the report
//! through its queue and posts it to https addresses). `POST /v1/reports/tls/build` does the
//! same for any day at once; `run` does it for yesterday when `settings.reports.tls_rpt` is on.

use std::sync::Arc;
use std::time::Duration;

use postern_sts::tlsrpt::ReportHeader;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::commands::{QueueCommand, TlsReportCommand};
use crate::control::Control;
use crate::tracking::TrackingError;

/// How long a worker may take to send one report (DNS, the queue, each HTTPS POST).
const SEND_LIMIT: Duration = Duration::from_secs(60);
/// Reports handed to workers at once.
const SEND_AT_ONCE: usize = 8;
/// How often the daily task looks whether yesterday's reports are due.
const CHECK_EVERY: Duration = Duration::from_secs(600);

/// A built report and what became of it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TlsReportView {
    /// The UTC day covered, `YYYY-MM-DD`.
    pub date: String,
    pub policy_domain: String,
    pub report_id: String,
    /// RFC 3339.
    pub built_at: String,
    /// `built` (not sent), `sent` (every address took it), `partly_sent`, `not_sent` (no
    /// address took it, or no worker could send it) or `no_record` (the domain publishes no
    /// `_smtp._tls` record: nothing to send).
    pub status: String,
    /// Why it was not sent (`not_sent`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The worker that sent it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Sessions over all its policies.
    pub successful_sessions: u64,
    pub failed_sessions: u64,
    /// Each `rua` address: the mailed report's queue id, the HTTP status, or the failure.
    pub deliveries: Vec<ReportDeliveryView>,
    /// The report as RFC 8460 4 defines it.
    #[schema(value_type = Object)]
    pub report: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReportDeliveryView {
    /// `mailto:...` or the https URL.
    pub rua: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("not a date (YYYY-MM-DD): {0}")]
    Date(String),
    #[error("settings.reports.contact must be set to send TLS-RPT reports")]
    NoContact,
    #[error(transparent)]
    Tracking(#[from] TrackingError),
}

/// The first and last millisecond of `date` (UTC), checked to be a real day.
pub fn day_range(date: &str) -> Result<(u64, u64), ReportError> {
    let start = postern_time::parse_rfc3339_ms(&format!("{date}T00:00:00Z"))
        .map_err(|_| ReportError::Date(date.into()))?;
    if crate::tracking::day_of(start) != date {
        return Err(ReportError::Date(date.into()));
    }
    Ok((start, start + 86_400_000 - 1))
}

/// Builds (and with `send`, sends) the reports of `date`; the current day covers up to now.
pub async fn build(
    c: &Arc<Control>,
    date: &str,
    send: bool,
) -> Result<Vec<TlsReportView>, ReportError> {
    let (start, end) = day_range(date)?;
    let now = postern_time::now_ms();
    let end = end.min(now);
    let settings = c.read().settings.reports.clone();
    if send && settings.contact.is_none() {
        return Err(ReportError::NoContact);
    }
    let contact = settings
        .contact
        .clone()
        .unwrap_or_else(|| "postmaster@localhost".into());
    let submitter = contact
        .rsplit_once('@')
        .map_or("localhost", |(_, d)| d)
        .to_ascii_lowercase();
    let organization = if settings.organization_name.is_empty() {
        submitter.clone()
    } else {
        settings.organization_name.clone()
    };
    let tracking = c.tracking.clone();
    let day = date.to_string();
    // One domain at a time: the sessions are folded as they are read, never held.
    let reports = {
        let (organization, contact, submitter, day) = (
            organization.clone(),
            contact.clone(),
            submitter.clone(),
            day.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let mut reports = Vec::new();
            tracking.sessions_by_domain(&day, &mut |domain, aggregate| {
                let header = ReportHeader {
                    organization_name: organization.clone(),
                    contact_info: contact.clone(),
                    report_id: format!("{day}_{domain}@{submitter}"),
                    start_datetime: postern_time::rfc3339_s(start / 1000),
                    end_datetime: postern_time::rfc3339_s(end / 1000),
                };
                reports.push((domain.clone(), aggregate.report(header, &domain)));
            })?;
            Ok::<_, TrackingError>(reports)
        })
        .await
        .map_err(|e| TrackingError::Corrupt(e.to_string()))??
    };
    let mut built = Vec::new();
    for (domain, report) in reports {
        let report_id = report.report_id.clone();
        let (ok, failed) = report.session_counts();
        let command = TlsReportCommand {
            policy_domain: domain.clone(),
            json: serde_json::to_vec(&report).expect("reports serialise"),
            report_id: report_id.clone(),
            submitter: submitter.clone(),
            from: contact.clone(),
            start_s: start / 1000,
            end_s: end / 1000,
        };
        let view = TlsReportView {
            date: date.to_string(),
            policy_domain: domain,
            report_id,
            built_at: crate::control::now_rfc3339(),
            status: "built".into(),
            error: None,
            worker: None,
            deliveries: Vec::new(),
            successful_sessions: ok,
            failed_sessions: failed,
            report: serde_json::to_value(&report).expect("reports serialise"),
        };
        built.push((view, command));
    }
    let mut views: Vec<TlsReportView> = if send {
        // A few at a time (each is DNS, a queued mail and HTTPS POSTs on a worker), spread
        // over the connected workers.
        let limit = Arc::new(tokio::sync::Semaphore::new(SEND_AT_ONCE));
        let mut sending = tokio::task::JoinSet::new();
        for (i, (mut view, command)) in built.into_iter().enumerate() {
            let (c, limit) = (c.clone(), limit.clone());
            sending.spawn(async move {
                let _turn = limit.acquire_owned().await;
                send_one(&c, command, &mut view, i).await;
                view
            });
        }
        sending.join_all().await
    } else {
        built.into_iter().map(|(view, _)| view).collect()
    };
    views.sort_by(|a, b| a.policy_domain.cmp(&b.policy_domain));
    let stored: Vec<(String, Vec<u8>)> = views
        .iter()
        .map(|v| {
            let bytes = serde_json::to_vec(v).expect("views serialise");
            (v.policy_domain.clone(), bytes)
        })
        .collect();
    let tracking = c.tracking.clone();
    let date = date.to_string();
    tokio::task::spawn_blocking(move || tracking.put_reports(&date, &stored))
        .await
        .map_err(|e| TrackingError::Corrupt(e.to_string()))??;
    Ok(views)
}

/// Hands the report to the first connected worker that answers, starting with the `turn`-th.
async fn send_one(
    c: &Arc<Control>,
    command: TlsReportCommand,
    view: &mut TlsReportView,
    turn: usize,
) {
    let mut errors = Vec::new();
    let mut workers = c.workers.connected_ids();
    if !workers.is_empty() {
        let n = workers.len();
        workers.rotate_left(turn % n);
    }
    for worker in workers {
        let op = QueueCommand::SendTlsReport(command.clone());
        match c.workers.command_within(&worker, op, SEND_LIMIT).await {
            Ok(outcome) => {
                view.worker = Some(worker);
                view.deliveries = outcome
                    .deliveries
                    .into_iter()
                    .map(|d| ReportDeliveryView {
                        rua: d.rua,
                        ok: d.ok,
                        detail: d.detail,
                    })
                    .collect();
                let ok = view.deliveries.iter().filter(|d| d.ok).count();
                view.status = match (outcome.found, ok) {
                    (false, _) => "no_record",
                    (true, 0) => "not_sent",
                    (true, n) if n == view.deliveries.len() => "sent",
                    (true, _) => "partly_sent",
                }
                .into();
                return;
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    view.status = "not_sent".into();
    view.error = Some(if errors.is_empty() {
        "no worker is connected".into()
    } else {
        errors.join("; ")
    });
}

/// The stored reports, newest day first (read off the async threads: the database blocks).
pub async fn list(
    c: &Control,
    date: Option<&str>,
    domain: Option<&str>,
) -> Result<Vec<TlsReportView>, TrackingError> {
    let (tracking, date, domain) = (
        c.tracking.clone(),
        date.map(String::from),
        domain.map(String::from),
    );
    tokio::task::spawn_blocking(move || tracking.reports(date.as_deref(), domain.as_deref()))
        .await
        .map_err(|e| TrackingError::Corrupt(e.to_string()))??
        .iter()
        .map(|v| serde_json::from_slice(v).map_err(|e| TrackingError::Corrupt(e.to_string())))
        .collect()
}

/// Whether the daily task sends a day's reports, given those stored for it: not if it is off,
/// nor if any was sent already (a preview built through the API does not count).
fn due(enabled: bool, stored: &[TlsReportView]) -> bool {
    enabled && stored.iter().all(|r| r.status == "built")
}

/// Each day, once `settings.reports.tls_rpt` is on: yesterday's reports, built and sent once
/// (a report already stored for that day and domain is not sent again).
pub async fn run(c: Arc<Control>) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tick.tick().await;
        let enabled = c.read().settings.reports.tls_rpt;
        let yesterday = crate::tracking::day_of(postern_time::now_ms().saturating_sub(86_400_000));
        match list(&c, Some(&yesterday), None).await {
            Ok(stored) if due(enabled, &stored) => {}
            Ok(_) => continue,
            Err(e) => {
                tracing::error!(error = %e, "reading the TLS-RPT reports failed");
                continue;
            }
        }
        match build(&c, &yesterday, true).await {
            Ok(built) => {
                tracing::info!(date = %yesterday, reports = built.len(), "TLS-RPT reports built and sent")
            }
            Err(e) => tracing::error!(date = %yesterday, error = %e, "TLS-RPT reports failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_is_sent_once_and_previews_do_not_count() {
        let view = |status: &str| TlsReportView {
            date: "2026-12-06".into(),
            policy_domain: "example.net".into(),
            report_id: "r".into(),
            built_at: String::new(),
            status: status.into(),
            error: None,
            worker: None,
            deliveries: Vec::new(),
            successful_sessions: 0,
            failed_sessions: 0,
            report: serde_json::Value::Null,
        };
        assert!(due(true, &[]));
        assert!(due(true, &[view("built")]));
        assert!(!due(true, &[view("built"), view("sent")]));
        assert!(!due(true, &[view("no_record")]));
        assert!(!due(false, &[]));
    }

    #[test]
    fn only_real_days_are_dates() {
        assert_eq!(
            day_range("2026-12-06").unwrap(),
            (1_796_515_200_000, 1_796_601_599_999)
        );
        for bad in [
            "2026-02-30",
            "2026-12-6",
            "yesterday",
            "2026-12-06T00:00:00Z",
            "",
        ] {
            assert!(day_range(bad).is_err(), "{bad}");
        }
    }
}
