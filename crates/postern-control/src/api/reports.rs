//! `/v1/reports/tls`: the TLS-RPT reports (RFC 8460) Postern builds about its deliveries, and
//! building (and sending) a day's reports at once.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiJson, ApiQuery};
use super::{ApiError, Problem};
use crate::auth::Actor;
use crate::control::Control;
use crate::reports::received::{self, ReceiveError, ReceivedReport};
use crate::reports::{self, ReportError, TlsReportView};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// Only this UTC day (`YYYY-MM-DD`).
    pub date: Option<String>,
    /// Only this recipient (policy) domain.
    pub domain: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TlsReportList {
    /// Newest day first.
    pub items: Vec<TlsReportView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildRequest {
    /// The UTC day (`YYYY-MM-DD`); today's report covers the day so far.
    pub date: String,
    /// Also send each report to its domain's `rua` addresses (needs `settings.reports.contact`).
    #[serde(default)]
    pub send: bool,
}

fn report_error(e: ReportError) -> ApiError {
    match e {
        ReportError::Date(_) => ApiError::bad_request("/date", e.to_string()),
        ReportError::NoContact => ApiError::conflict(e.to_string()),
        ReportError::Tracking(e) => ApiError::internal(e.to_string()),
    }
}

#[utoipa::path(get, path = "/v1/reports/tls", tag = "reports", operation_id = "list_tls_reports",
    params(ReportQuery), security(("bearer" = [])),
    responses((status = 200, body = TlsReportList, description = "Built reports with what became of each")))]
pub async fn list_tls_reports(
    State(c): State<Arc<Control>>,
    _a: Actor,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Json<TlsReportList>, ApiError> {
    if let Some(d) = &q.date {
        reports::day_range(d).map_err(|e| ApiError::bad_request("date", e.to_string()))?;
    }
    let domain = q.domain.map(|d| d.to_ascii_lowercase());
    let items = reports::list(&c, q.date.as_deref(), domain.as_deref())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(TlsReportList { items }))
}

#[utoipa::path(post, path = "/v1/reports/tls/build", tag = "reports", operation_id = "build_tls_reports",
    request_body = BuildRequest, security(("bearer" = [])),
    responses((status = 200, body = TlsReportList, description = "The day's reports, one per recipient domain with sessions, stored (replacing that day's earlier ones)"),
        (status = 403, body = Problem, description = "A viewer token cannot do this"),
        (status = 409, body = Problem, description = "`send` without `settings.reports.contact`")))]
pub async fn build_tls_reports(
    State(c): State<Arc<Control>>,
    a: Actor,
    ApiJson(req): ApiJson<BuildRequest>,
) -> Result<Json<TlsReportList>, ApiError> {
    a.require_admin()?;
    let items = reports::build(&c, &req.date, req.send)
        .await
        .map_err(report_error)?;
    let sent = if req.send { " and sent" } else { "" };
    c.audit(
        &a,
        "POST /v1/reports/tls/build".to_string(),
        format!(
            "{} TLS-RPT reports for {} built{sent}",
            items.len(),
            req.date
        ),
    )
    .await?;
    Ok(Json(TlsReportList { items }))
}

/// The largest report body taken over HTTPS (compressed or not).
pub const MAX_POSTED_BYTES: usize = received::MAX_REPORT_BYTES as usize;

/// `POST /tlsrpt`: a TLS-RPT report (RFC 8460 5.2) about one of the relay domains, as
/// `application/tlsrpt+gzip` or `application/tlsrpt+json`, from any reporter (no token: publish
/// the URL as `rua=https:...`), on the public listener. 204 when stored; 413 over 512 KiB
/// (compressed or not); 415 for another media type; 422 for anything but an RFC 8460 report
/// about a relay domain; 429 past the source's rate; 503 when the received reports have spent
/// their byte budget (`settings.reports.received_max_bytes`). Not in the OpenAPI document: its media types are RFC 8460's, which client
/// generators cannot serialise.
pub async fn receive_tls_report(
    State(c): State<Arc<Control>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = media
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let gzip = match essence.as_str() {
        "application/tlsrpt+gzip" => true,
        "application/tlsrpt+json" => false,
        _ => {
            return Err(ApiError::unsupported_media_type(format!(
                "Content-Type {media:?}: a report is application/tlsrpt+gzip or application/tlsrpt+json"
            )));
        }
    };
    let agent: String = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(200)
        .collect();
    let policy = c.compiled().await?;
    // Decompressing and parsing half a megabyte is CPU work: off the async threads.
    let report = tokio::task::spawn_blocking(move || {
        let json = received::unpack(gzip, &body)?;
        received::read(&json, received::Via::Https, &agent, |d| {
            super::published::is_relay_domain(&policy, d)
        })
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(refused)?;
    // Debug formatting: the reporter's strings are escaped, never a line end in our log.
    tracing::info!(organization = ?report.organization_name, report_id = ?report.report_id, domains = ?report.policy_domains, "TLS-RPT report received");
    let failed = |e: crate::tracking::TrackingError| ApiError::internal(e.to_string());
    let budget = c.read().settings.reports.received_max_bytes;
    let store = c.tracking.clone();
    let kept = tokio::task::spawn_blocking(move || store.put_received(report, budget))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(failed)?;
    if kept == crate::tracking::sql::received::Kept::Full {
        return Err(ApiError::unavailable(
            "the received reports have spent their byte budget; try again when older ones have gone",
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}

fn refused(e: ReceiveError) -> ApiError {
    match e {
        ReceiveError::TooLarge => ApiError::too_large(e.to_string()),
        _ => ApiError::unprocessable("", e.to_string()),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReceivedQuery {
    /// Only reports from this organisation (`organization-name`).
    pub organization: Option<String>,
    /// Page size (default 50, at most 500).
    pub limit: Option<usize>,
    /// `next_cursor` from the previous page.
    pub cursor: Option<String>,
}

/// A report received about our domains.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ReceivedReport)]
pub struct ReceivedReportView {
    /// Ours (a ULID, in order of arrival): no report sent later can take a kept one's place.
    pub id: String,
    pub organization_name: String,
    pub report_id: String,
    /// RFC 3339, as the report says.
    pub start_datetime: String,
    pub end_datetime: String,
    pub contact_info: String,
    /// RFC 3339, when it arrived.
    pub received_at: String,
    /// `https` or `mail`.
    pub via: String,
    /// The reporter's User-Agent (https) or the envelope sender (mail).
    pub source: String,
    /// The policy domains it reports on.
    pub policy_domains: Vec<String>,
    pub successful_sessions: u64,
    pub failed_sessions: u64,
    /// The report as sent.
    #[schema(value_type = Object)]
    pub report: serde_json::Value,
}

impl From<ReceivedReport> for ReceivedReportView {
    fn from(r: ReceivedReport) -> Self {
        ReceivedReportView {
            id: r.id,
            organization_name: r.organization_name,
            report_id: r.report_id,
            start_datetime: r.start_datetime,
            end_datetime: r.end_datetime,
            contact_info: r.contact_info,
            received_at: postern_time::rfc3339_ms(r.received_ms),
            via: r.via.as_str().into(),
            source: r.source,
            policy_domains: r.policy_domains,
            successful_sessions: r.successful_sessions,
            failed_sessions: r.failed_sessions,
            report: r.report,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReceivedList {
    /// Newest first.
    pub items: Vec<ReceivedReportView>,
    /// The next page's cursor; null on the last page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/reports/tls/received", tag = "reports", operation_id = "list_received_tls_reports",
    params(ReceivedQuery), security(("bearer" = [])),
    responses((status = 200, body = ReceivedList, description = "Reports other senders sent about the relay domains")))]
pub async fn list_received_tls_reports(
    State(c): State<Arc<Control>>,
    _a: Actor,
    ApiQuery(q): ApiQuery<ReceivedQuery>,
) -> Result<Json<ReceivedList>, ApiError> {
    let page = super::Page {
        limit: q.limit,
        cursor: q.cursor,
    };
    let limit = page.limit(50, 500)?;
    if page
        .cursor
        .as_deref()
        .is_some_and(|c| ulid::Ulid::from_string(c).is_err())
    {
        return Err(ApiError::bad_request(
            "cursor",
            "not a cursor this list gave",
        ));
    }
    let store = c.tracking.clone();
    let (items, next_cursor) = tokio::task::spawn_blocking(move || {
        store.received(q.organization.as_deref(), limit, page.cursor.as_deref())
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let items = items.into_iter().map(Into::into).collect();
    Ok(Json(ReceivedList { items, next_cursor }))
}
