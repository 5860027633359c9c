//! TLS-RPT reports about the operator's own domains (RFC 8460), as other senders send them:
//! POSTed to `/tlsrpt` (`application/tlsrpt+gzip` or `+json`) or mailed to
//! `settings.reports.receive_address` (a worker takes the report out of the message). Each is
//! checked against RFC 8460 4.4 and kept per reporting organisation, so an operator sees how
//! the world's senders see its gateways.

use std::io::Read as _;

use postern_sts::tlsrpt::Report;

use crate::tracking::sql::received::Kept;
use serde::{Deserialize, Serialize};

/// The largest report accepted, uncompressed (a gzip bomb stops here): the raw JSON kept, and
/// what a worker's event may carry of a mailed one. RFC 8460 sets no limit; a day's report
/// from a large sender with hundreds of failure details is tens of kilobytes.
pub const MAX_REPORT_BYTES: u64 = postern_events::MAX_REPORT as u64;

/// How a report arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// `POST /tlsrpt`.
    Https,
    /// Mail to `settings.reports.receive_address`.
    Mail,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Https => "https",
            Via::Mail => "mail",
        }
    }
}

/// A report received about our domains, as the TLS-RPT store keeps it (the REST view is made
/// from it at the API edge).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceivedReport {
    /// Ours (a ULID, in order of arrival): no report sent later can take a kept one's place.
    pub id: String,
    pub organization_name: String,
    pub report_id: String,
    /// RFC 3339, as the report says.
    pub start_datetime: String,
    pub end_datetime: String,
    pub contact_info: String,
    /// When it arrived, unix ms (an RFC 3339 `received_at` in stores before issue 24).
    #[serde(
        alias = "received_at",
        deserialize_with = "crate::tracking::record::ms"
    )]
    pub received_ms: u64,
    pub via: Via,
    /// The reporter's User-Agent (https) or the envelope sender (mail).
    pub source: String,
    /// The policy domains it reports on.
    pub policy_domains: Vec<String>,
    pub successful_sessions: u64,
    pub failed_sessions: u64,
    /// The report as sent.
    pub report: serde_json::Value,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReceiveError {
    #[error("not gzip: {0}")]
    Gzip(String),
    #[error("larger than {MAX_REPORT_BYTES} bytes uncompressed")]
    TooLarge,
    #[error("not an RFC 8460 report: {0}")]
    Invalid(String),
    #[error("the report is about none of this gateway's relay domains ({0})")]
    NotOurs(String),
}

/// The report's JSON from a body of `media` type (`application/tlsrpt+gzip` or `+json`).
pub fn unpack(gzip: bool, body: &[u8]) -> Result<Vec<u8>, ReceiveError> {
    if !gzip {
        if body.len() as u64 > MAX_REPORT_BYTES {
            return Err(ReceiveError::TooLarge);
        }
        return Ok(body.to_vec());
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(MAX_REPORT_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| ReceiveError::Gzip(e.to_string()))?;
    if out.len() as u64 > MAX_REPORT_BYTES {
        return Err(ReceiveError::TooLarge);
    }
    Ok(out)
}

/// Checks `json` as an RFC 8460 report and describes it; `ours` says whether a policy domain
/// is one of ours (at least one must be).
pub fn read(
    json: &[u8],
    via: Via,
    source: &str,
    ours: impl Fn(&str) -> bool,
) -> Result<ReceivedReport, ReceiveError> {
    let report: Report =
        serde_json::from_slice(json).map_err(|e| ReceiveError::Invalid(e.to_string()))?;
    let mut domains: Vec<String> = report
        .policies
        .iter()
        .map(|p| p.policy.policy_domain.to_ascii_lowercase())
        .collect();
    domains.sort();
    domains.dedup();
    if !domains.iter().any(|d| ours(d)) {
        // Debug: the reporter's text, escaped, for the reply and the log.
        return Err(ReceiveError::NotOurs(format!("{domains:?}")));
    }
    let value = serde_json::from_slice(json).map_err(|e| ReceiveError::Invalid(e.to_string()))?;
    let (ok, failed) = report.session_counts();
    Ok(ReceivedReport {
        id: String::new(),
        successful_sessions: ok,
        failed_sessions: failed,
        organization_name: report.organization_name,
        report_id: report.report_id,
        start_datetime: report.date_range.start_datetime,
        end_datetime: report.date_range.end_datetime,
        contact_info: report.contact_info,
        received_ms: postern_time::now_ms(),
        via,
        source: source.into(),
        policy_domains: domains,
        report: value,
    })
}

/// A report a worker took out of a mail to `settings.reports.receive_address`: checked and
/// kept like a POSTed one (the operator chose the address: any valid report is kept). A report
/// that is not valid, or finds the budget spent, is logged and dropped; only a store failure
/// fails (the batch is then not acknowledged).
pub fn take_mailed(
    worker: &str,
    r: &postern_events::TlsReportReceived,
    put: impl FnOnce(ReceivedReport) -> Result<Kept, crate::tracking::TrackingError>,
) -> Result<(), crate::tracking::TrackingError> {
    match read(r.report.as_bytes(), Via::Mail, &r.sender, |_| true) {
        Ok(report) => {
            if put(report)? == Kept::Full {
                tracing::warn!(%worker, queue_id = %r.queue_id, sender = %r.sender, "a mailed TLS-RPT report was not stored: the received reports are at their byte budget");
            }
        }
        Err(e) => {
            tracing::warn!(%worker, queue_id = %r.queue_id, sender = %r.sender, error = %e, "a mailed TLS-RPT report was not stored");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = r#"{"organization-name":"Big Mail","date-range":{"start-datetime":"2026-12-06T00:00:00Z","end-datetime":"2026-12-06T23:59:59Z"},"contact-info":"tls@big.example","report-id":"r1","policies":[{"policy":{"policy-type":"sts","policy-string":["version: STSv1"],"policy-domain":"Ours.Example","mx-host":["mx.ours.example"]},"summary":{"total-successful-session-count":9,"total-failure-session-count":1},"failure-details":[{"result-type":"certificate-expired","failed-session-count":1}]}]}"#;

    #[test]
    fn a_report_about_our_domain_is_read() {
        let r = read(REPORT.as_bytes(), Via::Https, "192.0.2.7", |d| {
            d == "ours.example"
        })
        .unwrap();
        assert_eq!(r.organization_name, "Big Mail");
        assert_eq!(r.policy_domains, ["ours.example"]);
        assert_eq!((r.successful_sessions, r.failed_sessions), (9, 1));
        assert_eq!(
            read(REPORT.as_bytes(), Via::Https, "x", |_| false).unwrap_err(),
            ReceiveError::NotOurs("[\"ours.example\"]".into())
        );
        assert!(matches!(
            read(b"{\"organization-name\": 1}", Via::Https, "x", |_| true),
            Err(ReceiveError::Invalid(_))
        ));
    }

    #[test]
    fn gzip_is_unpacked_within_the_limit() {
        let gz = postern_sts::report_mail::gzip(REPORT.as_bytes());
        assert_eq!(unpack(true, &gz).unwrap(), REPORT.as_bytes());
        assert!(matches!(unpack(true, b"plain"), Err(ReceiveError::Gzip(_))));
        let bomb = postern_sts::report_mail::gzip(&vec![b' '; MAX_REPORT_BYTES as usize + 10]);
        assert!(bomb.len() < 100_000);
        assert_eq!(unpack(true, &bomb), Err(ReceiveError::TooLarge));
    }
}
