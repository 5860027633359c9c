//! An HTTPS MTA-STS policy host for the tests (tests/mta_sts.rs and the interop lab).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the policy host answers for one `mta-sts.<domain>`: a status and a body (served as
/// text/plain, but for a status of 299, which stands for a 200 served as text/html).
pub type Routes = Arc<Mutex<HashMap<String, (u16, String)>>>;

/// HTTPS requests per Host header.
pub type Hits = Arc<Mutex<HashMap<String, usize>>>;

/// An MTA-STS policy host: HTTPS with `cert`, answering `GET /.well-known/mta-sts.txt` by Host
/// header from `Routes` (404 for anything else) and counting requests per host.
pub async fn policy_host(cert: (String, String)) -> (u16, Routes, Hits) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = postern_tls::server_config(&cert.0, &cert.1).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let routes: Routes = Arc::default();
    let hits: Hits = Arc::default();
    let (r, h) = (routes.clone(), hits.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, routes, hits) = (acceptor.clone(), r.clone(), h.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&request).to_ascii_lowercase();
                let host = request
                    .lines()
                    .find_map(|l| l.strip_prefix("host:"))
                    .map(|h| h.trim().split(':').next().unwrap().to_string())
                    .unwrap_or_default();
                let right_path = request.starts_with("get /.well-known/mta-sts.txt ");
                *hits.lock().unwrap().entry(host.clone()).or_default() += 1;
                let (status, body) = match routes.lock().unwrap().get(&host) {
                    Some(r) if right_path => r.clone(),
                    _ => (404, "not found".into()),
                };
                let (status, media) = match status {
                    299 => (200, "text/html"),
                    s => (s, "text/plain; charset=utf-8"),
                };
                let location = if (300..400).contains(&status) {
                    format!("Location: https://{host}/elsewhere\r\n")
                } else {
                    String::new()
                };
                let response = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: {media}\r\nContent-Length: {}\r\n{location}Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, routes, hits)
}
