//! What the worker does at each TLS step towards a next hop, by the outbound level
//! (PRODUCT.md 2.3), with the deferral texts verbatim. Under `encrypt` and `verify` every TLS
//! failure defers (the caller tries the next MX first); under `may` a refused STARTTLS or a
//! failed handshake falls back at once to a new plaintext connection, which is recorded.

use postern_policy::Level;
use postern_smtp::Reply;
use postern_tls::servercert::ServerCertStatus;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    StartTls,
    /// Go on in plaintext on this connection.
    Plain,
    /// Open a new connection to the same host and deliver in plaintext (`may` only).
    FallbackPlain,
    /// Give up on this host for now; the text is the attempt's reason.
    Defer(String),
}

/// After EHLO in plaintext.
pub fn after_ehlo(level: Level, starttls_offered: bool, host: &str, ip: &str) -> Step {
    match (level, starttls_offered) {
        (Level::None, _) => Step::Plain,
        (_, true) => Step::StartTls,
        (Level::May, false) => Step::Plain,
        (Level::Encrypt | Level::Verify, false) => Step::Defer(format!(
            "4.7.4 TLS is required, but was not offered by host {host}[{ip}]"
        )),
    }
}

/// The server answered STARTTLS with something other than 220.
pub fn after_starttls_refused(level: Level, host: &str, ip: &str, reply: &Reply) -> Step {
    match level {
        Level::May | Level::None => Step::FallbackPlain,
        Level::Encrypt | Level::Verify => {
            let said = reply.one_line();
            Step::Defer(format!(
                "4.7.5 TLS is required, but host {host}[{ip}] refused to start TLS: {said}"
            ))
        }
    }
}

/// The handshake failed (including no common suite under `high`).
pub fn after_handshake_failure(level: Level) -> Step {
    match level {
        Level::May | Level::None => Step::FallbackPlain,
        Level::Encrypt | Level::Verify => {
            Step::Defer("4.7.5 Cannot start TLS: handshake failure".into())
        }
    }
}

/// The handshake succeeded; `verify` also needs a trusted chain that names the reference
/// identity. `Ok` means: go on inside TLS.
pub fn after_handshake(level: Level, certificate: ServerCertStatus) -> Result<(), Step> {
    match (level, certificate) {
        (Level::Verify, ServerCertStatus::Untrusted | ServerCertStatus::None) => {
            Err(Step::Defer("4.7.5 Server certificate not trusted".into()))
        }
        (Level::Verify, ServerCertStatus::NameMismatch) => {
            Err(Step::Defer("4.7.5 Server certificate not verified".into()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_five_deferral_texts() {
        assert_eq!(
            after_ehlo(Level::Encrypt, false, "mx.partner.example", "198.51.100.2"),
            Step::Defer("4.7.4 TLS is required, but was not offered by host mx.partner.example[198.51.100.2]".into())
        );
        let refused = Reply::new(454, "4.7.0 TLS not available due to local problem");
        assert_eq!(
            after_starttls_refused(Level::Verify, "mx.partner.example", "198.51.100.2", &refused),
            Step::Defer("4.7.5 TLS is required, but host mx.partner.example[198.51.100.2] refused to start TLS: 454 4.7.0 TLS not available due to local problem".into())
        );
        assert_eq!(
            after_handshake_failure(Level::Encrypt),
            Step::Defer("4.7.5 Cannot start TLS: handshake failure".into())
        );
        assert_eq!(
            after_handshake(Level::Verify, ServerCertStatus::Untrusted),
            Err(Step::Defer("4.7.5 Server certificate not trusted".into()))
        );
        assert_eq!(
            after_handshake(Level::Verify, ServerCertStatus::NameMismatch),
            Err(Step::Defer("4.7.5 Server certificate not verified".into()))
        );
    }

    #[test]
    fn may_falls_back_and_none_never_tries() {
        assert_eq!(after_ehlo(Level::None, true, "h", "i"), Step::Plain);
        assert_eq!(after_ehlo(Level::May, true, "h", "i"), Step::StartTls);
        assert_eq!(after_ehlo(Level::May, false, "h", "i"), Step::Plain);
        assert_eq!(
            after_starttls_refused(Level::May, "h", "i", &Reply::new(454, "no")),
            Step::FallbackPlain
        );
        assert_eq!(after_handshake_failure(Level::May), Step::FallbackPlain);
        // Certificates are recorded, not enforced, below verify.
        assert_eq!(
            after_handshake(Level::Encrypt, ServerCertStatus::Untrusted),
            Ok(())
        );
        assert_eq!(
            after_handshake(Level::May, ServerCertStatus::NameMismatch),
            Ok(())
        );
        assert_eq!(
            after_handshake(Level::Verify, ServerCertStatus::Verified),
            Ok(())
        );
    }
}
