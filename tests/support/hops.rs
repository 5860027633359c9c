//! Next hops that misbehave on purpose, for the delivery deadlines: one that accepts and never
//! speaks, one that speaks one byte per second, one that answers `354` and stops reading.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

/// Connections a hostile hop holds open now, and how many it accepted.
#[derive(Default)]
pub struct Held {
    pub open: AtomicUsize,
    pub accepted: AtomicUsize,
}

impl Held {
    pub fn open(&self) -> usize {
        self.open.load(SeqCst)
    }
}

/// Counts a connection as open for as long as it lives.
struct Holding(Arc<Held>);

impl Drop for Holding {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, SeqCst);
    }
}

/// Listens on loopback and runs `conversation` for each connection, counted in `Held` while
/// it runs. The receive buffer is tiny, so that a peer that stops reading stalls a writer soon.
async fn serve<F, Fut>(conversation: F) -> (String, Arc<Held>)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1024).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let held: Arc<Held> = Arc::default();
    let counts = held.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counts.accepted.fetch_add(1, SeqCst);
            counts.open.fetch_add(1, SeqCst);
            let holding = Holding(counts.clone());
            let talk = conversation(tcp);
            tokio::spawn(async move {
                talk.await;
                drop(holding);
            });
        }
    });
    (addr, held)
}

/// Accepts TCP and never says a word; holds each connection until the client closes it.
pub async fn silent() -> (String, Arc<Held>) {
    serve(|mut tcp| async move {
        let mut buf = [0u8; 1024];
        while tcp.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    })
    .await
}

/// Sends its greeting one byte per second, so that no single read ever waits long.
pub async fn trickle() -> (String, Arc<Held>) {
    serve(|mut tcp| async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        for b in b"220 trickle.test ESMTP\r\n".repeat(100) {
            tick.tick().await;
            if tcp.write_all(&[b]).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// Speaks SMTP up to `354`, then never reads again: the message body fills the socket.
pub async fn stalling() -> (String, Arc<Held>) {
    serve(|tcp| async move {
        let mut io = BufReader::new(tcp);
        let _ = io.get_mut().write_all(b"220 stall.test ESMTP\r\n").await;
        loop {
            let mut line = String::new();
            if io.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let upper = line.to_ascii_uppercase();
            let reply: &[u8] = if upper.starts_with("EHLO") {
                b"250-stall.test\r\n250 8BITMIME\r\n"
            } else if upper.starts_with("DATA") {
                b"354 go ahead\r\n"
            } else {
                b"250 2.0.0 Ok\r\n"
            };
            if io.get_mut().write_all(reply).await.is_err() {
                return;
            }
            if upper.starts_with("DATA") {
                // Holds the connection and never reads from it again.
                std::future::pending::<()>().await
            }
        }
    })
    .await
}
