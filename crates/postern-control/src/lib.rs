//! Postern's control plane: policy, settings, versions, tokens and the audit log in sled,
//! served over REST (PRODUCT.md 6). Workers get their policy from here (gRPC, later issues).

#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod change;
pub mod control;
mod flusher;
pub mod grpc;
pub mod metrics;
pub mod state;
pub mod store;
pub mod workers;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use control::Control;

/// Serves the REST API on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    control: Arc<Control>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, api::router(control))
        .with_graceful_shutdown(shutdown)
        .await
}
