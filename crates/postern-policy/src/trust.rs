//! Trusted CAs (`/v1/trust`): the roots for client certificates (inbound `verify`) and, beside
//! webpki-roots, for server certificates (outbound `verify`).

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

use crate::error::FieldError;

/// Trusted CAs (`/v1/trust`): roots for client and, beside webpki-roots, server certificates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Trust {
    /// PEM-encoded CA certificates; one certificate per entry.
    #[serde(default)]
    pub ca_pems: Vec<String>,
}

impl Trust {
    /// Every entry must be exactly one PEM certificate usable as a trust anchor.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        for (i, pem) in self.ca_pems.iter().enumerate() {
            if let Err(e) = parse_anchor(pem) {
                errors.push(FieldError::new(format!("/ca_pems/{i}"), e));
            }
        }
        errors
    }

    /// The DER certificates, skipping any that do not parse (validation refuses those).
    pub fn certificates(&self) -> Vec<CertificateDer<'static>> {
        self.ca_pems
            .iter()
            .filter_map(|p| CertificateDer::from_pem_slice(p.as_bytes()).ok())
            .collect()
    }
}

fn parse_anchor(pem: &str) -> Result<(), String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not a valid PEM certificate: {e}"))?;
    match certs.as_slice() {
        [] => Err("no PEM 'CERTIFICATE' block found".into()),
        [der] => webpki::anchor_from_trusted_cert(der)
            .map(|_| ())
            .map_err(|e| format!("not a usable CA certificate: {e}")),
        _ => Err("holds more than one certificate; give each CA its own entry".into()),
    }
}
