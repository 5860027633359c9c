//! `/v1/relay`, `/v1/trust` and `/v1/settings`: whole documents, each its own ETag. Each PUT
//! makes a policy version, since workers enforce all three.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use postern_policy::{Relay, Settings, Trust};

use super::extract::{ApiJson, IfMatch, etag, tagged};
use super::{ApiError, Problem};
use crate::auth::Actor;
use crate::change::Op;
use crate::control::{Control, Planned};

#[utoipa::path(get, path = "/v1/relay", tag = "relay", operation_id = "get_relay",
    security(("bearer" = [])), responses((status = 200, body = Relay, description = "OK")))]
pub async fn get_relay(State(c): State<Arc<Control>>, _a: Actor) -> Response {
    let relay = c.read().relay.clone();
    tagged(StatusCode::OK, &relay, &relay)
}

#[utoipa::path(put, path = "/v1/relay", tag = "relay", operation_id = "set_relay",
    request_body = Relay, security(("bearer" = [])),
    responses((status = 200, body = Relay, description = "OK"), (status = 412, body = Problem, description = "If-Match is stale"), (status = 422, body = Problem, description = "Semantically invalid; nothing was stored")))]
pub async fn put_relay(
    State(c): State<Arc<Control>>,
    a: Actor,
    m: IfMatch,
    ApiJson(relay): ApiJson<Relay>,
) -> Result<Response, ApiError> {
    a.require_admin()?;
    let relay = relay.normalized()?;
    c.write::<_, ApiError>(&a, "PUT /v1/relay", |state| {
        m.check(&etag(&state.relay))?;
        Ok(Planned {
            summary: format!(
                "set relay: {} domain(s), {} trusted network(s)",
                relay.domains.len(),
                relay.networks.len()
            ),
            field: "/domains",
            ops: vec![Op::SetRelay {
                relay: relay.clone(),
            }],
            out: (),
        })
    })
    .await?;
    Ok(tagged(StatusCode::OK, &relay, &relay))
}

#[utoipa::path(get, path = "/v1/trust", tag = "trust", operation_id = "get_trust",
    security(("bearer" = [])), responses((status = 200, body = Trust, description = "OK")))]
pub async fn get_trust(State(c): State<Arc<Control>>, _a: Actor) -> Response {
    let trust = c.read().trust.clone();
    tagged(StatusCode::OK, &trust, &trust)
}

#[utoipa::path(put, path = "/v1/trust", tag = "trust", operation_id = "set_trust",
    request_body = Trust, security(("bearer" = [])),
    responses((status = 200, body = Trust, description = "OK"), (status = 412, body = Problem, description = "If-Match is stale"), (status = 422, body = Problem, description = "Semantically invalid; nothing was stored")))]
pub async fn put_trust(
    State(c): State<Arc<Control>>,
    a: Actor,
    m: IfMatch,
    ApiJson(trust): ApiJson<Trust>,
) -> Result<Response, ApiError> {
    a.require_admin()?;
    let errors = trust.validate();
    if !errors.is_empty() {
        return Err(errors.into());
    }
    c.write::<_, ApiError>(&a, "PUT /v1/trust", |state| {
        m.check(&etag(&state.trust))?;
        Ok(Planned {
            summary: format!("set trust: {} CA(s)", trust.ca_pems.len()),
            field: "/ca_pems",
            ops: vec![Op::SetTrust {
                trust: trust.clone(),
            }],
            out: (),
        })
    })
    .await?;
    Ok(tagged(StatusCode::OK, &trust, &trust))
}

#[utoipa::path(get, path = "/v1/settings", tag = "settings", operation_id = "get_settings",
    security(("bearer" = [])), responses((status = 200, body = Settings, description = "OK")))]
pub async fn get_settings(State(c): State<Arc<Control>>, _a: Actor) -> Response {
    let settings = c.read().settings.clone();
    tagged(StatusCode::OK, &settings, &settings)
}

#[utoipa::path(put, path = "/v1/settings", tag = "settings", operation_id = "set_settings",
    request_body = Settings, security(("bearer" = [])),
    responses((status = 200, body = Settings, description = "OK"), (status = 412, body = Problem, description = "If-Match is stale"), (status = 422, body = Problem, description = "Semantically invalid; nothing was stored")))]
pub async fn put_settings(
    State(c): State<Arc<Control>>,
    a: Actor,
    m: IfMatch,
    ApiJson(settings): ApiJson<Settings>,
) -> Result<Response, ApiError> {
    a.require_admin()?;
    let settings = settings.normalized()?;
    c.write::<_, ApiError>(&a, "PUT /v1/settings", |state| {
        m.check(&etag(&state.settings))?;
        Ok(Planned {
            summary: "set settings".into(),
            field: "",
            ops: vec![Op::SetSettings {
                settings: Box::new(settings.clone()),
            }],
            out: (),
        })
    })
    .await?;
    Ok(tagged(StatusCode::OK, &settings, &settings))
}
