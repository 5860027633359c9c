//! An SMTP sink for relay benchmarks (Postfix's smtp-sink reports no delays): accepts every
//! message (PIPELINING, 8BITMIME, and STARTTLS with a throwaway certificate when `tls` is
//! given), and after `seconds` prints how many messages arrived, the rate, and p50/p99 of the
//! delay from `X-Load-Sent:` (microseconds since the epoch, written by smtp-load when it sent
//! the final dot) to arrival. Messages without that header (Postfix's smtp-source sends its own)
//! are counted, not timed.
//! Usage: `smtp-sink <addr> <seconds> [tls]`

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

fn micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Every message that arrived, and the delays of those that carried `X-Load-Sent:`.
#[derive(Default)]
struct Arrivals {
    count: std::sync::atomic::AtomicU64,
    delays: Mutex<Vec<u64>>,
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    tls: bool,
    arrivals: &Arrivals,
) -> std::io::Result<bool> {
    let mut line = String::new();
    loop {
        line.clear();
        if io.read_line(&mut line).await? == 0 {
            return Ok(false);
        }
        let upper = line.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            if tls {
                b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 STARTTLS\r\n"
            } else {
                b"250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
            }
        } else if upper.starts_with("STARTTLS") {
            io.get_mut().write_all(b"220 2.0.0 go ahead\r\n").await?;
            io.get_mut().flush().await?;
            return Ok(true);
        } else if upper.starts_with("DATA") {
            io.get_mut().write_all(b"354 go ahead\r\n").await?;
            io.get_mut().flush().await?;
            let mut sent = None;
            loop {
                line.clear();
                if io.read_line(&mut line).await? == 0 {
                    return Ok(false);
                }
                if line == ".\r\n" {
                    break;
                }
                if let Some(v) = line.strip_prefix("X-Load-Sent: ") {
                    sent = v.trim().parse::<u64>().ok();
                }
            }
            arrivals
                .count
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(sent) = sent {
                arrivals
                    .delays
                    .lock()
                    .unwrap()
                    .push(micros().saturating_sub(sent));
            }
            b"250 2.0.0 Ok: queued\r\n"
        } else if upper.starts_with("QUIT") {
            io.get_mut().write_all(b"221 2.0.0 Bye\r\n").await?;
            io.get_mut().flush().await?;
            return Ok(false);
        } else {
            b"250 2.0.0 Ok\r\n"
        };
        io.get_mut().write_all(reply).await?;
        io.get_mut().flush().await?;
    }
}

#[tokio::main]
async fn main() {
    postern_tls::install_crypto_provider();
    let args: Vec<String> = std::env::args().collect();
    let addr = args
        .get(1)
        .expect("usage: smtp-sink <addr> <seconds> [tls]")
        .clone();
    let seconds: u64 = args[2].parse().unwrap();
    let tls = args.get(3).map(String::as_str) == Some("tls");
    let acceptor = tls.then(|| {
        let ca = postern_tls::pki::Ca::new("sink CA").unwrap();
        let cert = ca.server(&["localhost", "127.0.0.1"]).unwrap();
        let config = postern_tls::server_config(&cert.cert_pem, &cert.key_pem).unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let listener = TcpListener::bind(&addr).await.unwrap();
    let arrivals: Arc<Arrivals> = Arc::default();
    let started = Instant::now();
    let accept = {
        let arrivals = arrivals.clone();
        async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                let (arrivals, acceptor) = (arrivals.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let mut io = BufReader::new(tcp);
                    let _ = io.get_mut().write_all(b"220 sink ESMTP\r\n").await;
                    if let Ok(true) = session(&mut io, acceptor.is_some(), &arrivals).await
                        && let Some(acceptor) = acceptor
                        && let Ok(stream) = acceptor.accept(io.into_inner()).await
                    {
                        let mut io = BufReader::new(stream);
                        let _ = session(&mut io, false, &arrivals).await;
                    }
                });
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(seconds), accept).await;
    let mut d = arrivals.delays.lock().unwrap().clone();
    let count = arrivals.count.load(std::sync::atomic::Ordering::Relaxed);
    d.sort();
    let pick = |p: f64| {
        d.get(((d.len().max(1) - 1) as f64 * p).round() as usize)
            .map_or(0.0, |v| *v as f64 / 1000.0)
    };
    println!(
        "sink {addr}: {count} messages in {:.1} s ({:.0}/s); dot -> arrival p50 {:.1} ms p99 {:.1} ms ({} timed)",
        started.elapsed().as_secs_f64(),
        count as f64 / started.elapsed().as_secs_f64(),
        pick(0.5),
        pick(0.99),
        d.len()
    );
}
