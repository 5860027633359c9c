//! Postern's control plane: policy, settings, versions, tokens and the audit log in sled, tracking
//! in SQL (`tracking`),
//! served over REST (docs/src/interfaces.md). Workers get their policy from here (gRPC, later
//! issues).

#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod change;
pub mod commands;
pub mod control;
pub mod error;
mod flusher;
pub mod grpc;
mod incoming;
pub mod metrics;
pub mod reports;
pub mod state;
pub mod store;
pub mod tracking;
pub mod workers;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use control::Control;

/// Serves the REST API over HTTPS on `listener` until `shutdown` completes, with the limits
/// of `postern_http`. Connections still open then are dropped; a write they started still
/// completes (it runs in its own task).
pub async fn run_https(
    listener: TcpListener,
    control: Arc<Control>,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = postern_http::Limits::default();
    postern_http::serve(listener, api::router(control), Some(tls), limits, shutdown).await
}

/// Serves the public protocol endpoints (`api::public`) on `listener`, over HTTPS when `tls`
/// is given, with the public listener's own limits, until `shutdown` completes.
pub async fn run_public(
    listener: TcpListener,
    control: Arc<Control>,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = api::public::router(control);
    postern_http::serve(listener, router, tls, api::public::LIMITS, shutdown).await
}

/// Serves the REST API in plain HTTP on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    control: Arc<Control>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = postern_http::Limits::default();
    postern_http::serve(listener, api::router(control), None, limits, shutdown).await
}
