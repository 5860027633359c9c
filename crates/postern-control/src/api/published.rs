//! MTA-STS for the operator's own domains (RFC 8461 3.2): the policy file served at
//! `/.well-known/mta-sts.txt` for `Host: mta-sts.<relay domain>`, and what to publish in DNS.
//! Point `mta-sts.<domain>` at the control plane's HTTPS listener (a certificate for that name
//! is the operator's: RFC 8461 requires one that web PKI validates).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use postern_policy::{CompiledPolicy, normalize_lookup_domain};
use serde::Serialize;
use sha2::Digest as _;
use utoipa::ToSchema;

use super::{ApiError, Problem};
use crate::auth::Actor;
use crate::control::Control;

/// Whether `domain` is one of `policy`'s relay domains (`.example.com` covering its
/// subdomains), as delivery decides it.
pub fn is_relay_domain(policy: &CompiledPolicy, domain: &str) -> bool {
    normalize_lookup_domain(domain).is_some_and(|d| policy.relay_domain(&d).is_some())
}

/// The `id` of the `_mta-sts` record for `text`: it changes whenever the policy does.
fn policy_id(text: &str) -> String {
    hex::encode(&sha2::Sha256::digest(text.as_bytes())[..10])
}

#[utoipa::path(get, path = "/.well-known/mta-sts.txt", tag = "published",
    operation_id = "get_published_mta_sts_policy",
    responses((status = 200, content_type = "text/plain", body = String, description = "The MTA-STS policy, for `Host: mta-sts.<relay domain>`"),
        (status = 404, body = Problem, description = "No policy is published, or the host is not mta-sts. and a relay domain")))]
pub async fn mta_sts_policy(
    State(c): State<Arc<Control>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    // `host:port`, or `[v6]:port` (never an mta-sts name).
    let name = host.rsplit_once(':').map_or(host, |(n, _)| n);
    let policy = c.compiled().await?;
    let text = policy.settings.published_mta_sts.text();
    Ok(match (name.strip_prefix("mta-sts."), text) {
        (Some(domain), Some(text)) if is_relay_domain(&policy, domain) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            text,
        )
            .into_response(),
        _ => ApiError::not_found("no MTA-STS policy is published for this host").into_response(),
    })
}

/// What to publish in DNS for one relay domain.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublishedDomain {
    pub domain: String,
    /// The host name senders fetch the policy from (its address: the control plane's).
    pub policy_host: String,
    /// `_mta-sts.<domain>`.
    pub txt_name: String,
    /// `v=STSv1; id=...`, the id following the policy's content.
    pub txt_record: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PublishedMtaSts {
    /// The policy file as served; null when none is published.
    pub policy: Option<String>,
    /// The relay domains it is served for (subdomain entries are not listed).
    pub domains: Vec<PublishedDomain>,
}

#[utoipa::path(get, path = "/v1/published/mta-sts", tag = "published", operation_id = "get_published_mta_sts",
    security(("bearer" = [])),
    responses((status = 200, body = PublishedMtaSts, description = "The served policy and the DNS records to publish with it")))]
pub async fn published_mta_sts(
    State(c): State<Arc<Control>>,
    _a: Actor,
) -> Result<Json<PublishedMtaSts>, ApiError> {
    let state = c.read();
    let policy = state.settings.published_mta_sts.text();
    let domains = match &policy {
        None => Vec::new(),
        Some(text) => state
            .relay
            .domains
            .iter()
            .filter(|r| !r.domain.starts_with('.'))
            .map(|r| PublishedDomain {
                domain: r.domain.clone(),
                policy_host: format!("mta-sts.{}", r.domain),
                txt_name: format!("_mta-sts.{}", r.domain),
                txt_record: format!("v=STSv1; id={};", policy_id(text)),
            })
            .collect(),
    };
    Ok(Json(PublishedMtaSts { policy, domains }))
}
