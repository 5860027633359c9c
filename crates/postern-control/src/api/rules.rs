//! `/v1/policy/{inbound,outbound}/rules` and `/default`: the two rule lists and their defaults.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use postern_policy::{
    DefaultRule, Direction, FieldError, Level, Match, Rule, RuleInput, Warning, rule_warnings,
    validate_rule_input,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiJson, ApiQuery, IfMatch, etag, tagged, with_etag};
use super::{ApiError, Page};
use crate::auth::Actor;
use crate::change::Op;
use crate::control::{Control, Planned};
use crate::state::State as PolicyState;

/// A rule as stored, with the warnings a write produced.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleResponse {
    #[serde(flatten)]
    pub rule: Rule,
    pub warnings: Vec<Warning>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleList {
    pub items: Vec<Rule>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The body of a replace-all: the new list, in one version.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleListInput {
    pub items: Vec<RuleInput>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleListResponse {
    pub items: Vec<Rule>,
    pub warnings: Vec<Warning>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DefaultResponse {
    pub level: Level,
    pub cipher_strength: postern_policy::CipherStrength,
    pub warnings: Vec<Warning>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct RulePath {
    /// The rule id.
    pub id: String,
}

fn list_etag(state: &PolicyState, direction: Direction) -> String {
    etag(&state.rules(direction).values().collect::<Vec<_>>())
}

fn list(control: &Control, direction: Direction, page: Page) -> Result<Response, ApiError> {
    let limit = page.limit(1000, 100_000)?;
    let state = control.read();
    let rules = state.rules(direction);
    let start = page
        .cursor
        .as_ref()
        .map_or(std::ops::Bound::Unbounded, |c| {
            std::ops::Bound::Excluded(c.clone())
        });
    let mut items: Vec<Rule> = rules
        .range((start, std::ops::Bound::Unbounded))
        .take(limit + 1)
        .map(|(_, r)| r.clone())
        .collect();
    let next_cursor = (items.len() > limit).then(|| {
        items.truncate(limit);
        items.last().map(|r| r.id.clone()).unwrap_or_default()
    });
    Ok(with_etag(
        StatusCode::OK,
        &list_etag(&state, direction),
        &RuleList { items, next_cursor },
    ))
}

/// The rule `input` describes, checked against the rest of the list (`id` is the rule's own).
fn checked_rule(
    state: &PolicyState,
    direction: Direction,
    id: String,
    input: RuleInput,
) -> Result<Rule, ApiError> {
    let matches = validate_rule_input(&input, direction)?;
    if let Some(other) = state
        .rule_with_match(direction, &matches)
        .filter(|o| *o != id)
    {
        return Err(ApiError::unprocessable(
            "/match",
            format!("rule {other} already matches '{matches}' (disabled rules count too)"),
        ));
    }
    Ok(Rule {
        id,
        matches,
        level: input.level,
        cipher_strength: input.cipher_strength,
        enabled: input.enabled,
        comment: input.comment,
    })
}

fn describe(rule: &Rule) -> String {
    format!(
        "'{}' -> {} ({})",
        rule.matches,
        rule.level.as_str(),
        rule.cipher_strength.as_str()
    )
}

async fn create(
    control: &Arc<Control>,
    actor: &Actor,
    direction: Direction,
    input: RuleInput,
) -> Result<Response, ApiError> {
    let id = control.new_id();
    let action = format!("POST /v1/policy/{}/rules", direction.as_str());
    let (_, rule) = control
        .write::<_, ApiError>(actor, &action, |state| {
            let rule = checked_rule(state, direction, id, input)?;
            Ok(Planned {
                summary: format!(
                    "create {} rule {} {}",
                    direction.as_str(),
                    rule.id,
                    describe(&rule)
                ),
                field: "/level",
                ops: vec![Op::PutRule {
                    direction,
                    rule: rule.clone(),
                }],
                out: rule,
            })
        })
        .await?;
    let warnings = rule_warnings(&rule, direction, control.read().default_rule(direction));
    let mut response = tagged(
        StatusCode::CREATED,
        &rule,
        &RuleResponse {
            rule: rule.clone(),
            warnings,
        },
    );
    let location = format!("/v1/policy/{}/rules/{}", direction.as_str(), rule.id);
    response.headers_mut().insert(
        axum::http::header::LOCATION,
        location.parse().expect("ids are header-safe"),
    );
    Ok(response)
}

async fn replace(
    control: &Arc<Control>,
    actor: &Actor,
    direction: Direction,
    if_match: IfMatch,
    body: RuleListInput,
) -> Result<Response, ApiError> {
    let action = format!("PUT /v1/policy/{}/rules", direction.as_str());
    let ids: Vec<String> = body.items.iter().map(|_| control.new_id()).collect();
    let (_, rules) = control
        .write::<_, ApiError>(actor, &action, |state| {
            if_match.check(&list_etag(state, direction))?;
            let mut errors: Vec<FieldError> = Vec::new();
            let mut rules = Vec::with_capacity(body.items.len());
            let mut first_of: HashMap<Match, usize> = HashMap::with_capacity(body.items.len());
            for (i, (input, new_id)) in body.items.into_iter().zip(ids).enumerate() {
                let matches = match validate_rule_input(&input, direction) {
                    Ok(m) => m,
                    Err(e) => {
                        errors.extend(e.into_iter().map(|e| e.under(&format!("/items/{i}"))));
                        continue;
                    }
                };
                if let Some(first) = first_of.insert(matches.clone(), i) {
                    errors.push(FieldError::new(
                        format!("/items/{i}/match"),
                        format!("duplicate match '{matches}' (also /items/{first})"),
                    ));
                    continue;
                }
                // A rule whose match is unchanged keeps its id.
                let id = state
                    .rule_with_match(direction, &matches)
                    .map_or(new_id, str::to_string);
                rules.push(Rule {
                    id,
                    matches,
                    level: input.level,
                    cipher_strength: input.cipher_strength,
                    enabled: input.enabled,
                    comment: input.comment,
                });
            }
            if !errors.is_empty() {
                return Err(errors.into());
            }
            rules.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(Planned {
                summary: format!(
                    "replace all {} rules ({} rules)",
                    direction.as_str(),
                    rules.len()
                ),
                field: "/items",
                ops: vec![Op::ReplaceRules {
                    direction,
                    rules: rules.clone(),
                }],
                out: rules,
            })
        })
        .await?;
    let default = control.read().default_rule(direction);
    let warnings = rules
        .iter()
        .flat_map(|r| rule_warnings(r, direction, default))
        .collect();
    let tag = etag(&rules.iter().collect::<Vec<_>>());
    Ok(with_etag(
        StatusCode::OK,
        &tag,
        &RuleListResponse {
            items: rules,
            warnings,
        },
    ))
}

fn get(control: &Control, direction: Direction, id: &str) -> Result<Response, ApiError> {
    let state = control.read();
    let rule = state
        .rules(direction)
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("no {} rule {id}", direction.as_str())))?;
    Ok(tagged(StatusCode::OK, rule, rule))
}

fn existing<'a>(
    state: &'a PolicyState,
    direction: Direction,
    id: &str,
    if_match: &IfMatch,
) -> Result<&'a Rule, ApiError> {
    let rule = state
        .rules(direction)
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("no {} rule {id}", direction.as_str())))?;
    if_match.check(&etag(rule))?;
    Ok(rule)
}

async fn put(
    control: &Arc<Control>,
    actor: &Actor,
    direction: Direction,
    id: String,
    if_match: IfMatch,
    input: RuleInput,
) -> Result<Response, ApiError> {
    let action = format!("PUT /v1/policy/{}/rules/{id}", direction.as_str());
    let (_, rule) = control
        .write::<_, ApiError>(actor, &action, |state| {
            existing(state, direction, &id, &if_match)?;
            let rule = checked_rule(state, direction, id.clone(), input)?;
            Ok(Planned {
                summary: format!(
                    "update {} rule {id} {}",
                    direction.as_str(),
                    describe(&rule)
                ),
                field: "/level",
                ops: vec![Op::PutRule {
                    direction,
                    rule: rule.clone(),
                }],
                out: rule,
            })
        })
        .await?;
    let warnings = rule_warnings(&rule, direction, control.read().default_rule(direction));
    Ok(tagged(
        StatusCode::OK,
        &rule,
        &RuleResponse {
            rule: rule.clone(),
            warnings,
        },
    ))
}

async fn delete(
    control: &Arc<Control>,
    actor: &Actor,
    direction: Direction,
    id: String,
    if_match: IfMatch,
) -> Result<Response, ApiError> {
    let action = format!("DELETE /v1/policy/{}/rules/{id}", direction.as_str());
    control
        .write::<_, ApiError>(actor, &action, |state| {
            let rule = existing(state, direction, &id, &if_match)?;
            Ok(Planned {
                summary: format!("delete {} rule {id} {}", direction.as_str(), describe(rule)),
                field: "/level",
                ops: vec![Op::DeleteRule {
                    direction,
                    id: id.clone(),
                }],
                out: (),
            })
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn get_default(control: &Control, direction: Direction) -> Response {
    let d = control.read().default_rule(direction);
    tagged(StatusCode::OK, &d, &d)
}

/// One warning for all enabled sender-domain rules below a new inbound default.
fn below_default(state: &PolicyState, default: DefaultRule) -> Vec<Warning> {
    let below: Vec<&Rule> = state
        .rules(Direction::Inbound)
        .values()
        .filter(|r| r.enabled && !matches!(r.matches, Match::Net(_)) && r.level < default.level)
        .collect();
    match below.first() {
        None => Vec::new(),
        Some(first) => vec![Warning {
            code: "sender_rule_below_default".into(),
            detail: format!(
                "{} enabled sender-domain rule(s) are below the inbound default '{}' (first: '{}'); \
                 sender domains can be forged, and a sender rule only tightens the connect-time level",
                below.len(),
                default.level.as_str(),
                first.matches
            ),
        }],
    }
}

async fn put_default(
    control: &Arc<Control>,
    actor: &Actor,
    direction: Direction,
    if_match: IfMatch,
    default: DefaultRule,
) -> Result<Response, ApiError> {
    let action = format!("PUT /v1/policy/{}/default", direction.as_str());
    control
        .write::<_, ApiError>(actor, &action, |state| {
            if_match.check(&etag(&state.default_rule(direction)))?;
            Ok(Planned {
                summary: format!(
                    "set the {} default to {} ({})",
                    direction.as_str(),
                    default.level.as_str(),
                    default.cipher_strength.as_str()
                ),
                field: "/level",
                ops: vec![Op::SetDefault { direction, default }],
                out: (),
            })
        })
        .await?;
    let warnings = match direction {
        Direction::Inbound => below_default(&control.read(), default),
        Direction::Outbound => Vec::new(),
    };
    let body = DefaultResponse {
        level: default.level,
        cipher_strength: default.cipher_strength,
        warnings,
    };
    Ok(tagged(StatusCode::OK, &default, &body))
}

/// The per-direction handlers: utoipa needs a literal path and a unique operation id for each.
macro_rules! direction_handlers {
    ($mod:ident, $dir:expr, $tag:literal, $rules:literal, $rule:literal, $default:literal) => {
        pub mod $mod {
            use super::*;

            #[utoipa::path(get, path = $rules, tag = $tag, operation_id = concat!("list_", $tag, "_rules"),
                params(Page), security(("bearer" = [])),
                responses((status = 200, body = RuleList, description = "Rules in creation order")))]
            pub async fn list_rules(State(c): State<Arc<Control>>, _a: Actor, ApiQuery(page): ApiQuery<Page>) -> Result<Response, ApiError> {
                list(&c, $dir, page)
            }

            #[utoipa::path(post, path = $rules, tag = $tag, operation_id = concat!("create_", $tag, "_rule"),
                request_body = RuleInput, security(("bearer" = [])),
                responses((status = 201, body = RuleResponse, description = "Created"),
                    (status = 400, body = super::super::Problem, description = "Not JSON, or not the schema"), (status = 422, body = super::super::Problem, description = "Semantically invalid; nothing was stored")))]
            pub async fn create_rule(State(c): State<Arc<Control>>, a: Actor, ApiJson(input): ApiJson<RuleInput>) -> Result<Response, ApiError> {
                create(&c, &a, $dir, input).await
            }

            #[utoipa::path(put, path = $rules, tag = $tag, operation_id = concat!("replace_", $tag, "_rules"),
                request_body = RuleListInput, security(("bearer" = [])),
                responses((status = 200, body = RuleListResponse, description = "Replaced, as one version"),
                    (status = 412, body = super::super::Problem, description = "If-Match is stale"), (status = 422, body = super::super::Problem, description = "Semantically invalid; nothing was stored")))]
            pub async fn replace_rules(State(c): State<Arc<Control>>, a: Actor, m: IfMatch, ApiJson(body): ApiJson<RuleListInput>) -> Result<Response, ApiError> {
                replace(&c, &a, $dir, m, body).await
            }

            #[utoipa::path(get, path = $rule, tag = $tag, operation_id = concat!("get_", $tag, "_rule"),
                params(RulePath), security(("bearer" = [])),
                responses((status = 200, body = Rule, description = "OK"), (status = 404, body = super::super::Problem, description = "No such id")))]
            pub async fn get_rule(State(c): State<Arc<Control>>, _a: Actor, Path(p): Path<RulePath>) -> Result<Response, ApiError> {
                get(&c, $dir, &p.id)
            }

            #[utoipa::path(put, path = $rule, tag = $tag, operation_id = concat!("update_", $tag, "_rule"),
                params(RulePath), request_body = RuleInput, security(("bearer" = [])),
                responses((status = 200, body = RuleResponse, description = "OK"), (status = 404, body = super::super::Problem, description = "No such id"),
                    (status = 412, body = super::super::Problem, description = "If-Match is stale"), (status = 422, body = super::super::Problem, description = "Semantically invalid; nothing was stored")))]
            pub async fn update_rule(State(c): State<Arc<Control>>, a: Actor, Path(p): Path<RulePath>, m: IfMatch, ApiJson(input): ApiJson<RuleInput>) -> Result<Response, ApiError> {
                put(&c, &a, $dir, p.id, m, input).await
            }

            #[utoipa::path(delete, path = $rule, tag = $tag, operation_id = concat!("delete_", $tag, "_rule"),
                params(RulePath), security(("bearer" = [])),
                responses((status = 204, description = "Deleted"), (status = 404, body = super::super::Problem, description = "No such id"),
                    (status = 412, body = super::super::Problem, description = "If-Match is stale")))]
            pub async fn delete_rule(State(c): State<Arc<Control>>, a: Actor, Path(p): Path<RulePath>, m: IfMatch) -> Result<Response, ApiError> {
                delete(&c, &a, $dir, p.id, m).await
            }

            #[utoipa::path(get, path = $default, tag = $tag, operation_id = concat!("get_", $tag, "_default"),
                security(("bearer" = [])), responses((status = 200, body = DefaultRule, description = "OK")))]
            pub async fn get_default_rule(State(c): State<Arc<Control>>, _a: Actor) -> Response {
                get_default(&c, $dir)
            }

            #[utoipa::path(put, path = $default, tag = $tag, operation_id = concat!("set_", $tag, "_default"),
                request_body = DefaultRule, security(("bearer" = [])),
                responses((status = 200, body = DefaultResponse, description = "OK"), (status = 412, body = super::super::Problem, description = "If-Match is stale"),
                    (status = 422, body = super::super::Problem, description = "Semantically invalid; nothing was stored")))]
            pub async fn set_default_rule(State(c): State<Arc<Control>>, a: Actor, m: IfMatch, ApiJson(d): ApiJson<DefaultRule>) -> Result<Response, ApiError> {
                put_default(&c, &a, $dir, m, d).await
            }
        }
    };
}

direction_handlers!(
    inbound,
    Direction::Inbound,
    "inbound",
    "/v1/policy/inbound/rules",
    "/v1/policy/inbound/rules/{id}",
    "/v1/policy/inbound/default"
);
direction_handlers!(
    outbound,
    Direction::Outbound,
    "outbound",
    "/v1/policy/outbound/rules",
    "/v1/policy/outbound/rules/{id}",
    "/v1/policy/outbound/default"
);
