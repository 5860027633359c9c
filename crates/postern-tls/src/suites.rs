//! Cipher suites: IANA names for what the product shows (rustls's own names are
//! `TLS13_AES_256_GCM_SHA384` and `TLSv1_3`), cipher strength
//! (docs/src/policy.md#rules-and-matching: `high` is
//! AES-256-GCM and ChaCha20-Poly1305 only), and a provider per strength.

use rustls::crypto::CryptoProvider;
use rustls::{CipherSuite, ProtocolVersion};

/// The IANA name of a suite (`TLS_AES_256_GCM_SHA384`).
pub fn iana_suite(suite: CipherSuite) -> &'static str {
    match suite {
        CipherSuite::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        CipherSuite::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => {
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
        }
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => {
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
        }
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => {
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
        }
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => {
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
        }
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => {
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
        }
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => {
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"
        }
        _ => "unknown",
    }
}

/// `TLSv1.2` or `TLSv1.3` (the only versions rustls speaks).
pub fn iana_version(version: ProtocolVersion) -> &'static str {
    match version {
        ProtocolVersion::TLSv1_2 => "TLSv1.2",
        ProtocolVersion::TLSv1_3 => "TLSv1.3",
        _ => "unknown",
    }
}

/// The IANA name of a key exchange group (`x25519`, `secp256r1`, `X25519MLKEM768`).
pub fn iana_group(group: rustls::NamedGroup) -> &'static str {
    match group {
        rustls::NamedGroup::X25519 => "x25519",
        rustls::NamedGroup::X448 => "x448",
        other => other.as_str().unwrap_or("unknown"),
    }
}

/// Whether a suite meets `high`: 256-bit AES-GCM or ChaCha20-Poly1305.
pub fn is_256_bit(suite: CipherSuite) -> bool {
    iana_suite(suite).contains("AES_256_GCM") || iana_suite(suite).contains("CHACHA20_POLY1305")
}

/// The aws-lc-rs provider restricted to 256-bit suites (`high_only`) or all of them, with the
/// 256-bit suites first when `prefer_256` (docs/src/policy.md#rules-and-matching: any enabled high
/// rule).
pub fn provider(high_only: bool, prefer_256: bool) -> CryptoProvider {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider
        .cipher_suites
        .retain(|s| !high_only || is_256_bit(s.suite()));
    if prefer_256 {
        // A stable sort keeps the provider's order within each group.
        provider
            .cipher_suites
            .sort_by_key(|s| !is_256_bit(s.suite()));
    }
    provider
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_suite_of_the_provider_has_an_iana_name() {
        for suite in rustls::crypto::aws_lc_rs::ALL_CIPHER_SUITES {
            let name = iana_suite(suite.suite());
            assert_ne!(name, "unknown", "{:?}", suite.suite());
            assert!(
                name.starts_with("TLS_") && !name.starts_with("TLS13_"),
                "{name}"
            );
        }
        assert_eq!(iana_version(ProtocolVersion::TLSv1_3), "TLSv1.3");
        assert_eq!(iana_version(ProtocolVersion::TLSv1_2), "TLSv1.2");
    }

    #[test]
    fn strength_filters_and_orders() {
        let high = provider(true, false);
        assert!(!high.cipher_suites.is_empty());
        assert!(high.cipher_suites.iter().all(|s| is_256_bit(s.suite())));
        let medium = provider(false, true);
        assert!(medium.cipher_suites.iter().any(|s| !is_256_bit(s.suite())));
        let first_128 = medium
            .cipher_suites
            .iter()
            .position(|s| !is_256_bit(s.suite()))
            .unwrap();
        assert!(
            medium.cipher_suites[first_128..]
                .iter()
                .all(|s| !is_256_bit(s.suite()))
        );
    }
}
