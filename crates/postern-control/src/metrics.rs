//! Prometheus metrics in the text exposition format. A handful of counters do not justify a
//! metrics crate; each is an atomic updated where the event happens.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Metrics {
    http: [AtomicU64; 5],
    pub policy_writes: AtomicU64,
    pub store_flushes: AtomicU64,
    pub store_flush_micros: AtomicU64,
    pub store_flush_waiters: AtomicU64,
}

/// Gauges read from the state when scraped.
pub struct Gauges {
    pub version: u64,
    pub inbound_rules: usize,
    pub outbound_rules: usize,
    pub tokens: usize,
    pub tracking_events: u64,
    pub tracking_lost: u64,
    pub tracking_foreign: u64,
    pub tracking_messages: u64,
    pub tracking_bytes: u64,
}

impl Metrics {
    pub fn count_response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.http[class].fetch_add(1, Relaxed);
    }

    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let http: Vec<(String, f64)> = self
            .http
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("{{code=\"{}xx\"}}", i + 1), c.load(Relaxed) as f64))
            .collect();
        let http: Vec<(&str, f64)> = http.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        metric(
            "postern_http_requests_total",
            "counter",
            "REST responses by status class.",
            &http,
        );
        metric(
            "postern_policy_version",
            "gauge",
            "Current policy version.",
            &[("", g.version as f64)],
        );
        metric(
            "postern_policy_rules",
            "gauge",
            "Rules in the current policy.",
            &[
                ("{direction=\"inbound\"}", g.inbound_rules as f64),
                ("{direction=\"outbound\"}", g.outbound_rules as f64),
            ],
        );
        metric(
            "postern_api_tokens",
            "gauge",
            "API tokens.",
            &[("", g.tokens as f64)],
        );
        metric(
            "postern_policy_writes_total",
            "counter",
            "Policy versions written.",
            &[("", self.policy_writes.load(Relaxed) as f64)],
        );
        metric(
            "postern_store_flushes_total",
            "counter",
            "Durable flushes of the store (shared by concurrent writes).",
            &[("", self.store_flushes.load(Relaxed) as f64)],
        );
        metric(
            "postern_store_flush_waiters_total",
            "counter",
            "Writes that waited for a flush; divided by flushes, the sharing factor.",
            &[("", self.store_flush_waiters.load(Relaxed) as f64)],
        );
        metric(
            "postern_store_flush_seconds_total",
            "counter",
            "Time spent in durable flushes.",
            &[("", self.store_flush_micros.load(Relaxed) as f64 / 1e6)],
        );
        metric(
            "postern_tracking_events_total",
            "counter",
            "Tracking events stored (replays not counted).",
            &[("", g.tracking_events as f64)],
        );
        metric(
            "postern_tracking_events_lost_total",
            "counter",
            "Events workers' outboxes reported lost (gap events).",
            &[("", g.tracking_lost as f64)],
        );
        metric(
            "postern_tracking_events_refused_total",
            "counter",
            "Events refused because their message belongs to another worker.",
            &[("", g.tracking_foreign as f64)],
        );
        metric(
            "postern_tracking_messages",
            "gauge",
            "Messages in the tracking store.",
            &[("", g.tracking_messages as f64)],
        );
        metric(
            "postern_tracking_store_bytes",
            "gauge",
            "Bytes of the tracking store on disk.",
            &[("", g.tracking_bytes as f64)],
        );
        out
    }
}
