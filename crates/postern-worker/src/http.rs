//! The worker's `/healthz`, `/readyz` (ready = holds a policy and the spool is writable) and
//! `/metrics`, on `--http-listen`. A drained worker is not ready.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::watch;

use crate::policy::PolicyStore;

#[derive(Clone)]
struct Ctx {
    policy: Arc<PolicyStore>,
    spool: PathBuf,
    draining: watch::Receiver<bool>,
}

pub fn router(policy: Arc<PolicyStore>, spool: PathBuf, draining: watch::Receiver<bool>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Ctx {
            policy,
            spool,
            draining,
        })
}

async fn readyz(State(ctx): State<Ctx>) -> impl IntoResponse {
    // A drained worker takes no new mail: load balancers must stop sending it any.
    if *ctx.draining.borrow() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: draining\n".to_string(),
        );
    }
    if ctx.policy.version() == 0 {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no policy yet\n".to_string(),
        );
    }
    // A name of its own per probe: concurrent probes must not remove each other's file.
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = ctx.spool.join(format!(".ready-probe-{n}"));
    let writable = tokio::task::spawn_blocking(move || {
        std::fs::write(&probe, b"ok")?;
        std::fs::remove_file(&probe)
    })
    .await;
    match writable {
        Ok(Ok(())) => (
            StatusCode::OK,
            format!("ready: policy version {}\n", ctx.policy.version()),
        ),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: spool not writable: {e}\n"),
        ),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")),
    }
}

async fn metrics(State(ctx): State<Ctx>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ctx.policy.metrics.render(ctx.policy.version()),
    )
}
