//! MTA-STS for the operator's own domains (RFC 8461 3.2): the policy file served at
//! `/.well-known/mta-sts.txt` for `Host: mta-sts.<relay domain>`, and what to publish in DNS.
//! Point `mta-sts.<domain>` at the control plane's HTTPS listener (a certificate for that name
//! is the operator's: RFC 8461 requires one that web PKI validates).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::uri::Authority;
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use postern_policy::{CompiledPolicy, normalize_lookup_domain};
use serde::Serialize;
use sha2::Digest as _;
use utoipa::ToSchema;

use super::ApiError;
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

/// `GET /.well-known/mta-sts.txt` on the public listener: the policy for a request to
/// `mta-sts.<relay domain>` (200, `text/plain`), else 404. A protocol endpoint, outside the
/// OpenAPI document of the admin API, like `POST /tlsrpt`.
pub async fn mta_sts_policy(
    State(c): State<Arc<Control>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = request_host(&uri, &headers).unwrap_or_default();
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

/// The host name a request is for, lower case and without a port or a trailing dot: HTTP/2's
/// `:authority` (which hyper puts in the request URI; there is no `Host` header then), else
/// the `Host` header (docs/src/design.md traps).
pub fn request_host(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    let from_header = || {
        headers
            .get(header::HOST)?
            .to_str()
            .ok()?
            .parse::<Authority>()
            .ok()
    };
    let authority = uri.authority().cloned().or_else(from_header)?;
    let host = authority.host();
    Some(host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_comes_from_the_authority_then_the_host_header() {
        let mut headers = HeaderMap::new();
        let plain: Uri = "/.well-known/mta-sts.txt".parse().unwrap();
        assert_eq!(request_host(&plain, &headers), None);
        headers.insert(header::HOST, "MTA-STS.Ours.Test.:443".parse().unwrap());
        assert_eq!(
            request_host(&plain, &headers).as_deref(),
            Some("mta-sts.ours.test")
        );
        let h2: Uri = "https://mta-sts.other.test/.well-known/mta-sts.txt"
            .parse()
            .unwrap();
        assert_eq!(
            request_host(&h2, &headers).as_deref(),
            Some("mta-sts.other.test")
        );
        headers.insert(header::HOST, "[::1]:8443".parse().unwrap());
        assert_eq!(request_host(&plain, &headers).as_deref(), Some("[::1]"));
        headers.insert(header::HOST, "a b".parse().unwrap());
        assert_eq!(request_host(&plain, &headers), None);
    }
}
