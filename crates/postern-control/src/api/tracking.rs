//! `/v1/messages` and `/v1/connections` (docs/src/tracking.md, interfaces.md): searches over what
//! the workers
//! reported, newest first, with cursors.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::ApiQuery;
use super::tracking_view::{ConnectionView, MessageSummary, MessageView};
use super::{ApiError, Problem};
use crate::auth::Actor;
use crate::control::Control;
use crate::tracking::query::{ConnectionFilter, MessageFilter, decode_cursor};
use crate::tracking::record::Status;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessageQuery {
    /// Envelope sender, exact address (any case).
    pub sender: Option<String>,
    /// Envelope recipient, exact address (any case).
    pub recipient: Option<String>,
    /// Substring of the decoded subject (any case); best with `since`/`until`.
    pub subject: Option<String>,
    pub queue_id: Option<String>,
    /// Without angle brackets.
    pub message_id: Option<String>,
    /// RFC 3339.
    pub since: Option<String>,
    /// RFC 3339.
    pub until: Option<String>,
    pub status: Option<Status>,
    pub worker: Option<String>,
    /// Some leg encrypted.
    pub tls: Option<bool>,
    /// Some leg in plaintext.
    pub plaintext: Option<bool>,
    /// A TLS rule refused or deferred it.
    pub violation: Option<bool>,
    /// Page size (default 50, at most 500).
    pub limit: Option<usize>,
    /// `next_cursor` from the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageList {
    /// Newest first.
    pub items: Vec<MessageSummary>,
    /// Null on the last page; every page before it is full (`limit` items).
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConnectionQuery {
    pub ip: Option<String>,
    /// RFC 3339.
    pub since: Option<String>,
    /// RFC 3339.
    pub until: Option<String>,
    /// Only sessions whose STARTTLS handshake failed (true) or did not (false).
    pub tls_failed: Option<bool>,
    /// Only sessions whose client sent plaintext after STARTTLS (true), or not (false).
    pub starttls_leftovers: Option<bool>,
    /// Page size (default 50, at most 500).
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionList {
    /// Newest first.
    pub items: Vec<ConnectionView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct MessagePath {
    /// The queue id (tracking id).
    pub id: String,
}

fn time(field: &str, value: Option<String>) -> Result<Option<u64>, ApiError> {
    let Some(value) = value else {
        return Ok(None);
    };
    postern_time::parse_rfc3339_ms(&value)
        .map(Some)
        .map_err(|e| ApiError::bad_request(field, format!("'{value}' is not RFC 3339: {e}")))
}

fn limit(l: Option<usize>) -> Result<usize, ApiError> {
    match l {
        None => Ok(50),
        Some(l) if (1..=500).contains(&l) => Ok(l),
        Some(_) => Err(ApiError::bad_request(
            "limit",
            "limit must be between 1 and 500",
        )),
    }
}

fn cursor(c: Option<&str>) -> Result<Option<Vec<u8>>, ApiError> {
    c.map(|c| decode_cursor(c).map_err(|e| ApiError::bad_request("cursor", e.to_string())))
        .transpose()
}

fn storage(e: crate::tracking::TrackingError) -> ApiError {
    tracing::error!(error = %e, "tracking query failed");
    ApiError::internal(e.to_string())
}

#[utoipa::path(get, path = "/v1/messages", tag = "tracking", operation_id = "list_messages",
    params(MessageQuery), security(("bearer" = [])),
    responses((status = 200, body = MessageList, description = "Messages, newest first"),
        (status = 400, body = Problem, description = "A bad filter or cursor")))]
pub async fn list_messages(
    State(c): State<Arc<Control>>,
    _a: Actor,
    ApiQuery(q): ApiQuery<MessageQuery>,
) -> Result<Json<MessageList>, ApiError> {
    let limit = limit(q.limit)?;
    let cursor = cursor(q.cursor.as_deref())?;
    let filter = MessageFilter {
        sender: q.sender,
        recipient: q.recipient,
        subject: q.subject,
        queue_id: q.queue_id,
        message_id: q.message_id.map(|m| {
            m.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        }),
        since: time("since", q.since)?,
        until: time("until", q.until)?,
        status: q.status,
        worker: q.worker,
        tls: q.tls,
        plaintext: q.plaintext,
        violation: q.violation,
    };
    let tracking = c.tracking.clone();
    let (items, next_cursor) = tokio::task::spawn_blocking(move || {
        tracking.search_messages(&filter, limit, cursor.as_deref())
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(storage)?;
    let items = items.iter().map(Into::into).collect();
    Ok(Json(MessageList { items, next_cursor }))
}

#[utoipa::path(get, path = "/v1/messages/{id}", tag = "tracking", operation_id = "get_message",
    params(MessagePath), security(("bearer" = [])),
    responses((status = 200, body = MessageView, description = "The message, its legs and its timeline"),
        (status = 404, body = Problem, description = "No such message")))]
pub async fn get_message(
    State(c): State<Arc<Control>>,
    _a: Actor,
    Path(p): Path<MessagePath>,
) -> Result<Json<MessageView>, ApiError> {
    let tracking = c.tracking.clone();
    let id = p.id.clone();
    let found = tokio::task::spawn_blocking(move || tracking.message(&id))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(storage)?;
    found
        .map(|m| Json(MessageView::from(&m)))
        .ok_or_else(|| ApiError::not_found(format!("no message '{}'", p.id)))
}

#[utoipa::path(get, path = "/v1/connections", tag = "tracking", operation_id = "list_connections",
    params(ConnectionQuery), security(("bearer" = [])),
    responses((status = 200, body = ConnectionList, description = "SMTP sessions, newest first"),
        (status = 400, body = Problem, description = "A bad filter or cursor")))]
pub async fn list_connections(
    State(c): State<Arc<Control>>,
    _a: Actor,
    ApiQuery(q): ApiQuery<ConnectionQuery>,
) -> Result<Json<ConnectionList>, ApiError> {
    let limit = limit(q.limit)?;
    let cursor = cursor(q.cursor.as_deref())?;
    // Stored as the worker saw it: canonical (IPv4-mapped as IPv4), lowercase IPv6.
    let ip =
        q.ip.map(|ip| {
            ip.parse::<std::net::IpAddr>()
                .map(|a| a.to_canonical().to_string())
                .map_err(|_| ApiError::bad_request("ip", format!("'{ip}' is not an IP address")))
        })
        .transpose()?;
    let filter = ConnectionFilter {
        ip,
        since: time("since", q.since)?,
        until: time("until", q.until)?,
        tls_failed: q.tls_failed,
        starttls_leftovers: q.starttls_leftovers,
    };
    let tracking = c.tracking.clone();
    let (items, next_cursor) = tokio::task::spawn_blocking(move || {
        tracking.search_connections(&filter, limit, cursor.as_deref())
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(storage)?;
    let items = items.iter().map(Into::into).collect();
    Ok(Json(ConnectionList { items, next_cursor }))
}
