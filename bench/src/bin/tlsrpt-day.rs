//! Issue 23 point 7: a day of TLS-RPT sessions builds within bounded memory. Stores `sessions`
//! TlsSession events (default 1,000,000: a thousand domains of a thousand sessions each, every
//! session naming its domain's MTA-STS policy of 20 lines) through the control plane's tracking
//! ingest into SQLite on disk, then builds every domain's report the way `POST
//! /v1/reports/tls/build` does (one domain at a time), and prints the process's RSS and peak
//! RSS (VmHWM) after storing and after building, the time each took and the disk used.
//! Run: `cargo run --release -p postern-bench --bin tlsrpt-day -- [sessions] [domains]`

use std::sync::Arc;
use std::time::Instant;

use postern_control::tracking::{Tracking, day_of};
use postern_events::{self as ev, Event};

/// (VmRSS, VmHWM) in MiB.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let sessions: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let domains: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let dir = tempfile::tempdir().unwrap();
    let t = Arc::new(Tracking::open(&dir.path().join("tracking.sqlite")).unwrap());
    let day_ms = 86_400_000 * 20_500;
    let started = Instant::now();
    let mut seq = 0;
    while seq < sessions {
        let batch: Vec<Result<ev::Record, u64>> = (0..1_000.min(sessions - seq))
            .map(|i| {
                let n = seq + i + 1;
                let d = n % domains;
                let domain = format!("d{d}.example");
                Ok(ev::Record {
                    seq: n,
                    at_ms: day_ms + n % 86_000_000,
                    policy_version: 1,
                    truncated: false,
                    event: Event::TlsSession(ev::TlsSession {
                        sts: Some(ev::SessionPolicy {
                            id: "20261207T000000".into(),
                            lines: (0..20).map(|l| format!("mx: mx{l}.{domain}")).collect(),
                            mx: vec![ev::MxPattern::parse(&format!("*.{domain}")).unwrap()],
                        }),
                        result: (n % 7 == 0).then_some(ev::ResultType::CertificateExpired),
                        sending_ip: Some(format!("192.0.2.{}", n % 4)),
                        receiving_mx: Some(format!("mx{}.{domain}", n % 3)),
                        receiving_ip: Some(format!("198.51.100.{}", n % 3)),
                        at_ms: day_ms + n % 86_000_000,
                        domain,
                    }),
                })
            })
            .collect();
        seq += batch.len() as u64;
        t.ingest("bench", "E", batch).await.unwrap();
    }
    let stored_in = started.elapsed();
    let (rss_stored, hwm_stored) = rss();
    let built = Instant::now();
    let day = day_of(day_ms);
    let (mut reports, mut counted) = (0u64, 0u64);
    let tracking = t.clone();
    tokio::task::spawn_blocking(move || {
        tracking
            .sessions_by_domain(&day, &mut |domain, aggregate| {
                let header = postern_sts_header(&domain);
                let report = aggregate.report(header, &domain);
                let (ok, failed) = report.session_counts();
                counted += ok + failed;
                reports += 1;
            })
            .unwrap();
        println!(
            "built {reports} reports covering {counted} sessions in {:.1} s",
            built.elapsed().as_secs_f64()
        );
    })
    .await
    .unwrap();
    let (rss_built, hwm_built) = rss();
    let disk: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum();
    println!(
        "stored {sessions} sessions of {domains} domains in {:.1} s; disk {} MiB",
        stored_in.as_secs_f64(),
        disk / (1024 * 1024)
    );
    println!(
        "RSS after storing {rss_stored} MiB (peak {hwm_stored}); after building {rss_built} MiB (peak {hwm_built})"
    );
}

fn postern_sts_header(domain: &str) -> postern_sts::tlsrpt::ReportHeader {
    postern_sts::tlsrpt::ReportHeader {
        organization_name: "bench".into(),
        contact_info: "tlsrpt@bench.example".into(),
        report_id: domain.to_string(),
        start_datetime: String::new(),
        end_datetime: String::new(),
    }
}
