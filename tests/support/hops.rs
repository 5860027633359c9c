//! Next hops that misbehave on purpose, for the delivery deadlines: one that accepts and never
//! speaks, one that speaks one byte per second, one that answers `354` and stops reading.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket};

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

impl Holding {
    fn new(held: &Arc<Held>) -> Holding {
        held.accepted.fetch_add(1, SeqCst);
        held.open.fetch_add(1, SeqCst);
        Holding(held.clone())
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, SeqCst);
    }
}

async fn listen() -> (TcpListener, String) {
    // A tiny receive buffer, so that a peer that stops reading stalls a writer quickly.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1024).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    (listener, addr)
}

/// Accepts TCP and never says a word; holds each connection until the client closes it.
pub async fn silent() -> (String, Arc<Held>) {
    let (listener, addr) = listen().await;
    let held: Arc<Held> = Arc::default();
    let counts = held.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let holding = Holding::new(&counts);
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                // Reads (and ignores) until the client goes away.
                while tokio::io::AsyncReadExt::read(&mut tcp, &mut buf)
                    .await
                    .is_ok_and(|n| n > 0)
                {}
                drop(holding);
            });
        }
    });
    (addr, held)
}

/// Sends its greeting one byte per second, so that no single read ever waits long.
pub async fn trickle() -> (String, Arc<Held>) {
    let (listener, addr) = listen().await;
    let held: Arc<Held> = Arc::default();
    let counts = held.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let holding = Holding::new(&counts);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                for b in b"220 trickle.test ESMTP\r\n".repeat(100) {
                    tick.tick().await;
                    if tcp.write_all(&[b]).await.is_err() {
                        break;
                    }
                }
                drop(holding);
            });
        }
    });
    (addr, held)
}

/// Speaks SMTP up to `354`, then never reads again: the message body fills the socket.
pub async fn stalling() -> (String, Arc<Held>) {
    let (listener, addr) = listen().await;
    let held: Arc<Held> = Arc::default();
    let counts = held.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let holding = Holding::new(&counts);
            tokio::spawn(async move {
                let mut io = BufReader::new(tcp);
                let _ = io.get_mut().write_all(b"220 stall.test ESMTP\r\n").await;
                loop {
                    let mut line = String::new();
                    if io.read_line(&mut line).await.unwrap_or(0) == 0 {
                        break;
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
                        break;
                    }
                    if upper.starts_with("DATA") {
                        // Holds the connection and never reads from it again.
                        std::future::pending::<()>().await
                    }
                }
                drop(holding);
            });
        }
    });
    (addr, held)
}
