//! Postern's HTTP listeners: the control plane's REST API (HTTPS, or plain in `postern dev`)
//! and the worker's health endpoints. Each has the limits a listener facing the network needs:
//! - at most `max_connections` open at once; the excess waits in the kernel's backlog, holding
//!   nothing of ours until one closes;
//! - the TLS handshake and the first request byte within `first_byte`;
//! - a request's headers within `header_read` (hyper's timer: slowloris);
//! - no byte either way for `idle` closes the connection (keep-alive and HTTP/2 included);
//! - and, for a listener anyone may reach (the control plane's public listener): at most
//!   `per_source` connections from one address (the rest are closed at once), a whole
//!   connection ends after `lifetime` however busy it is (a trickle of bytes cannot hold it),
//!   and at most `h2_streams` HTTP/2 streams at once on a connection.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_rustls::rustls::ServerConfig;
use tower::ServiceExt;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    /// Connections at once from one source address (IPv6 by /64); 0 for no limit.
    pub per_source: usize,
    pub first_byte: Duration,
    pub header_read: Duration,
    pub idle: Duration,
    /// The longest a connection lives, whatever it does.
    pub lifetime: Option<Duration>,
    /// HTTP/2 streams at once on one connection.
    pub h2_streams: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 1024,
            per_source: 0,
            first_byte: Duration::from_secs(10),
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            lifetime: None,
            h2_streams: 200,
        }
    }
}

/// The address a per-source limit counts by: an IPv6 client controls its whole /64.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// Open connections per source, for `Limits::per_source`.
#[derive(Default)]
struct Sources(std::sync::Mutex<HashMap<IpAddr, usize>>);

/// One connection counted against its source until dropped.
struct SourceSlot {
    sources: Arc<Sources>,
    key: IpAddr,
}

impl Sources {
    fn take(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<SourceSlot> {
        let key = source_key(ip);
        let mut open = self.0.lock().expect("sources lock");
        let n = open.entry(key).or_default();
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            sources: self.clone(),
            key,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.sources.0.lock().expect("sources lock");
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `shutdown` completes.
/// Connections still open then are dropped.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<Arc<ServerConfig>>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let sources = Arc::new(Sources::default());
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => return Ok(()),
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, typically: back off rather than spin.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let slot = match limits.per_source {
            0 => None,
            limit => match sources.take(peer.ip(), limit) {
                Some(slot) => Some(slot),
                None => {
                    // Closed at once: a source over its share holds nothing of ours.
                    tracing::debug!(%peer, "HTTP connection refused: too many from this source");
                    continue;
                }
            },
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let _held = (permit, slot);
            let io = Watched::new(tcp, limits.first_byte, limits.idle);
            let served = async {
                match acceptor {
                    None => connection(io, app, peer, &limits).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(limits.first_byte, acceptor.accept(io)).await {
                            Ok(Ok(stream)) => connection(stream, app, peer, &limits).await,
                            Ok(Err(e)) => Err(e.into()),
                            Err(_) => Err("TLS handshake timed out".into()),
                        }
                    }
                }
            };
            let result = match limits.lifetime {
                None => served.await,
                Some(lifetime) => tokio::time::timeout(lifetime, served)
                    .await
                    .unwrap_or_else(|_| Err("connection lifetime over".into())),
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "HTTP connection ended");
            }
        });
    }
}

/// Serves one connection; handlers can read the peer as `ConnectInfo<SocketAddr>`.
async fn connection<I>(
    io: I,
    app: axum::Router,
    peer: std::net::SocketAddr,
    limits: &Limits,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_streams)
        .max_header_list_size(64 * 1024);
    builder
        .serve_connection(
            TokioIo::new(io),
            TowerToHyperService::new(app.map_request(
                move |mut request: axum::http::Request<_>| {
                    request
                        .extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    request
                },
            )),
        )
        .await
}

/// A TCP stream whose reads and writes fail with `TimedOut` once no byte has moved either way for `idle`
/// (`first_byte` before the first byte arrives), so a silent or abandoned connection ends even
/// where hyper itself has no timer (protocol detection, HTTP/2, keep-alive).
struct Watched {
    tcp: TcpStream,
    deadline: Pin<Box<Sleep>>,
    idle: Duration,
}

impl Watched {
    fn new(tcp: TcpStream, first_byte: Duration, idle: Duration) -> Watched {
        Watched {
            tcp,
            deadline: Box::pin(tokio::time::sleep(first_byte)),
            idle,
        }
    }

    fn moved(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle);
    }

    /// Pending until the deadline passes, then the error that ends the connection.
    fn expired<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        ready!(self.deadline.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "HTTP connection idle",
        )))
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.tcp).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.expired(cx),
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.tcp).poll_write(cx, buf) {
            Poll::Ready(written) => {
                if matches!(written, Ok(n) if n > 0) {
                    self.moved();
                }
                Poll::Ready(written)
            }
            // A client that stops reading what it asked for.
            Poll::Pending => self.expired(cx),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn started(limits: Limits) -> (String, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, app, None, limits, async move {
            let _ = stopped.await;
        }));
        (addr, stop)
    }

    fn short() -> Limits {
        Limits {
            max_connections: 4,
            first_byte: Duration::from_millis(300),
            header_read: Duration::from_millis(300),
            idle: Duration::from_millis(300),
            ..Limits::default()
        }
    }

    /// Reads until the server closes the connection (within a generous deadline); what it sent.
    async fn until_closed(tcp: &mut TcpStream) -> String {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), async {
            let mut buf = [0u8; 1024];
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await
        .expect("the server never closed the connection");
        String::from_utf8_lossy(&got).into_owned()
    }

    async fn get(addr: &str) -> String {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        until_closed(&mut tcp).await
    }

    #[tokio::test]
    async fn silent_trickling_and_idle_connections_are_closed() {
        let (addr, _stop) = started(short()).await;
        let mut silent = TcpStream::connect(&addr).await.unwrap();
        assert_eq!(until_closed(&mut silent).await, "");
        // Headers one byte at a time, each well within the idle limit: the header deadline ends it.
        let mut trickle = TcpStream::connect(&addr).await.unwrap();
        let trickled = tokio::spawn(async move {
            for b in b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: "
                .iter()
                .chain([b'a'; 10_000].iter())
            {
                if trickle.write_all(&[*b]).await.is_err() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        });
        assert!(
            trickled.await.unwrap(),
            "a trickled header was never cut off"
        );
        // Keep-alive after one answer, then nothing: closed.
        let mut idle = TcpStream::connect(&addr).await.unwrap();
        idle.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let answer = until_closed(&mut idle).await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn connections_over_the_cap_wait_and_are_then_served() {
        let limits = Limits {
            first_byte: Duration::from_secs(1),
            ..short()
        };
        let (addr, _stop) = started(limits).await;
        let mut silent = Vec::new();
        for _ in 0..limits.max_connections * 4 {
            silent.push(TcpStream::connect(&addr).await.unwrap());
        }
        let answer = get(&addr).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        for tcp in &mut silent {
            assert_eq!(until_closed(tcp).await, "");
        }
    }

    #[tokio::test]
    async fn one_source_gets_its_share_and_a_trickle_ends_at_the_lifetime() {
        let limits = Limits {
            max_connections: 16,
            per_source: 2,
            first_byte: Duration::from_secs(5),
            header_read: Duration::from_secs(5),
            idle: Duration::from_secs(5),
            lifetime: Some(Duration::from_millis(500)),
            ..Limits::default()
        };
        let (addr, _stop) = started(limits).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(TcpStream::connect(&addr).await.unwrap());
        }
        // The third from the same address is closed at once, unanswered.
        let mut third = TcpStream::connect(&addr).await.unwrap();
        third
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .ok();
        assert_eq!(until_closed(&mut third).await, "");
        // A body trickled one byte at a time, well inside the idle limit, ends at the lifetime.
        let mut trickle = held.pop().unwrap();
        trickle
            .write_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n")
            .await
            .unwrap();
        let cut = tokio::spawn(async move {
            for _ in 0..100_000 {
                if trickle.write_all(b"a").await.is_err() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            false
        });
        assert!(cut.await.unwrap(), "the trickle was never cut off");
        // Its slot is free again.
        drop(held);
        let answer = get(&addr).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    #[test]
    fn an_ipv6_source_is_its_64() {
        let a: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(source_key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
