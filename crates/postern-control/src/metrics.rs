//! The control plane's Prometheus metrics, with the Prometheus project's client
//! (prometheus-client). Histograms and counters live here and are updated where things happen;
//! what mirrors state (policy, tokens, workers, tracking counts) is read when `/metrics` is
//! scraped, into a registry made for that scrape. The names are a contract with dashboards and
//! alerts: `deploy/metrics.txt` lists them and a test compares.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpRequest {
    /// The route's template (`/v1/rules/inbound/{id}`), so that ids do not make series.
    pub route: String,
    pub method: String,
    /// `2xx` to `5xx`.
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Direction {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerState {
    version: String,
    connected: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

const HTTP_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const PUSH_BUCKETS: [f64; 11] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// From an event's creation on a worker to its storage here: batching makes tens of
/// milliseconds normal; minutes mean a worker was cut off.
pub const INGEST_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];

pub struct Metrics {
    pub http: HistogramFamily<HttpRequest>,
    pub policy_writes: Counter,
    pub policy_push: Histogram,
    pub store_flushes: Counter,
    pub store_flush_waiters: Counter,
    pub store_flush_seconds: Counter<f64, AtomicU64>,
    /// The newest version written and when: where a push's latency starts.
    written: Mutex<Option<(u64, Instant)>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            http: Family::new_with_constructor(|| Histogram::new(HTTP_BUCKETS)),
            policy_writes: Counter::default(),
            policy_push: Histogram::new(PUSH_BUCKETS),
            store_flushes: Counter::default(),
            store_flush_waiters: Counter::default(),
            store_flush_seconds: Counter::default(),
            written: Mutex::new(None),
        }
    }
}

/// What is read from the state when scraped.
pub struct Gauges {
    pub version: u64,
    pub inbound_rules: usize,
    pub outbound_rules: usize,
    pub tokens: usize,
    /// (applied version, connected) of every known worker.
    pub workers: Vec<(u64, bool)>,
    pub tracking_events: u64,
    pub tracking_lost: u64,
    pub tracking_foreign: u64,
    pub tracking_messages: u64,
    pub tracking_bytes: u64,
    pub tracking_lag: Histogram,
}

impl Metrics {
    pub fn response(&self, route: String, method: &str, status: u16, took: Duration) {
        let status = match status / 100 {
            1 | 2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        };
        // Anyone may send any method: only the known ones become label values.
        let method = match method {
            "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "PATCH" | "OPTIONS" => method,
            _ => "other",
        };
        let labels = HttpRequest {
            route,
            method: method.to_string(),
            status,
        };
        self.http.get_or_create(&labels).observe(took.as_secs_f64());
    }

    pub fn version_written(&self, version: u64) {
        *self.written.lock().expect("metrics lock") = Some((version, Instant::now()));
    }

    /// Where the push of `version` to a worker whose stream opened at `connected` starts:
    /// its write, or the stream's opening if that came later (or the version is not the newest).
    pub fn push_started(&self, version: u64, connected: Instant) -> Instant {
        match *self.written.lock().expect("metrics lock") {
            Some((v, at)) if v == version => at.max(connected),
            _ => connected,
        }
    }

    pub fn render(&self, g: Gauges) -> String {
        let mut r = Registry::with_prefix("postern_control");
        r.register(
            "http_request_seconds",
            "REST request latency by route template, method and status class",
            self.http.clone(),
        );
        r.register(
            "policy_version",
            "Current policy version",
            ConstGauge::new(g.version as i64),
        );
        let rules = Family::<Direction, Gauge>::default();
        for (direction, n) in [("inbound", g.inbound_rules), ("outbound", g.outbound_rules)] {
            rules.get_or_create(&Direction { direction }).set(n as i64);
        }
        r.register("policy_rules", "Rules in the current policy", rules);
        r.register(
            "policy_writes",
            "Policy versions written",
            self.policy_writes.clone(),
        );
        r.register(
            "policy_push_seconds",
            "From a version's write (or the worker's connection, if later) to the worker's ACK",
            self.policy_push.clone(),
        );
        let workers = Family::<WorkerState, Gauge>::default();
        for (version, connected) in g.workers {
            let labels = WorkerState {
                version: version.to_string(),
                connected: if connected { "true" } else { "false" },
            };
            workers.get_or_create(&labels).inc();
        }
        r.register(
            "workers",
            "Known workers by the policy version they enforce and whether they are connected",
            workers,
        );
        r.register("api_tokens", "API tokens", ConstGauge::new(g.tokens as i64));
        r.register(
            "store_flushes",
            "Durable flushes of the store (shared by concurrent writes)",
            self.store_flushes.clone(),
        );
        r.register(
            "store_flush_waiters",
            "Writes that waited for a flush; divided by flushes, the sharing factor",
            self.store_flush_waiters.clone(),
        );
        r.register(
            "store_flush_seconds",
            "Time spent in durable flushes",
            self.store_flush_seconds.clone(),
        );
        r.register(
            "tracking_events",
            "Tracking events stored (replays not counted)",
            ConstCounter::new(g.tracking_events),
        );
        r.register(
            "tracking_events_lost",
            "Events workers' outboxes reported lost (gap events)",
            ConstCounter::new(g.tracking_lost),
        );
        r.register(
            "tracking_events_refused",
            "Events refused because their message belongs to another worker",
            ConstCounter::new(g.tracking_foreign),
        );
        r.register(
            "tracking_ingest_lag_seconds",
            "From an event's creation on a worker to its storage here",
            g.tracking_lag,
        );
        r.register(
            "tracking_messages",
            "Messages in the tracking store",
            ConstGauge::new(g.tracking_messages as i64),
        );
        r.register(
            "tracking_store_bytes",
            "Bytes of the tracking store on disk",
            ConstGauge::new(g.tracking_bytes as i64),
        );
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &r)
            .expect("writing to a String");
        out
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}
