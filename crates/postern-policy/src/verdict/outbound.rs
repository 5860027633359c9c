//! The outbound verdicts: what the worker does at each TLS step towards a next hop, by the
//! outbound level (docs/src/policy.md#outbound), with Postfix's deferral texts. Under `encrypt` and
//! `verify`
//! every TLS failure defers (the worker tries the next MX first); under `may` a refused STARTTLS
//! or a failed handshake falls back at once to a new plaintext connection, which is recorded.

use std::fmt;

use super::{Certificate, EnhancedStatus, Violation};
use crate::level::Level;

/// What the worker does next at a TLS step of an outbound session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsStep {
    /// Send STARTTLS and go on inside TLS.
    StartTls,
    /// Go on in plaintext on this connection.
    Plain,
    /// Open a new connection to the same host and deliver in plaintext (`may` only).
    FallbackPlain,
    /// Give up on this host for now.
    Defer(Deferral),
}

/// A delivery deferred by the TLS policy: its kind and its text (without the status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deferral {
    /// The kind of violation.
    pub violation: Violation,
    /// The reply text, without the status.
    pub text: String,
}

/// The step that defers with `violation` and `text`.
fn defer(violation: Violation, text: impl Into<String>) -> TlsStep {
    TlsStep::Defer(Deferral {
        violation,
        text: text.into(),
    })
}

impl Deferral {
    /// The enhanced status code of the violation.
    pub fn status(&self) -> EnhancedStatus {
        self.violation.status()
    }

    /// The recipients' reply: `450`, the status, the text.
    pub fn reply(&self) -> postern_smtp::Reply {
        postern_smtp::Reply::with_status(450, self.status(), &self.text)
    }
}

/// `4.7.5 Server certificate not trusted`, as logs and attempts show it.
impl fmt::Display for Deferral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status(), self.text)
    }
}

/// After EHLO in plaintext.
pub fn after_ehlo(level: Level, starttls_offered: bool, host: &str, ip: &str) -> TlsStep {
    match (level, starttls_offered) {
        (Level::None, _) => TlsStep::Plain,
        (_, true) => TlsStep::StartTls,
        (Level::May, false) => TlsStep::Plain,
        (Level::Encrypt | Level::Verify, false) => defer(
            Violation::TlsNotOffered,
            format!("TLS is required, but was not offered by host {host}[{ip}]"),
        ),
    }
}

/// The server answered STARTTLS with something other than 220; `said` is its reply.
pub fn after_starttls_refused(level: Level, host: &str, ip: &str, said: &str) -> TlsStep {
    match level {
        Level::May | Level::None => TlsStep::FallbackPlain,
        Level::Encrypt | Level::Verify => defer(
            Violation::StartTlsRefused,
            format!("TLS is required, but host {host}[{ip}] refused to start TLS: {said}"),
        ),
    }
}

/// The handshake failed (including no common suite under `high`).
pub fn after_handshake_failure(level: Level) -> TlsStep {
    match level {
        Level::May | Level::None => TlsStep::FallbackPlain,
        Level::Encrypt | Level::Verify => defer(
            Violation::HandshakeFailed,
            "Cannot start TLS: handshake failure",
        ),
    }
}

/// The handshake succeeded; `verify` also needs a trusted chain that names the reference
/// identity. `Ok` means: go on inside TLS (certificates are recorded, not enforced, below
/// `verify`).
pub fn after_handshake(level: Level, certificate: Certificate) -> Result<(), TlsStep> {
    match (level, certificate) {
        (Level::Verify, Certificate::Untrusted | Certificate::Expired | Certificate::None) => {
            Err(defer(
                Violation::CertificateNotTrusted,
                "Server certificate not trusted",
            ))
        }
        (Level::Verify, Certificate::NameMismatch) => Err(defer(
            Violation::CertificateNotVerified,
            "Server certificate not verified",
        )),
        _ => Ok(()),
    }
}
