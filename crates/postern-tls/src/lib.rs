//! TLS plumbing shared by the control plane, the workers and the binary: the one rustls crypto
//! provider (aws-lc-rs, DESIGN.md "Traps"), reading certificate files with errors that name
//! them, the PKI `postern dev` and the tests generate, and certificate name checks.

#![forbid(unsafe_code)]

pub mod clientcert;
pub mod files;
pub mod names;
pub mod pki;
pub mod reload;
pub mod servercert;
pub mod suites;

/// Installs aws-lc-rs as the process's rustls provider. Call it first in `main` and in tests;
/// calling it again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A TLS server configuration from PEM text (certificate chain and key), offering HTTP/2 and
/// HTTP/1.1 by ALPN. The error says what is wrong.
pub fn server_config(cert_pem: &str, key_pem: &str) -> Result<rustls::ServerConfig, String> {
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;
    let certs = files::ders(cert_pem);
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("private key: {e}"))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
