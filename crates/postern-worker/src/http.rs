//! The worker's `/healthz`, `/readyz` (ready = holds a policy and the spool is writable),
//! `/metrics` and `/drain`, on `--http-listen`. A drained worker is not ready.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;

use crate::commands::Commands;
use crate::metrics::QueueState;
use crate::outbox::Outbox;
use crate::policy::PolicyStore;

#[derive(Clone)]
struct Ctx {
    policy: Arc<PolicyStore>,
    spool: PathBuf,
    commands: Arc<Commands>,
    outbox: Arc<Outbox>,
}

pub fn router(
    policy: Arc<PolicyStore>,
    spool: PathBuf,
    commands: Arc<Commands>,
    outbox: Arc<Outbox>,
) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/drain", get(drain_status).post(drain))
        .with_state(Ctx {
            policy,
            spool,
            commands,
            outbox,
        })
}

async fn readyz(State(ctx): State<Ctx>) -> impl IntoResponse {
    // A drained worker takes no new mail: load balancers must stop sending it any.
    if *ctx.commands.draining.borrow() {
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
    let m = &ctx.policy.metrics;
    m.policy_version.set(ctx.policy.version() as i64);
    let (active, deferred) = ctx.commands.queue.counts();
    for (state, n) in [("active", active), ("deferred", deferred)] {
        m.queue.get_or_create(&QueueState { state }).set(n as i64);
    }
    m.outbox_bytes.set(ctx.outbox.bytes() as i64);
    m.outbox_lag_seconds.set(ctx.outbox.lag_s());
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        m.render(),
    )
}

/// What `postern drain` waits on.
#[derive(Serialize)]
struct DrainStatus {
    draining: bool,
    sessions: i64,
    queued: usize,
}

async fn drain_status(State(ctx): State<Ctx>) -> Json<DrainStatus> {
    Json(DrainStatus {
        draining: *ctx.commands.draining.borrow(),
        sessions: ctx.policy.metrics.sessions_active.get(),
        queued: ctx.commands.queue.queued(),
    })
}

/// Drains this worker, as the control plane's drain command does: for a Kubernetes `preStop`
/// (`postern drain`). The listener serves `/metrics` to the network, so only a process on
/// the worker's own host may drain it.
async fn drain(
    State(ctx): State<Ctx>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> axum::response::Response {
    if !peer.ip().to_canonical().is_loopback() {
        return (StatusCode::FORBIDDEN, "drain only from the worker's host\n").into_response();
    }
    match ctx.commands.drain().await {
        Ok(_) => drain_status(State(ctx)).await.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
