//! `/v1/policy` (the whole policy), its version history and rollback (`evaluate` is in
//! `evaluate.rs`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use postern_policy::{DefaultRule, Relay, Rule, Trust};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{ApiJson, ApiQuery};
use super::{ApiError, Page, Problem};
use crate::auth::Actor;
use crate::control::Control;
use crate::store::VersionSummary;

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleSet {
    pub default: DefaultRule,
    pub rules: Vec<Rule>,
}

/// The whole current policy.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyDocument {
    pub version: u64,
    pub inbound: RuleSet,
    pub outbound: RuleSet,
    pub relay: Relay,
    pub trust: Trust,
}

#[utoipa::path(get, path = "/v1/policy", tag = "policy", operation_id = "get_policy",
    security(("bearer" = [])), responses((status = 200, body = PolicyDocument, description = "OK")))]
pub async fn get_policy(State(c): State<Arc<Control>>, _a: Actor) -> Json<PolicyDocument> {
    let state = c.read();
    let policy = state.policy();
    Json(PolicyDocument {
        version: state.version,
        inbound: RuleSet {
            default: policy.inbound_default,
            rules: policy.inbound,
        },
        outbound: RuleSet {
            default: policy.outbound_default,
            rules: policy.outbound,
        },
        relay: policy.relay,
        trust: policy.trust,
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionList {
    /// Newest first.
    pub items: Vec<VersionSummary>,
    pub next_cursor: Option<String>,
    /// The current version.
    pub current: u64,
}

#[utoipa::path(get, path = "/v1/policy/versions", tag = "policy", operation_id = "list_policy_versions",
    params(Page), security(("bearer" = [])), responses((status = 200, body = VersionList, description = "OK")))]
pub async fn list_versions(
    State(c): State<Arc<Control>>,
    _a: Actor,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Json<VersionList>, ApiError> {
    let limit = page.limit(100, 1000)?;
    let before = page.numeric_cursor()?;
    let mut items = c.store().versions(before, limit + 1)?;
    let next_cursor = page_cursor(&mut items, limit, |v| v.version);
    Ok(Json(VersionList {
        items,
        next_cursor,
        current: c.read().version,
    }))
}

/// Trims `items` to `limit` and returns the cursor for the next page (the last key shown).
pub(super) fn page_cursor<T>(
    items: &mut Vec<T>,
    limit: usize,
    key: impl Fn(&T) -> u64,
) -> Option<String> {
    (items.len() > limit).then(|| {
        items.truncate(limit);
        items.last().map(|i| key(i).to_string()).unwrap_or_default()
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The version whose content becomes current again.
    pub version: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RollbackResponse {
    /// The new version made by the rollback.
    pub version: u64,
    pub rolled_back_to: u64,
}

#[utoipa::path(post, path = "/v1/policy/rollback", tag = "policy", operation_id = "rollback_policy",
    request_body = RollbackRequest, security(("bearer" = [])),
    responses((status = 200, body = RollbackResponse, description = "OK"), (status = 422, body = Problem, description = "Semantically invalid; nothing was stored")))]
pub async fn rollback(
    State(c): State<Arc<Control>>,
    a: Actor,
    ApiJson(req): ApiJson<RollbackRequest>,
) -> Result<Json<RollbackResponse>, ApiError> {
    let version = c.rollback(&a, req.version).await?;
    Ok(Json(RollbackResponse {
        version,
        rolled_back_to: req.version,
    }))
}
