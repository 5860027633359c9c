//! How a peer's certificate was judged: one type for the TLS code that judges it, the events
//! that carry it and tracking that shows it.

use std::fmt;

/// A peer's certificate (the client's inbound, the next hop's outbound). Users see three values
/// (docs/src/smtp.md, interfaces.md: verified, unverified, none); the two ways of being unverified
/// are kept
/// apart because outbound `verify` defers them with different texts (and TLS reporting tells
/// them apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Certificate {
    /// Chains to a trusted CA (and, for a next hop, names the reference identity).
    Verified,
    /// Chains to a trusted CA but does not name the reference identity.
    NameMismatch,
    /// Does not chain to a trusted CA.
    Untrusted,
    /// Would chain, but is past its validity (rustls's `CertificateError::Expired`): not
    /// trusted either, told apart because TLS-RPT reports `certificate-expired`.
    Expired,
    /// No certificate presented.
    None,
}

impl Certificate {
    /// The value users see.
    pub fn as_str(self) -> &'static str {
        match self {
            Certificate::Verified => "verified",
            Certificate::NameMismatch | Certificate::Untrusted | Certificate::Expired => {
                "unverified"
            }
            Certificate::None => "none",
        }
    }

    /// The detailed name (wire and logs).
    pub fn detail(self) -> &'static str {
        match self {
            Certificate::Verified => "verified",
            Certificate::NameMismatch => "name_mismatch",
            Certificate::Untrusted => "untrusted",
            Certificate::Expired => "expired",
            Certificate::None => "none",
        }
    }

    /// Whether the certificate verified.
    pub fn is_verified(self) -> bool {
        self == Certificate::Verified
    }
}

impl fmt::Display for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// Serialised as users see it; read back, `unverified` is `Untrusted` (what a stored view needs;
// the wire keeps the detail in its own enum).
impl serde::Serialize for Certificate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Certificate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "verified" => Ok(Certificate::Verified),
            "unverified" | "untrusted" => Ok(Certificate::Untrusted),
            "name_mismatch" => Ok(Certificate::NameMismatch),
            "expired" => Ok(Certificate::Expired),
            "none" => Ok(Certificate::None),
            other => Err(serde::de::Error::unknown_variant(
                other,
                &["verified", "unverified", "none"],
            )),
        }
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Certificate {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .enum_values(Some(["verified", "unverified", "none"]))
            .description(Some("How the peer's certificate was judged."))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Certificate {}
