//! An SMTP load generator with STARTTLS (Postfix's smtp-source has none), to compare Postern's
//! inbound acceptance with Postfix's on the same machine in the same run.
//!
//! `smtp-load <addr> <sessions> <seconds> [tls]`: `sessions` concurrent clients, each sending
//! one 4 KiB message per connection (EHLO, [STARTTLS, EHLO,] MAIL, RCPT, DATA, QUIT) until the
//! time is up; prints messages per second and the p50/p99 time from the final dot to the 250.
//! `smtp-load <addr> idle <n> <pid>`: opens n sessions that say EHLO and then idle, and prints
//! the RSS of process `pid` before and after. `SMTP_LOAD_DEBUG=1` prints each TLS session's
//! phase timings (this is how a 40 ms stall from TLS 1.3 session tickets was found).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

async fn reply<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
) -> std::io::Result<String> {
    loop {
        let mut line = String::new();
        if io.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::other("closed"));
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(line);
        }
    }
}

async fn cmd<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    line: &str,
    expect: &str,
) -> std::io::Result<()> {
    io.get_mut().write_all(line.as_bytes()).await?;
    // A TLS stream holds written data until flushed.
    io.get_mut().flush().await?;
    let r = reply(io).await?;
    if r.starts_with(expect) {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("{line:?} got {r:?}")))
    }
}

async fn transaction<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    body: &str,
) -> std::io::Result<Duration> {
    cmd(io, "MAIL FROM:<load@sender.example>\r\n", "250").await?;
    cmd(io, "RCPT TO:<sink@rcpt.example>\r\n", "250").await?;
    cmd(io, "DATA\r\n", "354").await?;
    // When the message was handed over, for the sink's delay figure (smtp-sink).
    let sent = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    io.get_mut()
        .write_all(format!("X-Load-Sent: {sent}\r\n").as_bytes())
        .await?;
    io.get_mut().write_all(body.as_bytes()).await?;
    let t = Instant::now();
    cmd(io, ".\r\n", "250").await?;
    let took = t.elapsed();
    cmd(io, "QUIT\r\n", "221").await?;
    Ok(took)
}

async fn one(
    addr: &str,
    tls: Option<&tokio_rustls::TlsConnector>,
    body: &str,
) -> std::io::Result<Duration> {
    let tcp = TcpStream::connect(addr).await?;
    // Small commands after a large write must not wait for a delayed ACK (Nagle).
    tcp.set_nodelay(true)?;
    let mut io = BufReader::new(tcp);
    reply(&mut io).await?;
    cmd(&mut io, "EHLO load.example\r\n", "250").await?;
    match tls {
        None => transaction(&mut io, body).await,
        Some(connector) => {
            let t0 = Instant::now();
            cmd(&mut io, "STARTTLS\r\n", "220").await?;
            let t1 = Instant::now();
            let mut stream = connector
                .connect(ServerName::try_from("localhost").unwrap(), io.into_inner())
                .await?;
            stream.flush().await?;
            let t2 = Instant::now();
            let mut io = BufReader::new(stream);
            cmd(&mut io, "EHLO load.example\r\n", "250").await?;
            let t3 = Instant::now();
            let r = transaction(&mut io, body).await;
            if std::env::var_os("SMTP_LOAD_DEBUG").is_some() {
                eprintln!(
                    "starttls {:?} handshake {:?} ehlo {:?} rest {:?}",
                    t1 - t0,
                    t2 - t1,
                    t3 - t2,
                    t3.elapsed()
                );
            }
            r
        }
    }
}

fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    let addr = args
        .get(1)
        .expect("usage: smtp-load <addr> <sessions> <seconds> [tls] | <addr> idle <n> <pid>")
        .clone();
    if args.get(2).map(String::as_str) == Some("idle") {
        let n: usize = args[3].parse().unwrap();
        let pid = args[4].clone();
        let before = rss_kib(&pid);
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            let mut io = BufReader::new(TcpStream::connect(&addr).await.unwrap());
            reply(&mut io).await.unwrap();
            cmd(&mut io, "EHLO idle.example\r\n", "250").await.unwrap();
            held.push(io);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = rss_kib(&pid);
        println!(
            "{n} idle sessions: RSS {before} KiB -> {after} KiB ({:.1} KiB per session)",
            (after.saturating_sub(before)) as f64 / n as f64
        );
        return;
    }
    let sessions: usize = args[2].parse().unwrap();
    let seconds: u64 = args[3].parse().unwrap();
    let tls = (args.get(4).map(String::as_str) == Some("tls")).then(|| {
        // The benchmark measures the server, not certificate checking: accept any certificate.
        let verifier = postern_tls::servercert::AcceptAnyServerCert::new();
        let config = rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    });
    let line = "x".repeat(78) + "\r\n";
    let body =
        "Subject: load\r\nFrom: <load@sender.example>\r\n\r\n".to_string() + &line.repeat(51);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..sessions)
        .map(|_| {
            let (addr, tls, body) = (addr.clone(), tls.clone(), body.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (Vec::new(), 0usize);
                while Instant::now() < deadline {
                    match one(&addr, tls.as_ref(), &body).await {
                        Ok(t) => ok.push(t),
                        Err(_) => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut all, mut failed) = (Vec::new(), 0);
    for t in tasks {
        let (ok, f) = t.await.unwrap();
        all.extend(ok);
        failed += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let pick = |p: f64| {
        all.get(((all.len().max(1) - 1) as f64 * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "{addr} {}: {:.0} msgs/s ({} in {elapsed:.1} s, {failed} failed), dot -> 250 p50 {:.2} ms p99 {:.2} ms",
        if tls.is_some() {
            "STARTTLS"
        } else {
            "plaintext"
        },
        all.len() as f64 / elapsed,
        all.len(),
        pick(0.5),
        pick(0.99)
    );
}
