//! Server certificates for outbound delivery (docs/src/policy.md#outbound). The handshake accepts
//! any
//! certificate whose key signed the handshake, and the chain is judged afterwards, so the
//! shell can tell the three outcomes apart: `verify` defers with "not trusted" or "not
//! verified" (trusted chain, wrong name) texts, `encrypt` and `may` record the result only.

use postern_policy::Certificate;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Accepts any server certificate; the handshake signature is still verified.
#[derive(Debug)]
pub struct AcceptAnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AcceptAnyServerCert {
    /// A verifier using aws-lc-rs's signature algorithms.
    pub fn new() -> Self {
        AcceptAnyServerCert {
            algorithms: rustls::crypto::aws_lc_rs::default_provider()
                .signature_verification_algorithms,
        }
    }
}

impl Default for AcceptAnyServerCert {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Judges a server's chain (end entity first) against webpki-roots plus `extra_roots`
/// (`/v1/trust`), then against the reference name (the MX host, the next-hop host, or the IP).
pub fn check_server_chain(
    chain: Option<&[CertificateDer<'_>]>,
    extra_roots: &[CertificateDer<'_>],
    reference: &ServerName<'_>,
) -> Certificate {
    judge_server_chain(chain, extra_roots, reference, UnixTime::now())
}

/// `check_server_chain` at time `now`: a chain that fails only on an expiry date is
/// `Expired` (TLS-RPT tells `certificate-expired` from `certificate-not-trusted`).
pub fn judge_server_chain(
    chain: Option<&[CertificateDer<'_>]>,
    extra_roots: &[CertificateDer<'_>],
    reference: &ServerName<'_>,
    now: UnixTime,
) -> Certificate {
    let Some((end_entity, intermediates)) = chain.and_then(|c| c.split_first()) else {
        return Certificate::None;
    };
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for root in extra_roots {
        let _ = roots.add(root.clone());
    }
    let Ok(cert) = ParsedCertificate::try_from(end_entity) else {
        return Certificate::Untrusted;
    };
    let algorithms =
        rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms;
    if let Err(e) =
        verify_server_cert_signed_by_trust_anchor(&cert, &roots, intermediates, now, algorithms.all)
    {
        let expired = matches!(
            e,
            rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            )
        );
        return if expired {
            Certificate::Expired
        } else {
            Certificate::Untrusted
        };
    }
    match verify_server_name(&cert, reference) {
        Ok(()) => Certificate::Verified,
        Err(_) => Certificate::NameMismatch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::ders;
    use crate::pki::Ca;

    #[test]
    fn trust_then_name() {
        let ca = Ca::new("partner CA").unwrap();
        let mx = ca.server(&["mx.partner.example", "192.0.2.25"]).unwrap();
        let chain = ders(&mx.cert_pem);
        let roots = ders(&ca.cert_pem);
        let name = |n: &'static str| ServerName::try_from(n).unwrap();
        assert_eq!(
            check_server_chain(Some(&chain), &roots, &name("mx.partner.example")),
            Certificate::Verified
        );
        assert_eq!(
            check_server_chain(Some(&chain), &roots, &name("192.0.2.25")),
            Certificate::Verified
        );
        assert_eq!(
            check_server_chain(Some(&chain), &roots, &name("mx.other.example")),
            Certificate::NameMismatch
        );
        // Not under webpki-roots and not in the trust list: untrusted, whatever the name.
        assert_eq!(
            check_server_chain(Some(&chain), &[], &name("mx.partner.example")),
            Certificate::Untrusted
        );
        assert_eq!(
            check_server_chain(None, &roots, &name("mx.partner.example")),
            Certificate::None
        );
    }

    #[test]
    fn an_expired_chain_is_told_apart() {
        let ca = Ca::new("partner CA").unwrap();
        let mx = ca.server(&["mx.partner.example"]).unwrap();
        let (chain, roots) = (ders(&mx.cert_pem), ders(&ca.cert_pem));
        let name = ServerName::try_from("mx.partner.example").unwrap();
        let now = UnixTime::now();
        let judged = judge_server_chain(Some(&chain), &roots, &name, now);
        assert_eq!(judged, Certificate::Verified);
        // rcgen makes certificates valid until 4096.
        let far = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            now.as_secs() + 3000 * 365 * 86_400,
        ));
        let later = judge_server_chain(Some(&chain), &roots, &name, far);
        assert_eq!(later, Certificate::Expired);
        assert_eq!(
            judge_server_chain(Some(&chain), &[], &name, now),
            Certificate::Untrusted
        );
    }
}
