//! The gRPC listener's mutual-TLS connections. Each handshake runs in its own task with a
//! deadline, so a client that stalls mid-handshake holds up no one else; the server
//! certificate is whatever the resolver gives at that handshake (a `ReloadingCert` follows its
//! files, so a renewal is served to the next worker that connects and streams in flight keep
//! theirs).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes waiting to be served; beyond this, accepting waits.
const BACKLOG: usize = 64;

/// TLS connections accepted on `listener`, as tonic's `serve_with_incoming` takes them. The
/// accepting task ends when the stream is dropped.
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<tokio_rustls::rustls::ServerConfig>,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(BACKLOG);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors, typically: back off rather than spin.
                        tracing::warn!(error = %e, "gRPC accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::info!(%peer, error = %e, "gRPC TLS handshake failed"),
                    Err(_) => tracing::info!(%peer, "gRPC TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
