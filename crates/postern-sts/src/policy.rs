//! The policy file (RFC 8461 3.2), parsed strictly: `version: STSv1`, `mode`, `max_age` (at
//! most 31557600 s), in any order, and `mx` patterns (at least one unless the mode is `none`);
//! lines end in LF or CRLF; unknown fields are ignored, known ones may not repeat (but `mx`).
//! Anything else makes the policy invalid, which is a failure, not "no policy".

use serde::{Deserialize, Serialize};

/// RFC 8461 3.2: max_age is at most a year.
pub const MAX_AGE_LIMIT: u64 = 31_557_600;

/// A policy's `mode` (RFC 8461 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = StsMode))]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only matching MX hosts, over TLS with a verified certificate; else defer.
    Enforce,
    /// Deliver as without a policy; record what enforcing would have refused.
    Testing,
    /// As without a policy.
    None,
}

impl Mode {
    /// The wire name: `enforce`, `testing` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }

    /// The mode whose wire name is `s` (case-sensitive); `None` for anything else.
    pub fn parse(s: &str) -> Option<Mode> {
        [Mode::Enforce, Mode::Testing, Mode::None]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An `mx:` value: a host name, or `*.` and a name (the `*` stands for exactly one label).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MxPattern(String);

impl MxPattern {
    /// Parses an `mx` value: lowercased, a trailing dot dropped; the name must have two or more
    /// labels of letters, digits, `-` and `_` (not starting or ending with `-`).
    pub fn parse(text: &str) -> Result<MxPattern, PolicyError> {
        let lower = text.trim_end_matches('.').to_ascii_lowercase();
        let name = lower.strip_prefix("*.").unwrap_or(&lower);
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.len() > 253 || !name.contains('.') || !name.split('.').all(label_ok) {
            return Err(PolicyError::MxPattern(quoted(text)));
        }
        Ok(MxPattern(lower))
    }

    /// The pattern, lowercased and without a trailing dot (e.g. `*.example.net`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether MX host `host` matches (case-insensitively, a trailing dot ignored).
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match self.0.strip_prefix("*.") {
            Some(parent) => host
                .split_once('.')
                .is_some_and(|(first, rest)| !first.is_empty() && rest == parent),
            None => host == self.0,
        }
    }
}

/// A valid policy file (RFC 8461 3.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// `mode`: how strictly the policy is applied.
    pub mode: Mode,
    /// `max_age`: how long (seconds) the policy may be cached, at most `MAX_AGE_LIMIT`.
    pub max_age: u64,
    /// `mx`: the patterns of the allowed MX hosts; empty only in mode `none`.
    pub mx: Vec<MxPattern>,
}

/// Why a policy file is invalid (TLS-RPT's `sts-policy-invalid`). Values quoted from the file
/// are cut and escaped: they came from the network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A non-empty line (numbered from 1) without `:`.
    #[error("invalid MTA-STS policy: line {0} has no ':'")]
    NoColon(usize),
    /// A `version` other than `STSv1`, or a second one (the value, quoted).
    #[error("invalid MTA-STS policy: version {0} (only STSv1, once)")]
    Version(String),
    /// A `mode` other than `enforce`, `testing` or `none` (the value, quoted).
    #[error("invalid MTA-STS policy: mode {0}")]
    Mode(String),
    /// A `max_age` that is not a decimal number up to `MAX_AGE_LIMIT` (the value, quoted).
    #[error("invalid MTA-STS policy: max_age {0} (0 to {MAX_AGE_LIMIT})")]
    MaxAge(String),
    /// `mode` or `max_age` given twice (the field's name).
    #[error("invalid MTA-STS policy: {0} given twice")]
    Repeated(&'static str),
    /// An `mx` value that is neither a host name nor `*.` and one (the value, quoted).
    #[error("invalid MTA-STS policy: mx pattern {0} is not a host name or *.name")]
    MxPattern(String),
    /// A field name that is empty, over 32 characters or not of letters, digits, `_`, `-`, `.`.
    #[error("invalid MTA-STS policy: malformed field name {0}")]
    FieldName(String),
    /// No `mode` or no `max_age`.
    #[error("invalid MTA-STS policy: version, mode and max_age are required")]
    Missing,
    /// No `version` line.
    #[error("invalid MTA-STS policy: no version")]
    NoVersion,
    /// Mode `enforce` or `testing` without any `mx` line.
    #[error("invalid MTA-STS policy: mode {} without an mx", .0.as_str())]
    NoMx(Mode),
}

/// A value from the file as an error quotes it: at most 64 characters, escaped.
fn quoted(text: &str) -> String {
    let cut: String = text.chars().take(64).collect();
    format!("{cut:?}")
}

impl Policy {
    /// Parses a policy file strictly: LF or CRLF lines, fields in any order, extension fields
    /// ignored; any error means the policy is invalid.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let mut version = false;
        let (mut mode, mut max_age, mut mx) = (None, None, Vec::new());
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (n, raw) in text.split('\n').enumerate() {
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                return Err(PolicyError::NoColon(n + 1));
            };
            let value = value.trim_matches([' ', '\t']);
            match key {
                "version" if !version && value == "STSv1" => version = true,
                "version" => return Err(PolicyError::Version(quoted(value))),
                "mode" if mode.is_none() => match Mode::parse(value) {
                    Some(m) => mode = Some(m),
                    None => return Err(PolicyError::Mode(quoted(value))),
                },
                "max_age" if max_age.is_none() => {
                    let age = value.parse::<u64>().ok().filter(|a| {
                        value.len() <= 10
                            && value.bytes().all(|b| b.is_ascii_digit())
                            && *a <= MAX_AGE_LIMIT
                    });
                    match age {
                        Some(a) => max_age = Some(a),
                        None => return Err(PolicyError::MaxAge(quoted(value))),
                    }
                }
                "mode" => return Err(PolicyError::Repeated("mode")),
                "max_age" => return Err(PolicyError::Repeated("max_age")),
                "mx" => mx.push(MxPattern::parse(value)?),
                // Extension fields are ignored (RFC 8461 3.2), if well formed.
                k if !k.is_empty()
                    && k.len() <= 32
                    && k.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.'
                    }) => {}
                k => return Err(PolicyError::FieldName(quoted(k))),
            }
        }
        let (Some(mode), Some(max_age)) = (mode, max_age) else {
            return Err(PolicyError::Missing);
        };
        if !version {
            return Err(PolicyError::NoVersion);
        }
        if mode != Mode::None && mx.is_empty() {
            return Err(PolicyError::NoMx(mode));
        }
        Ok(Policy { mode, max_age, mx })
    }

    /// Whether MX host `host` is one the policy allows.
    pub fn allows(&self, host: &str) -> bool {
        self.mx.iter().any(|p| p.matches(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n";

    #[test]
    fn the_rfc_example_parses() {
        let p = Policy::parse(GOOD).unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, 604_800);
        let mx: Vec<&str> = p.mx.iter().map(MxPattern::as_str).collect();
        assert_eq!(
            mx,
            ["mail.example.com", "*.example.net", "backupmx.example.com"]
        );
        // LF line ends, blanks around values, extension fields and no trailing newline.
        let p = Policy::parse(
            "version: STSv1\nmode:testing \nmx:\tMX.Example.ORG.\nfoo_bar: 1\nmax_age: 0",
        )
        .unwrap();
        assert_eq!((p.mode, p.max_age), (Mode::Testing, 0));
        assert!(p.allows("mx.example.org"));
        let none = Policy::parse("version: STSv1\nmode: none\nmax_age: 86400\n").unwrap();
        assert_eq!(none.mode, Mode::None);
        // Fields in any order (RFC 8461 3.2's grammar), and a byte-order mark tolerated.
        let any =
            Policy::parse("\u{feff}mode: enforce\nmx: a.example\nmax_age: 5\nversion: STSv1\n")
                .unwrap();
        assert_eq!((any.mode, any.max_age), (Mode::Enforce, 5));
    }

    #[test]
    fn malformed_policies_are_failures() {
        for bad in [
            "",
            "version: STSv1\nversion: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n",
            "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n",
            "version: STSv1\nmode: enforcing\nmx: a.example\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmx: a.example\n",
            "version: STSv1\nmode: enforce\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n",
            "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n",
            "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\nmax_age: 2\n",
            "version: STSv1\nmode: enforce\nmode: testing\nmx: a.example\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmx: a.*.example\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmx: *example.com\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmx: localhost\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\nthis line has no colon\n",
            "<html><body>not found</body></html>",
        ] {
            assert!(Policy::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_wildcard_matches_exactly_one_leftmost_label() {
        let p = MxPattern::parse("*.example.net").unwrap();
        assert!(p.matches("mx1.example.net"));
        assert!(p.matches("MX1.EXAMPLE.NET."));
        assert!(!p.matches("example.net"));
        assert!(!p.matches("a.b.example.net"));
        assert!(!p.matches("mx1.example.net.evil"));
        assert!(!p.matches("mx1example.net"));
        let exact = MxPattern::parse("mail.example.com").unwrap();
        assert!(exact.matches("Mail.Example.com"));
        assert!(!exact.matches("x.mail.example.com"));
    }
}
