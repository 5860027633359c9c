//! The TLS-RPT vocabulary (RFC 8460 4.3, 4.4): result types and policy types as enums with
//! their wire names, so that a mode, a result or a policy type is never a string past the edge
//! where it is read or written.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a session failed (RFC 8460 4.3.2), or a registry value we do not know yet. Ordered by
/// wire name (the order of a report's failure details).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ResultType {
    // Negotiation failures (4.3.2.1).
    /// `starttls-not-supported`: the MX host did not offer STARTTLS.
    StartTlsNotSupported,
    /// `certificate-host-mismatch`: the certificate does not name the MX host.
    CertificateHostMismatch,
    /// `certificate-expired`: the certificate has expired.
    CertificateExpired,
    /// `certificate-not-trusted`: the certificate does not chain to a trusted root.
    CertificateNotTrusted,
    /// `validation-failure`: a negotiation failure of another kind.
    ValidationFailure,
    // DANE policy failures (4.3.2.2).
    /// `tlsa-invalid`: none of the TLSA records is valid.
    TlsaInvalid,
    /// `dnssec-invalid`: no valid DNSSEC-signed records could be obtained.
    DnssecInvalid,
    /// `dane-required`: DANE was required but no TLSA records were found.
    DaneRequired,
    // MTA-STS policy failures (4.3.2.3).
    /// `sts-policy-fetch-error`: the MTA-STS policy could not be fetched.
    StsPolicyFetchError,
    /// `sts-policy-invalid`: the fetched MTA-STS policy is not valid.
    StsPolicyInvalid,
    /// `sts-webpki-invalid`: the policy host's certificate failed validation.
    StsWebpkiInvalid,
    /// A value from another organisation's report that is not one of the above (the IANA
    /// registry grows): kept as received, printable ASCII, at most `MAX_UNREGISTERED` bytes.
    Unregistered(String),
}

/// The longest unregistered result type kept from a received report.
pub const MAX_UNREGISTERED: usize = 64;

impl ResultType {
    /// Every registered result type, in RFC 8460 4.3.2's order.
    pub const REGISTERED: [ResultType; 11] = [
        ResultType::StartTlsNotSupported,
        ResultType::CertificateHostMismatch,
        ResultType::CertificateExpired,
        ResultType::CertificateNotTrusted,
        ResultType::ValidationFailure,
        ResultType::TlsaInvalid,
        ResultType::DnssecInvalid,
        ResultType::DaneRequired,
        ResultType::StsPolicyFetchError,
        ResultType::StsPolicyInvalid,
        ResultType::StsWebpkiInvalid,
    ];

    /// The wire name (an unregistered value as received).
    pub fn as_str(&self) -> &str {
        match self {
            ResultType::StartTlsNotSupported => "starttls-not-supported",
            ResultType::CertificateHostMismatch => "certificate-host-mismatch",
            ResultType::CertificateExpired => "certificate-expired",
            ResultType::CertificateNotTrusted => "certificate-not-trusted",
            ResultType::ValidationFailure => "validation-failure",
            ResultType::TlsaInvalid => "tlsa-invalid",
            ResultType::DnssecInvalid => "dnssec-invalid",
            ResultType::DaneRequired => "dane-required",
            ResultType::StsPolicyFetchError => "sts-policy-fetch-error",
            ResultType::StsPolicyInvalid => "sts-policy-invalid",
            ResultType::StsWebpkiInvalid => "sts-webpki-invalid",
            ResultType::Unregistered(s) => s,
        }
    }

    /// The registered type named `s`; `None` for anything else.
    pub fn registered(s: &str) -> Option<ResultType> {
        Self::REGISTERED.into_iter().find(|r| r.as_str() == s)
    }

    /// A value read from outside: registered, or an unregistered one if it is a short token of
    /// printable ASCII without spaces (anything else is not a result type).
    pub fn parse(s: &str) -> Option<ResultType> {
        Self::registered(s).or_else(|| {
            let token = !s.is_empty()
                && s.len() <= MAX_UNREGISTERED
                && s.bytes().all(|b| b.is_ascii_graphic());
            token.then(|| ResultType::Unregistered(s.to_string()))
        })
    }
}

impl Ord for ResultType {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for ResultType {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for ResultType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ResultType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ResultType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ResultType::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "not a TLS-RPT result type: {:?}",
                s.chars().take(MAX_UNREGISTERED).collect::<String>()
            ))
        })
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for ResultType {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .description(Some(
                "A TLS-RPT result type (RFC 8460 4.3): one of the registered values, or a \
                 token of printable ASCII from another organisation's report.",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ResultType {}

/// The policy a report entry describes (RFC 8460 4.4: `policy-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum PolicyType {
    /// `tlsa`: a DANE TLSA policy.
    Tlsa,
    /// `sts`: an MTA-STS policy.
    Sts,
    /// `no-policy-found`: no policy applied.
    NoPolicyFound,
}

impl PolicyType {
    /// The wire name: `tlsa`, `sts` or `no-policy-found`.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyType::Tlsa => "tlsa",
            PolicyType::Sts => "sts",
            PolicyType::NoPolicyFound => "no-policy-found",
        }
    }
}

impl fmt::Display for PolicyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for r in ResultType::REGISTERED {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
            assert_eq!(serde_json::from_str::<ResultType>(&json).unwrap(), r);
        }
        for p in [PolicyType::Tlsa, PolicyType::Sts, PolicyType::NoPolicyFound] {
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{p}\""));
            assert_eq!(serde_json::from_str::<PolicyType>(&json).unwrap(), p);
        }
    }

    #[test]
    fn an_unknown_result_type_is_kept_only_as_a_short_token() {
        assert_eq!(
            ResultType::parse("future-failure"),
            Some(ResultType::Unregistered("future-failure".into()))
        );
        assert_eq!(ResultType::registered("future-failure"), None);
        for bad in ["", "a b", "x\r\ny", &"x".repeat(65)] {
            assert_eq!(ResultType::parse(bad), None, "{bad:?}");
            assert!(serde_json::from_str::<ResultType>(&format!("{bad:?}")).is_err());
        }
    }
}
