//! The session's socket: plaintext, then TLS after STARTTLS, every write under a deadline.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub(super) enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// Only while the handshake has the stream.
    Gone,
}

impl Conn {
    pub(super) async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf).await,
            Conn::Tls(s) => s.read(buf).await,
            Conn::Gone => Ok(0),
        }
    }

    /// Writes and flushes; a client that stops reading is cut off after `limit`.
    pub(super) async fn write_all(&mut self, bytes: &[u8], limit: Duration) -> std::io::Result<()> {
        let write = async {
            match self {
                Conn::Plain(s) => write(s, bytes).await,
                Conn::Tls(s) => write(s.as_mut(), bytes).await,
                Conn::Gone => Ok(()),
            }
        };
        tokio::time::timeout(limit, write).await.map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "the client stopped reading")
        })?
    }

    pub(super) async fn shutdown(&mut self, limit: Duration) {
        let shutdown = async {
            match self {
                Conn::Plain(s) => s.shutdown().await,
                Conn::Tls(s) => s.shutdown().await,
                Conn::Gone => Ok(()),
            }
        };
        let _ = tokio::time::timeout(limit, shutdown).await;
    }
}

async fn write<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    s.write_all(bytes).await?;
    s.flush().await
}
