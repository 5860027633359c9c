//! What delivery rounds tell the metrics (`crate::metrics`): the TLS outcome of each attempt
//! that reached a next hop, each recipient's outcome by level, and why deferrals happened.

use postern_policy::{Certificate, Level};
use postern_smtp::{EnhancedStatus, Reply};

use super::deliver::Attempt;
use crate::metrics::{Delivery, Metrics, Outcome, Reason};

pub fn attempt(m: &Metrics, a: &Attempt) {
    if !(a.greeted || a.reused) {
        return;
    }
    let outcome = match (&a.tls, a.violation) {
        (Some(t), _) if t.certificate == Certificate::Verified => "verified",
        (Some(_), _) => "unverified",
        (None, Some(_)) => "failed",
        (None, None) => "plaintext",
    };
    m.outbound_tls.get_or_create(&Outcome { outcome }).inc();
    if a.tls_fallback {
        m.outbound_tls_fallbacks.inc();
    }
}

/// `outcome`: delivered, deferred, bounced or expired.
pub fn recipient(m: &Metrics, outcome: &'static str, level: Level) {
    let labels = Delivery {
        outcome,
        level: level.as_str(),
    };
    m.deliveries.get_or_create(&labels).inc();
}

/// A deferral's reason class: the TLS policy, the next hop's own 4xx, or a local failure to
/// look up or reach it.
pub fn deferred(m: &Metrics, tls_policy: bool, from_next_hop: bool, reply: &Reply) {
    let reason = if tls_policy {
        "tls_policy"
    } else if from_next_hop {
        "reply"
    } else {
        match reply.status {
            Some(EnhancedStatus(4, 4, 3)) => "dns",
            Some(EnhancedStatus(4, 4, 1 | 2)) => "connection",
            _ => "other",
        }
    };
    m.deferrals.get_or_create(&Reason { reason }).inc();
}
