//! `/v1/reports/tls`: the TLS-RPT reports (RFC 8460) Postern builds about its deliveries, and
//! building (and sending) a day's reports at once.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiJson, ApiQuery};
use super::{ApiError, Problem};
use crate::auth::Actor;
use crate::control::Control;
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
