//! TLS levels and cipher strengths. Their order is the order of strictness, which is what lets a
//! sender-domain rule "only tighten" the connect-time level with a plain `max`.

use serde::{Deserialize, Serialize};

/// How much TLS a peer must use. Ordered from loosest to strictest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Never STARTTLS.
    None,
    /// STARTTLS when possible; plaintext otherwise.
    May,
    /// TLS required; certificates not checked.
    Encrypt,
    /// TLS required and the peer's certificate must verify.
    Verify,
}

impl Level {
    /// Every level, from loosest to strictest.
    pub const ALL: [Level; 4] = [Level::None, Level::May, Level::Encrypt, Level::Verify];

    /// The name in rules and JSON: `none`, `may`, `encrypt` or `verify`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::May => "may",
            Level::Encrypt => "encrypt",
            Level::Verify => "verify",
        }
    }

    /// Whether TLS is mandatory, which is also where cipher strength is enforced.
    pub fn requires_tls(self) -> bool {
        self >= Level::Encrypt
    }
}

/// Which cipher suites are acceptable. `High` is stricter than OpenSSL's HIGH on purpose:
/// 256-bit suites only (AES-256-GCM and ChaCha20-Poly1305).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum CipherStrength {
    /// Every AEAD suite of 128 bits or more.
    #[default]
    Medium,
    /// 256-bit suites only.
    High,
}

impl CipherStrength {
    /// The name in rules and JSON: `medium` or `high`.
    pub fn as_str(self) -> &'static str {
        match self {
            CipherStrength::Medium => "medium",
            CipherStrength::High => "high",
        }
    }
}
