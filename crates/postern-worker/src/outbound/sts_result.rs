//! MTA-STS on a delivery attempt, in the terms of tracking and TLS-RPT (RFC 8460 4.3): the
//! policy as an attempt records it, the policy as a report describes it, and what the policy
//! finds wrong with an attempt, as a result type.

use postern_events as events;
use postern_policy::{Certificate, Level, Violation};

use super::deliver::Attempt;

/// The policy as TLS-RPT describes it: its lines as served and its mx patterns.
pub(super) fn session_policy(c: &postern_sts::Cached) -> events::SessionPolicy {
    events::SessionPolicy {
        id: c.id.clone(),
        lines: c
            .text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        mx: c.policy.mx.iter().map(|m| m.as_str().to_string()).collect(),
    }
}

pub(super) fn sts_applied(c: &postern_sts::Cached, failure: Option<&str>) -> events::PolicySource {
    events::PolicySource::MtaSts(events::StsApplied {
        id: c.id.clone(),
        mode: c.policy.mode.as_str().into(),
        failure: failure.map(str::to_string),
    })
}

/// What an MTA-STS policy finds wrong with an attempt, as a TLS-RPT result type (RFC 8460
/// 4.3.2): enforced, it deferred the attempt; in `testing`, the delivery went on regardless.
/// `None` for an attempt that reached no server, or that met every requirement; and for
/// plaintext at level `none` (a `testing` policy under a `none` default: STARTTLS was not
/// tried, so the server is not to blame).
pub(super) fn sts_failure(
    policy: &postern_sts::Policy,
    a: &Attempt,
    level: Level,
) -> Option<&'static str> {
    if !policy.allows(&a.host) {
        return Some("validation-failure");
    }
    match (&a.tls, a.violation) {
        (Some(t), _) => match t.certificate {
            Certificate::Verified => None,
            Certificate::NameMismatch => Some("certificate-host-mismatch"),
            Certificate::Untrusted if t.expired => Some("certificate-expired"),
            Certificate::Untrusted => Some("certificate-not-trusted"),
            Certificate::None => Some("validation-failure"),
        },
        // Enforced, the attempt stopped at the failed check (its record keeps no TLS).
        (None, Some(Violation::TlsNotOffered | Violation::StartTlsRefused)) => {
            Some("starttls-not-supported")
        }
        (None, Some(Violation::CertificateNotVerified)) => Some("certificate-host-mismatch"),
        (None, Some(Violation::CertificateNotTrusted)) if a.certificate_expired => {
            Some("certificate-expired")
        }
        (None, Some(Violation::CertificateNotTrusted)) => Some("certificate-not-trusted"),
        (None, Some(_)) => Some("validation-failure"),
        // A `may` fallback: STARTTLS refused (454) or a failed handshake.
        (None, None) if a.tls_fallback && a.starttls_refused => Some("starttls-not-supported"),
        (None, None) if a.tls_fallback => Some("validation-failure"),
        (None, None) if a.greeted && level > Level::None => Some("starttls-not-supported"),
        (None, None) => None,
    }
}
