//! `postern drain`: asks the worker on this host to drain (its `POST /drain`, taken only from
//! loopback) and waits until its queue is empty and its sessions have ended.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::Fatal;
use crate::cli::DrainArgs;

/// 0 once drained, 1 when the timeout passed first, 2 on an error.
pub async fn run(args: DrainArgs) -> ExitCode {
    match drain(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => crate::exit(Err(e)),
    }
}

#[derive(serde::Deserialize)]
struct Status {
    sessions: i64,
    queued: usize,
}

/// Whether the worker drained within the timeout.
async fn drain(args: DrainArgs) -> Result<bool, Fatal> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| ("HTTP client", e))?;
    let url = format!("{}/drain", args.http.trim_end_matches('/'));
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut status: Status = fetch(http.post(&url)).await?;
    eprintln!(
        "postern: draining: {} messages queued, {} sessions",
        status.queued, status.sessions
    );
    let mut said = (status.queued, status.sessions);
    while status.queued > 0 || status.sessions > 0 {
        if Instant::now() >= deadline {
            eprintln!(
                "postern: drain timed out after {} s: {} messages still queued (kept in the \
                 spool), {} sessions",
                args.timeout, status.queued, status.sessions
            );
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        status = fetch(http.get(&url)).await?;
        if said != (status.queued, status.sessions) {
            said = (status.queued, status.sessions);
            eprintln!(
                "postern: draining: {} messages queued, {} sessions",
                status.queued, status.sessions
            );
        }
    }
    eprintln!("postern: drained: queue empty");
    Ok(true)
}

async fn fetch(request: reqwest::RequestBuilder) -> Result<Status, Fatal> {
    let response = request.send().await.map_err(|e| ("drain", e))?;
    if !response.status().is_success() {
        let code = response.status();
        let text = response.text().await.unwrap_or_default();
        return Err(Fatal(format!("drain: {code}: {}", text.trim())));
    }
    response.json().await.map_err(|e| Fatal::from(("drain", e)))
}
