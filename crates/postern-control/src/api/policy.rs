//! `/v1/policy` (the whole policy), its version history and rollback, and `evaluate`.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use postern_policy::{
    CipherStrength, DefaultRule, Direction, Level, Query, Relay, Rule, RuleRef, Trust, Warning,
};
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateRequest {
    pub direction: Direction,
    /// Inbound: the client's address.
    pub client_ip: Option<String>,
    /// Inbound: the MAIL FROM address.
    pub sender: Option<String>,
    /// Outbound: the recipient address.
    pub recipient: Option<String>,
}

/// Which entry produced a decision.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleRefDto {
    /// `rule` or `default`.
    pub kind: String,
    /// The rule id; null for a default.
    pub id: Option<String>,
    /// The rule's match; null for a default.
    #[serde(rename = "match")]
    pub matches: Option<String>,
}

impl From<RuleRef<'_>> for RuleRefDto {
    fn from(r: RuleRef<'_>) -> Self {
        match r {
            RuleRef::Default(_) => RuleRefDto {
                kind: "default".into(),
                id: None,
                matches: None,
            },
            RuleRef::Rule(rule) => RuleRefDto {
                kind: "rule".into(),
                id: Some(rule.id.clone()),
                matches: Some(rule.matches.to_string()),
            },
        }
    }
}

/// The connect-time decision (inbound), from the client IP alone.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectDecision {
    pub level: Level,
    pub cipher_strength: CipherStrength,
    pub level_rule: RuleRefDto,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EvaluateResponse {
    /// The policy version evaluated.
    pub version: u64,
    /// The effective level (inbound: at MAIL FROM when a sender is given).
    pub level: Level,
    /// The strength enforced; always `medium` below `encrypt`.
    pub cipher_strength: CipherStrength,
    /// Inbound: STARTTLS is offered in EHLO. Outbound: the worker will try STARTTLS.
    pub starttls_offered: bool,
    pub request_client_cert: bool,
    pub level_rule: RuleRefDto,
    /// Null below `encrypt`, where strength is not enforced.
    pub strength_rule: Option<RuleRefDto>,
    /// Inbound only.
    pub connect: Option<ConnectDecision>,
    /// Inbound only: the sender-domain rule that matched.
    pub sender_rule: Option<RuleRefDto>,
    pub warnings: Vec<Warning>,
}

#[utoipa::path(post, path = "/v1/policy/evaluate", tag = "policy", operation_id = "evaluate_policy",
    request_body = EvaluateRequest, security(("bearer" = [])),
    responses((status = 200, body = EvaluateResponse, description = "OK"), (status = 422, body = Problem, description = "Semantically invalid; nothing was stored")))]
pub async fn evaluate(
    State(c): State<Arc<Control>>,
    _a: Actor,
    ApiJson(req): ApiJson<EvaluateRequest>,
) -> Result<Json<EvaluateResponse>, ApiError> {
    let mut errors = Vec::new();
    let inbound_only = |field: &str| format!("{field} applies to inbound evaluations only");
    match req.direction {
        Direction::Inbound if req.recipient.is_some() => {
            errors.push(postern_policy::FieldError::new(
                "/recipient",
                "recipient applies to outbound evaluations only",
            ))
        }
        Direction::Outbound if req.client_ip.is_some() => errors.push(
            postern_policy::FieldError::new("/client_ip", inbound_only("client_ip")),
        ),
        Direction::Outbound if req.sender.is_some() => errors.push(
            postern_policy::FieldError::new("/sender", inbound_only("sender")),
        ),
        _ => {}
    }
    let client_ip = match req.client_ip.as_deref().map(str::parse::<IpAddr>) {
        Some(Ok(ip)) => Some(ip.to_canonical()),
        Some(Err(_)) => {
            errors.push(postern_policy::FieldError::new(
                "/client_ip",
                "not an IPv4 or IPv6 address",
            ));
            None
        }
        None => None,
    };
    if !errors.is_empty() {
        return Err(errors.into());
    }
    let compiled = c.compiled().await?;
    let e = compiled.evaluate(&Query {
        direction: req.direction,
        client_ip,
        sender: req.sender.as_deref(),
        recipient: req.recipient.as_deref(),
    });
    Ok(Json(EvaluateResponse {
        version: compiled.version,
        level: e.decision.level,
        cipher_strength: e.decision.cipher_strength,
        starttls_offered: e.starttls_offered,
        request_client_cert: e.request_client_cert,
        level_rule: e.decision.level_rule.into(),
        strength_rule: e.decision.strength_rule.map(Into::into),
        connect: e.connect.map(|d| ConnectDecision {
            level: d.level,
            cipher_strength: d.cipher_strength,
            level_rule: d.level_rule.into(),
        }),
        sender_rule: e.sender_rule.map(|r| RuleRef::Rule(r).into()),
        warnings: e.warnings,
    }))
}
