//! `/healthz`, `/readyz` and `/metrics`: no token, for load balancers and Prometheus.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use crate::control::Control;

#[utoipa::path(get, path = "/healthz", tag = "health", operation_id = "healthz",
    responses((status = 200, description = "The process is alive", body = String)))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

#[utoipa::path(get, path = "/readyz", tag = "health", operation_id = "readyz",
    responses((status = 200, description = "The store is open and answering", body = String),
        (status = 503, description = "Not ready", body = String)))]
pub async fn readyz(State(c): State<Arc<Control>>) -> impl IntoResponse {
    if let Err(e) = c.healthy() {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{}\n", e));
    }
    // Workers keep their events while tracking is down: not ready, but nothing is lost.
    if let Some(why) = c.tracking.down() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("tracking unavailable ({}): {why}\n", c.tracking.describe()),
        );
    }
    match c.store().versions(None, 1) {
        Ok(_) => (StatusCode::OK, "ready\n".to_string()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: {e}\n"),
        ),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "health", operation_id = "metrics",
    responses((status = 200, description = "Prometheus text exposition format", body = String)))]
pub async fn metrics(State(c): State<Arc<Control>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        c.metrics.render(c.gauges()),
    )
}
