//! The worker's Prometheus metrics, with the Prometheus project's client (prometheus-client).
//! Counters and histograms are updated where things happen; gauges that mirror state (policy
//! version, queue, outbox) are set from that state when `/metrics` is scraped. The names are a
//! contract with dashboards and alerts: `deploy/metrics.txt` lists them and a test compares.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsSession {
    pub version: &'static str,
    pub suite: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueState {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Delivery {
    pub outcome: &'static str,
    pub level: &'static str,
}

/// How a session ended (`postern_worker_smtp_sessions_total{outcome}`).
pub mod session {
    pub const COMPLETED: &str = "completed";
    pub const TIMEOUT: &str = "timeout";
    pub const TLS_FAILED: &str = "tls_failed";
    pub const ERROR: &str = "error";
    pub const REFUSED_NO_POLICY: &str = "refused_no_policy";
    pub const REFUSED_LIMIT: &str = "refused_limit";
    pub const PROXY_REFUSED: &str = "proxy_refused";
}

/// `postern_worker_smtp_rejections_total{reason}`: the inbound violations, then the rest.
const REJECTIONS: [&str; 7] = [
    "must_use_tls",
    "cipher_too_weak",
    "unverified_client_certificate",
    "must_not_use_tls",
    "relay_denied",
    "limit",
    "storage",
];

/// `postern_worker_deferrals_total{reason}` (outbound/measure.rs).
const DEFERRALS: [&str; 5] = ["tls_policy", "connection", "dns", "reply", "other"];

/// Seconds from the 250 to the delivery: a minute is good, a day is the queue's business.
const DELIVERY_BUCKETS: [f64; 9] = [1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0];

pub struct Metrics {
    registry: Registry,
    pub policy_version: Gauge,
    pub snapshots_applied: Counter,
    pub snapshots_rejected: Counter,
    pub control_connected: Gauge,
    pub control_connects: Counter,
    pub sessions_active: Gauge,
    pub sessions: Family<Outcome, Counter>,
    pub rejections: Family<Reason, Counter>,
    pub inbound_tls: Family<TlsSession, Counter>,
    pub inbound_tls_failures: Counter,
    pub messages_received: Counter,
    pub queue: Family<QueueState, Gauge>,
    pub deferrals: Family<Reason, Counter>,
    pub deliveries: Family<Delivery, Counter>,
    pub delivery_seconds: Histogram,
    pub outbound_tls: Family<Outcome, Counter>,
    pub outbound_tls_fallbacks: Counter,
    pub outbox_bytes: Gauge,
    pub outbox_lag_seconds: Gauge<f64, AtomicU64>,
    pub events_lost: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let m = Metrics {
            registry: Registry::with_prefix("postern_worker"),
            policy_version: Gauge::default(),
            snapshots_applied: Counter::default(),
            snapshots_rejected: Counter::default(),
            control_connected: Gauge::default(),
            control_connects: Counter::default(),
            sessions_active: Gauge::default(),
            sessions: Family::default(),
            rejections: Family::default(),
            inbound_tls: Family::default(),
            inbound_tls_failures: Counter::default(),
            messages_received: Counter::default(),
            queue: Family::default(),
            deferrals: Family::default(),
            deliveries: Family::default(),
            delivery_seconds: Histogram::new(DELIVERY_BUCKETS),
            outbound_tls: Family::default(),
            outbound_tls_fallbacks: Counter::default(),
            outbox_bytes: Gauge::default(),
            outbox_lag_seconds: Gauge::default(),
            events_lost: Counter::default(),
        };
        m.register().zeroed()
    }
}

impl Metrics {
    fn register(mut self) -> Metrics {
        let r = &mut self.registry;
        r.register(
            "policy_version",
            "Policy version enforced (0: none yet)",
            self.policy_version.clone(),
        );
        r.register(
            "snapshots_applied",
            "Snapshots compiled, saved and acknowledged",
            self.snapshots_applied.clone(),
        );
        r.register(
            "snapshots_rejected",
            "Snapshots refused (NACK)",
            self.snapshots_rejected.clone(),
        );
        r.register(
            "control_connected",
            "1 while the policy stream to the control plane is up",
            self.control_connected.clone(),
        );
        r.register(
            "control_connects",
            "Policy streams opened",
            self.control_connects.clone(),
        );
        r.register(
            "smtp_sessions_active",
            "SMTP sessions in progress",
            self.sessions_active.clone(),
        );
        r.register(
            "smtp_sessions",
            "SMTP connections by how they ended: completed, timeout, tls_failed, error, \
             refused_no_policy, refused_limit, proxy_refused",
            self.sessions.clone(),
        );
        r.register(
            "smtp_rejections",
            "Replies refusing a command, by reason: must_use_tls (530), cipher_too_weak, \
             unverified_client_certificate, must_not_use_tls (421), relay_denied (554), limit, \
             storage",
            self.rejections.clone(),
        );
        r.register(
            "inbound_tls_sessions",
            "Inbound STARTTLS handshakes completed, by protocol version and cipher suite",
            self.inbound_tls.clone(),
        );
        r.register(
            "inbound_tls_failures",
            "Inbound STARTTLS handshakes that failed or timed out",
            self.inbound_tls_failures.clone(),
        );
        r.register(
            "messages_received",
            "Messages accepted (250 after DATA)",
            self.messages_received.clone(),
        );
        r.register(
            "queue_messages",
            "Messages in the queue: active (due or being delivered) or deferred",
            self.queue.clone(),
        );
        r.register(
            "deferrals",
            "Recipient deferrals by reason: tls_policy, connection, dns, reply, other",
            self.deferrals.clone(),
        );
        r.register(
            "deliveries",
            "Recipient outcomes (delivered, deferred, bounced, expired) by effective TLS level",
            self.deliveries.clone(),
        );
        r.register(
            "delivery_seconds",
            "Time from the 250 to the delivery of a recipient",
            self.delivery_seconds.clone(),
        );
        r.register(
            "outbound_tls",
            "Delivery attempts that reached a next hop, by TLS outcome: verified, unverified, \
             plaintext, failed",
            self.outbound_tls.clone(),
        );
        r.register(
            "outbound_tls_fallbacks",
            "Deliveries at level may that went in plaintext after a TLS failure",
            self.outbound_tls_fallbacks.clone(),
        );
        r.register(
            "outbox_bytes",
            "Bytes of tracking events waiting for the control plane",
            self.outbox_bytes.clone(),
        );
        r.register(
            "outbox_lag_seconds",
            "Age of the oldest tracking event the control plane has not acknowledged (0: none)",
            self.outbox_lag_seconds.clone(),
        );
        r.register(
            "events_lost",
            "Tracking events lost to a full outbox or a failed write (each range is also a gap event)",
            self.events_lost.clone(),
        );
        self
    }

    /// Every series of a closed label set starts at 0, so that it is on the page (and `rate()`
    /// works) before its first event.
    fn zeroed(self) -> Metrics {
        use session::*;
        let outcomes = [
            COMPLETED,
            TIMEOUT,
            TLS_FAILED,
            ERROR,
            REFUSED_NO_POLICY,
            REFUSED_LIMIT,
            PROXY_REFUSED,
        ];
        for outcome in outcomes {
            let _ = self.sessions.get_or_create(&Outcome { outcome });
        }
        for reason in REJECTIONS {
            let _ = self.rejections.get_or_create(&Reason { reason });
        }
        for reason in DEFERRALS {
            let _ = self.deferrals.get_or_create(&Reason { reason });
        }
        for outcome in ["delivered", "deferred", "bounced", "expired"] {
            for level in postern_policy::Level::ALL {
                let level = level.as_str();
                let _ = self.deliveries.get_or_create(&Delivery { outcome, level });
            }
        }
        for outcome in ["verified", "unverified", "plaintext", "failed"] {
            let _ = self.outbound_tls.get_or_create(&Outcome { outcome });
        }
        for state in ["active", "deferred"] {
            let _ = self.queue.get_or_create(&QueueState { state });
        }
        self
    }

    pub fn session_ended(&self, outcome: &'static str) {
        self.sessions.get_or_create(&Outcome { outcome }).inc();
    }

    pub fn rejected(&self, reason: &'static str) {
        self.rejections.get_or_create(&Reason { reason }).inc();
    }

    /// The exposition text (Prometheus 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}
