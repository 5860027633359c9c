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
pub mod tracking;
pub mod workers;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use control::Control;

/// Serves the REST API over HTTPS on `listener` until `shutdown` completes. Connections still
/// open then are dropped; a write they started still completes (it runs in its own task).
pub async fn run_https(
    listener: TcpListener,
    control: Arc<Control>,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let app = api::router(control);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "REST accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            // A client that never finishes its handshake must not hold a task for ever.
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp))
                    .await;
            let Ok(Ok(stream)) = handshake else {
                tracing::debug!(%peer, "REST TLS handshake failed or timed out");
                return;
            };
            let service = TowerToHyperService::new(app);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

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
