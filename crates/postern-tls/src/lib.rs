//! TLS plumbing shared by the control plane, the workers and the binary: the one rustls crypto
//! provider (aws-lc-rs, DESIGN.md "Traps"), reading certificate files with errors that name
//! them, the PKI `postern dev` and the tests generate, and certificate name checks.

#![forbid(unsafe_code)]

pub mod files;
pub mod names;
pub mod pki;

/// Installs aws-lc-rs as the process's rustls provider. Call it first in `main` and in tests;
/// calling it again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
