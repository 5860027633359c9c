//! TLS plumbing shared by the control plane, the workers and the binary: the one rustls crypto
//! provider (aws-lc-rs, docs/src/design.md "Traps"), reading certificate files with errors that
//! name
//! them, the PKI `postern dev` and the tests generate, and certificate name checks.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod clientcert;
pub mod files;
pub mod names;
pub mod pki;
pub mod reload;
pub mod servercert;
pub mod suites;

use std::sync::Arc;

use rustls::server::ResolvesServerCert;
use rustls::sign::SingleCertAndKey;

/// Installs aws-lc-rs as the process's rustls provider. Call it first in `main` and in tests;
/// calling it again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A TLS server configuration from PEM text (certificate chain and key), offering HTTP/2 and
/// HTTP/1.1 by ALPN. The error says what is wrong.
pub fn server_config(cert_pem: &str, key_pem: &str) -> Result<rustls::ServerConfig, String> {
    let key = reload::certified_key(cert_pem, key_pem)?;
    Ok(server_config_with(Arc::new(SingleCertAndKey::from(key))))
}

/// A TLS server configuration presenting `cert` (fixed, or a `reload::ReloadingCert` that
/// follows its files), offering HTTP/2 and HTTP/1.1 by ALPN.
pub fn server_config_with(cert: Arc<dyn ResolvesServerCert>) -> rustls::ServerConfig {
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// Mutual TLS for gRPC: `cert` presented, a client certificate signed by one of the CAs of
/// `client_ca_pem` required, HTTP/2 only.
pub fn mtls_server_config(
    cert: Arc<dyn ResolvesServerCert>,
    client_ca_pem: &str,
) -> Result<rustls::ServerConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for der in files::ders(client_ca_pem) {
        roots
            .add(der)
            .map_err(|e| format!("client CA certificate: {e}"))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| format!("client CA: {e}"))?;
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
