//! Client certificates for inbound `verify` (docs/src/design.md "Traps"): rustls's stock verifier
//! fails
//! the whole handshake on an untrusted certificate, but a certificate is requested at connect and
//! judged only at MAIL FROM. So the handshake accepts any chain (signatures are still checked
//! by webpki, so the client proves it holds the key), and `check_chain` runs the real webpki
//! check on the peer's chain afterwards.

use postern_policy::Certificate;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

/// Requests a client certificate, accepts any chain, checks the handshake signatures.
#[derive(Debug)]
pub struct RequestClientCert {
    algorithms: WebPkiSupportedAlgorithms,
    /// The trusted CAs' subjects, sent with the request: clients that pick their certificate
    /// by the server's CA list (Schannel, Java) send none without them. Each is the whole DER
    /// Name (webpki's `subject` lacks the outer SEQUENCE, which OpenSSL refuses to parse).
    hints: Vec<DistinguishedName>,
}

impl RequestClientCert {
    /// A verifier that names the subjects of `roots` (trusted CAs, DER) in its request.
    pub fn new(roots: &[CertificateDer<'_>]) -> Self {
        RequestClientCert {
            algorithms: rustls::crypto::aws_lc_rs::default_provider()
                .signature_verification_algorithms,
            hints: roots
                .iter()
                .filter_map(|r| webpki::anchor_from_trusted_cert(r).ok())
                .map(|a| DistinguishedName::in_sequence(a.subject.as_ref()))
                .collect(),
        }
    }
}

impl ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
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

/// Checks a client's chain (end entity first) against trusted CAs. No CA at all means nothing
/// verifies (rustls refuses to build a verifier without roots; that is not an error here).
pub fn check_chain(
    chain: Option<&[CertificateDer<'_>]>,
    roots: &[CertificateDer<'_>],
) -> Certificate {
    let Some((end_entity, intermediates)) = chain.and_then(|c| c.split_first()) else {
        return Certificate::None;
    };
    let mut store = RootCertStore::empty();
    for root in roots {
        let _ = store.add(root.clone());
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let Ok(verifier) =
        WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider).build()
    else {
        return Certificate::Untrusted;
    };
    match verifier.verify_client_cert(end_entity, intermediates, UnixTime::now()) {
        Ok(_) => Certificate::Verified,
        Err(_) => Certificate::Untrusted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::ders;
    use crate::pki::Ca;

    #[test]
    fn chains_are_judged_after_the_fact() {
        let ca = Ca::new("client CA").unwrap();
        let other = Ca::new("other CA").unwrap();
        let client = ca.client(&["client.example"]).unwrap();
        let chain = ders(&client.cert_pem);
        let roots = ders(&ca.cert_pem);
        assert_eq!(check_chain(Some(&chain), &roots), Certificate::Verified);
        assert_eq!(
            check_chain(Some(&chain), &ders(&other.cert_pem)),
            Certificate::Untrusted
        );
        assert_eq!(check_chain(Some(&chain), &[]), Certificate::Untrusted);
        assert_eq!(check_chain(None, &roots), Certificate::None);
        // A server certificate (serverAuth only) is not a client certificate.
        let server = ca.server(&["mx.example"]).unwrap();
        assert_eq!(
            check_chain(Some(&ders(&server.cert_pem)), &roots),
            Certificate::Untrusted
        );
    }

    #[test]
    fn a_certificate_request_names_the_trusted_cas() {
        let ca = Ca::new("client CA").unwrap();
        let request = RequestClientCert::new(&ders(&ca.cert_pem));
        assert_eq!(request.root_hint_subjects().len(), 1);
        // A whole DER Name: one SEQUENCE (short-form length here) spanning every byte, as
        // OpenSSL's parse_ca_names requires.
        let name = request.root_hint_subjects()[0].as_ref();
        assert_eq!(name[0], 0x30);
        assert_eq!(usize::from(name[1]) + 2, name.len());
        assert!(name.windows(9).any(|w| w == b"client CA"));
        assert!(RequestClientCert::new(&[]).root_hint_subjects().is_empty());
        assert!(request.offer_client_auth() && !request.client_auth_mandatory());
    }
}
