//! Certificate name checks.

use rustls_pki_types::{CertificateDer, ServerName};

/// Whether `name` (a DNS name or an IP address) is among the certificate's subject alternative
/// names. Used to check that a worker's `--worker-id` is a name in its client certificate.
pub fn certificate_has_name(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(server_name) = ServerName::try_from(name) else {
        return false;
    };
    webpki::EndEntityCert::try_from(cert)
        .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&server_name).is_ok())
}
