//! The SMTP listener. Until the SMTP engine (issue 4) lands it answers only what this issue
//! requires: `421 4.3.2 Service not available: no policy` while the worker has never had a
//! policy, otherwise the greeting, `QUIT`, and `502` for everything else.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::policy::PolicyStore;

pub const NO_POLICY: &str = "421 4.3.2 Service not available: no policy\r\n";

pub async fn serve(
    listener: TcpListener,
    policy: Arc<PolicyStore>,
    hostname: String,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((stream, _)) => {
                policy.metrics.smtp_connections.fetch_add(1, Relaxed);
                tokio::spawn(session(stream, policy.clone(), hostname.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "SMTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn session(
    mut stream: TcpStream,
    policy: Arc<PolicyStore>,
    hostname: String,
) -> std::io::Result<()> {
    // The session pins the policy current when it connected.
    let Some(_policy) = policy.current() else {
        policy.metrics.smtp_refused_no_policy.fetch_add(1, Relaxed);
        stream.write_all(NO_POLICY.as_bytes()).await?;
        return stream.shutdown().await;
    };
    let (read, mut write) = stream.split();
    write
        .write_all(format!("220 {hostname} ESMTP Postern\r\n").as_bytes())
        .await?;
    let mut lines = BufReader::new(read.take(64 * 1024)).lines();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(300), lines.next_line()).await
    {
        if line.trim().eq_ignore_ascii_case("QUIT") {
            write.write_all(b"221 2.0.0 Bye\r\n").await?;
            break;
        }
        write
            .write_all(b"502 5.5.1 Error: command not implemented\r\n")
            .await?;
    }
    Ok(())
}
