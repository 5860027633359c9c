//! `/v1/tokens` and `/v1/audit`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiJson, ApiQuery};
use super::policy::page_cursor;
use super::{ApiError, Page, Problem};
use crate::auth::{Actor, Role};
use crate::control::Control;
use crate::store::{AuditEntry, TokenRecord};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub role: Role,
    #[serde(default)]
    pub comment: String,
}

/// A new token: the only time its secret is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewToken {
    pub id: String,
    pub role: Role,
    /// The secret, for `Authorization: Bearer <token>`.
    pub token: String,
    pub comment: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub role: Role,
    pub comment: String,
    pub created_at: String,
}

impl From<TokenRecord> for TokenInfo {
    fn from(t: TokenRecord) -> Self {
        TokenInfo {
            id: t.id,
            role: t.role,
            comment: t.comment,
            created_at: t.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    pub items: Vec<TokenInfo>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct TokenPath {
    /// The token id (not the secret).
    pub id: String,
}

#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", operation_id = "create_token",
    request_body = TokenRequest, security(("bearer" = [])),
    responses((status = 201, body = NewToken, description = "Created"), (status = 403, body = Problem, description = "A viewer token cannot do this")))]
pub async fn create_token(
    State(c): State<Arc<Control>>,
    a: Actor,
    ApiJson(req): ApiJson<TokenRequest>,
) -> Result<(StatusCode, Json<NewToken>), ApiError> {
    if req.comment.len() > 1024 {
        return Err(ApiError::unprocessable(
            "/comment",
            "is longer than 1024 octets",
        ));
    }
    let (record, token) = c.create_token(&a, req.role, req.comment).await?;
    Ok((
        StatusCode::CREATED,
        Json(NewToken {
            id: record.id,
            role: record.role,
            token,
            comment: record.comment,
            created_at: record.created_at,
        }),
    ))
}

#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", operation_id = "list_tokens",
    security(("bearer" = [])), responses((status = 200, body = TokenList, description = "OK"), (status = 403, body = Problem, description = "A viewer token cannot do this")))]
pub async fn list_tokens(
    State(c): State<Arc<Control>>,
    a: Actor,
) -> Result<Json<TokenList>, ApiError> {
    a.require_admin()?;
    let items = c.tokens().into_iter().map(TokenInfo::from).collect();
    Ok(Json(TokenList {
        items,
        next_cursor: None,
    }))
}

#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens", operation_id = "delete_token",
    params(TokenPath), security(("bearer" = [])),
    responses((status = 204, description = "Deleted"), (status = 404, body = Problem, description = "No such id"), (status = 422, body = Problem, description = "Semantically invalid; nothing was stored")))]
pub async fn delete_token(
    State(c): State<Arc<Control>>,
    a: Actor,
    Path(p): Path<TokenPath>,
) -> Result<StatusCode, ApiError> {
    c.delete_token(&a, &p.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The token a request was made with: what a client (the console, `postern ctl`) may offer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Whoami {
    /// The token id (not the secret).
    pub id: String,
    pub role: Role,
}

#[utoipa::path(get, path = "/v1/whoami", tag = "tokens", operation_id = "whoami",
    security(("bearer" = [])), responses((status = 200, body = Whoami, description = "OK")))]
pub async fn whoami(a: Actor) -> Json<Whoami> {
    Json(Whoami {
        id: a.id,
        role: a.role,
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditList {
    /// Newest first.
    pub items: Vec<AuditEntry>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/audit", tag = "audit", operation_id = "list_audit",
    params(Page), security(("bearer" = [])), responses((status = 200, body = AuditList, description = "OK")))]
pub async fn list_audit(
    State(c): State<Arc<Control>>,
    _a: Actor,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Json<AuditList>, ApiError> {
    let limit = page.limit(100, 1000)?;
    let mut items = c.store().audit(page.numeric_cursor()?, limit + 1)?;
    let next_cursor = page_cursor(&mut items, limit, |e| e.seq);
    Ok(Json(AuditList { items, next_cursor }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerList {
    pub items: Vec<crate::workers::WorkerInfo>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/workers", tag = "workers", operation_id = "list_workers",
    security(("bearer" = [])), responses((status = 200, body = WorkerList, description = "OK")))]
pub async fn list_workers(State(c): State<Arc<Control>>, _a: Actor) -> Json<WorkerList> {
    Json(WorkerList {
        items: c.workers.list(),
        next_cursor: None,
    })
}
