//! The worker's Prometheus metrics.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Metrics {
    pub snapshots_applied: AtomicU64,
    pub snapshots_rejected: AtomicU64,
    pub control_connected: AtomicU64,
    pub control_connects: AtomicU64,
    pub smtp_connections: AtomicU64,
    pub smtp_refused_no_policy: AtomicU64,
    pub smtp_proxy_refused: AtomicU64,
    pub events_lost: AtomicU64,
    pub outbox_bytes: AtomicU64,
}

impl Metrics {
    pub fn render(&self, version: u64) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "postern_worker_policy_version",
            "gauge",
            "Policy version enforced (0: none).",
            version,
        );
        metric(
            "postern_worker_snapshots_applied_total",
            "counter",
            "Snapshots compiled, saved and acknowledged.",
            self.snapshots_applied.load(Relaxed),
        );
        metric(
            "postern_worker_snapshots_rejected_total",
            "counter",
            "Snapshots refused (NACK).",
            self.snapshots_rejected.load(Relaxed),
        );
        metric(
            "postern_worker_control_connected",
            "gauge",
            "1 while the policy stream is up.",
            self.control_connected.load(Relaxed),
        );
        metric(
            "postern_worker_control_connects_total",
            "counter",
            "Policy streams opened.",
            self.control_connects.load(Relaxed),
        );
        metric(
            "postern_worker_smtp_connections_total",
            "counter",
            "SMTP connections accepted.",
            self.smtp_connections.load(Relaxed),
        );
        metric(
            "postern_worker_smtp_refused_no_policy_total",
            "counter",
            "SMTP connections answered 421 for want of a policy.",
            self.smtp_refused_no_policy.load(Relaxed),
        );
        metric(
            "postern_worker_smtp_proxy_refused_total",
            "counter",
            "SMTP connections closed for want of a valid PROXY protocol header from a trusted network.",
            self.smtp_proxy_refused.load(Relaxed),
        );
        metric(
            "postern_worker_events_lost_total",
            "counter",
            "Tracking events lost to a full outbox or a failed write (each range is also a gap event).",
            self.events_lost.load(Relaxed),
        );
        metric(
            "postern_worker_outbox_bytes",
            "gauge",
            "Bytes of tracking events waiting for the control plane.",
            self.outbox_bytes.load(Relaxed),
        );
        out
    }
}
