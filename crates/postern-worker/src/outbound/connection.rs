//! An open SMTP session with a next hop: the socket (plain, then TLS), the sans-IO client
//! driving it, and what it was opened under. Delivery (`deliver.rs`) opens and drives one; the
//! pool (`pool.rs`) keeps one between messages.

use std::net::SocketAddr;
use std::time::Duration;

use postern_policy::{Certificate, CipherStrength, DeliverySettings, Level};
use postern_smtp::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

/// Where and how to deliver.
#[derive(Debug, Clone)]
pub struct Target {
    /// The reference name: the MX host, the configured next-hop host, or the IP of an
    /// `[ip]:port` next hop. Also the SNI.
    pub host: String,
    pub addr: SocketAddr,
    pub level: Level,
    pub strength: CipherStrength,
}

/// The deadline of each step (`settings.delivery`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub connect: Duration,
    pub greeting: Duration,
    pub command: Duration,
    /// Each write of the message body must make progress within this.
    pub data: Duration,
    pub session: Duration,
}

impl Deadlines {
    pub fn of(d: &DeliverySettings) -> Deadlines {
        let s = |v: u32| Duration::from_secs(v.into());
        Deadlines {
            connect: s(d.connect_timeout_s),
            greeting: s(d.greeting_timeout_s),
            command: s(d.command_timeout_s),
            data: s(d.data_timeout_s),
            session: s(d.session_timeout_s),
        }
    }

    /// Every step (and the session) within `each`: for tests and tools.
    pub fn all(each: Duration) -> Deadlines {
        Deadlines {
            connect: each,
            greeting: each,
            command: each,
            data: each,
            session: each * 10,
        }
    }
}

/// How the attempt travelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    pub version: &'static str,
    pub cipher: &'static str,
    pub key_exchange: &'static str,
    pub certificate: Certificate,
}

pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Gone,
}

impl Stream {
    pub(super) fn local_ip(&self) -> Option<String> {
        let tcp = match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
            Stream::Gone => return None,
        };
        tcp.local_addr().ok().map(|a| a.ip().to_string())
    }

    pub(super) async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
            Stream::Gone => Ok(0),
        }
    }

    pub(super) async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Stream::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Stream::Gone => Ok(()),
        }
    }
}

/// An open session with a next hop, between transactions or in one.
pub struct Connection {
    pub(super) stream: Stream,
    pub(super) client: Client,
    pub(super) tls: Option<TlsInfo>,
    /// When the session was opened (the reuse time limit counts from here).
    pub(super) born: Instant,
    /// The whole session ends by then, whatever its progress.
    pub(super) session_end: Instant,
    /// Transactions carried so far.
    pub(super) uses: u32,
    /// The next hop refused RSET on reuse.
    pub(super) reset_refused: bool,
}

impl Connection {
    /// Ends the session: QUIT, in the background and within a few seconds, so that a next hop
    /// that stopped reading never holds a delivery slot.
    pub fn close(mut self) {
        self.client.close();
        let quit = self.client.take_output();
        tokio::spawn(async move {
            let _ = timeout(Duration::from_secs(5), self.stream.write(&quit)).await;
        });
    }
}

#[derive(Debug, thiserror::Error)]
pub(super) enum WriteError {
    #[error("{0}")]
    Io(std::io::Error),
    #[error("timed out")]
    TimedOut,
}

/// Writes `bytes` in pieces, each of which must be taken within `per_write` (a next hop that
/// stops reading is given up on, one that reads slowly is not), and all before `end`.
pub(super) async fn write(
    stream: &mut Stream,
    bytes: &[u8],
    per_write: Duration,
    end: Instant,
) -> Result<(), WriteError> {
    for piece in bytes.chunks(64 * 1024) {
        let deadline = (Instant::now() + per_write).min(end);
        match timeout_at(deadline, stream.write(piece)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(WriteError::Io(e)),
            Err(_) => return Err(WriteError::TimedOut),
        }
    }
    Ok(())
}
