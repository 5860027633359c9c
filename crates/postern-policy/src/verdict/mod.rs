//! Typed verdicts for every TLS and relay decision (docs/src/policy.md#inbound, policy.md#outbound,
//! policy.md#relay-control). Each is a pure
//! function of the compiled policy and what the session has established; a verdict carries its
//! reply code and enhanced status as numbers and its text, so the worker maps it to a reply and
//! does I/O only, `evaluate` shows the same values, and tracking records the kind, never text to
//! be parsed back.

mod certificate;
mod delivery;
#[cfg(test)]
mod delivery_tests;
mod inbound;
mod outbound;
#[cfg(test)]
mod tests;

use std::fmt;

pub use certificate::Certificate;
pub use delivery::{
    AttemptFacts, DeliveryPlan, Destination, Judgement, KnownPolicy, NoHostAllowed, Overridden,
    PolicySource, StsApplied,
};
pub use inbound::{ConnectVerdict, MailVerdict, RcptVerdict, SessionTls};
pub use outbound::{
    Deferral, TlsStep, after_ehlo, after_handshake, after_handshake_failure, after_starttls_refused,
};

pub use postern_smtp::EnhancedStatus;

/// A reply a verdict maps to: `code status text`; `close` ends the session after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictReply {
    /// The SMTP reply code, e.g. `530`.
    pub code: u16,
    /// The enhanced status code, e.g. `5.7.0`.
    pub status: EnhancedStatus,
    /// Without the code and the status.
    pub text: String,
    /// Whether the session ends after this reply.
    pub close: bool,
}

impl VerdictReply {
    /// The SMTP reply, its status a field of it.
    pub fn reply(&self) -> postern_smtp::Reply {
        postern_smtp::Reply::with_status(self.code, self.status, &self.text)
    }
}

impl fmt::Display for VerdictReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.code, self.status, self.text)
    }
}

/// The kind of a TLS policy violation (docs/src/tracking.md: what the `violation` mark means).
/// Inbound
/// kinds refuse a transaction; outbound kinds defer a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Violation {
    /// `530 5.7.0 … Must use TLS`.
    MustUseTls,
    /// `421 4.7.0 … Cipher strength too low`.
    CipherTooWeak,
    /// `421 4.7.1 … Unverified client certificate`.
    UnverifiedClientCertificate,
    /// `421 4.7.0 … Must not use TLS`.
    MustNotUseTls,
    /// `4.7.4 TLS is required, but was not offered by host …`.
    TlsNotOffered,
    /// `4.7.5 TLS is required, but host … refused to start TLS: …`.
    #[serde(rename = "starttls_refused")]
    StartTlsRefused,
    /// `4.7.5 Cannot start TLS: handshake failure`.
    HandshakeFailed,
    /// `4.7.5 Server certificate not trusted`.
    CertificateNotTrusted,
    /// `4.7.5 Server certificate not verified`.
    CertificateNotVerified,
}

impl Violation {
    /// Every kind of violation.
    pub const ALL: [Violation; 9] = [
        Violation::MustUseTls,
        Violation::CipherTooWeak,
        Violation::UnverifiedClientCertificate,
        Violation::MustNotUseTls,
        Violation::TlsNotOffered,
        Violation::StartTlsRefused,
        Violation::HandshakeFailed,
        Violation::CertificateNotTrusted,
        Violation::CertificateNotVerified,
    ];

    /// The name as serialised, e.g. `must_use_tls`.
    pub fn as_str(self) -> &'static str {
        match self {
            Violation::MustUseTls => "must_use_tls",
            Violation::CipherTooWeak => "cipher_too_weak",
            Violation::UnverifiedClientCertificate => "unverified_client_certificate",
            Violation::MustNotUseTls => "must_not_use_tls",
            Violation::TlsNotOffered => "tls_not_offered",
            Violation::StartTlsRefused => "starttls_refused",
            Violation::HandshakeFailed => "handshake_failed",
            Violation::CertificateNotTrusted => "certificate_not_trusted",
            Violation::CertificateNotVerified => "certificate_not_verified",
        }
    }

    /// The enhanced status code of the reply or deferral it causes.
    pub fn status(self) -> EnhancedStatus {
        match self {
            Violation::MustUseTls => EnhancedStatus(5, 7, 0),
            Violation::CipherTooWeak | Violation::MustNotUseTls => EnhancedStatus(4, 7, 0),
            Violation::UnverifiedClientCertificate => EnhancedStatus(4, 7, 1),
            Violation::TlsNotOffered => EnhancedStatus(4, 7, 4),
            Violation::StartTlsRefused
            | Violation::HandshakeFailed
            | Violation::CertificateNotTrusted
            | Violation::CertificateNotVerified => EnhancedStatus(4, 7, 5),
        }
    }
}
