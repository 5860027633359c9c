//! Request extractors whose rejections are problem+json with a pointer to the offending field,
//! and the ETag / If-Match helpers.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, ETAG, IF_MATCH};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::ApiError;
use crate::auth::Actor;
use crate::control::Control;

/// A JSON body. Anything that is not JSON or not the schema is a 400 naming the field.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            // Keep the status (413 for a body over the limit), in problem+json.
            let mut error = ApiError::bad_request("", e.body_text());
            error.status = e.status();
            error
        })?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(de)
            .map(ApiJson)
            .map_err(|e| {
                let pointer = json_pointer(e.path());
                let inner = e.into_inner();
                let detail = if inner.is_syntax() || inner.is_eof() {
                    format!("the body is not valid JSON: {inner}")
                } else {
                    inner.to_string()
                };
                ApiError::bad_request(pointer, detail)
            })
    }
}

/// An optional JSON body: none at all is `None`.
impl<S: Send + Sync, T: DeserializeOwned> axum::extract::OptionalFromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, ApiError> {
        let (parts, body) = req.into_parts();
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(|e| {
                let mut error = ApiError::bad_request("", e.body_text());
                error.status = e.status();
                error
            })?;
        if bytes.is_empty() {
            return Ok(None);
        }
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        <Self as FromRequest<S>>::from_request(req, state)
            .await
            .map(Some)
    }
}

fn json_pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut pointer = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => pointer.push_str(&format!("/{index}")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                pointer.push('/');
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            Segment::Unknown => {}
        }
    }
    pointer
}

/// Query parameters; a malformed one is a 400 naming it.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| ApiError::bad_request(e.path().to_string(), e.into_inner().to_string()))
    }
}

/// A strong ETag over a resource's JSON.
pub fn etag<T: Serialize>(value: &T) -> String {
    let json = serde_json::to_vec(value).expect("our types serialise");
    format!("\"{}\"", &hex::encode(Sha256::digest(&json))[..20])
}

/// The request's `If-Match`, if any.
pub struct IfMatch(Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(IfMatch(
            parts
                .headers
                .get(IF_MATCH)
                .map(|v| v.to_str().unwrap_or("").to_string()),
        ))
    }
}

impl IfMatch {
    /// 412 unless the header is absent, `*`, or lists the current ETag.
    pub fn check(&self, current: &str) -> Result<(), ApiError> {
        match &self.0 {
            None => Ok(()),
            Some(h)
                if h.split(',')
                    .map(str::trim)
                    .any(|t| t == "*" || t == current) =>
            {
                Ok(())
            }
            Some(_) => Err(ApiError::precondition_failed()),
        }
    }
}

/// A JSON response carrying the ETag of `tagged` (the resource, which may differ from the body).
pub fn tagged<T: Serialize, B: Serialize>(status: StatusCode, tagged: &T, body: &B) -> Response {
    with_etag(status, &etag(tagged), body)
}

/// A JSON response with an ETag computed beforehand.
pub fn with_etag<B: Serialize>(status: StatusCode, etag: &str, body: &B) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(etag) {
        response.headers_mut().insert(ETAG, v);
    }
    response
}

/// The token's actor; 401 without a valid bearer token.
impl FromRequestParts<Arc<Control>> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        control: &Arc<Control>,
    ) -> Result<Self, ApiError> {
        let secret = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or_else(|| ApiError::unauthorized("a bearer token is required"))?;
        control
            .authenticate(secret)
            .ok_or_else(|| ApiError::unauthorized("the token is not valid"))
    }
}
