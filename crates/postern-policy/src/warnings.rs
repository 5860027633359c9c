//! Warnings returned with writes and evaluations: allowed configurations that an operator probably
//! did not mean, or should know the consequences of (docs/src/policy.md#inbound).

use serde::{Deserialize, Serialize};

use crate::level::{CipherStrength, Level};
use crate::matching::Match;
use crate::model::{DefaultRule, Direction, Rule};

/// A configuration that is allowed but probably not meant, or has consequences to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Warning {
    /// Stable machine-readable code, e.g. `sender_rule_none`.
    pub code: String,
    /// An explanation for people.
    pub detail: String,
}

impl Warning {
    pub(crate) fn new(code: &str, detail: String) -> Self {
        Warning {
            code: code.to_string(),
            detail,
        }
    }
}

/// Warnings about one rule in the context of its list's default.
pub fn rule_warnings(rule: &Rule, direction: Direction, default: DefaultRule) -> Vec<Warning> {
    let mut out = Vec::new();
    if !rule.enabled {
        return out;
    }
    let sender_rule = direction == Direction::Inbound && !matches!(rule.matches, Match::Net(_));
    if sender_rule && rule.level == Level::None {
        out.push(Warning::new(
            "sender_rule_none",
            format!(
                "sender-domain rule '{}' is 'none': it cannot loosen the connect-time level, and \
                 an encrypted session whose connect-time level is 'may' gets \
                 '421 4.7.0 <sender>: Sender address rejected: Must not use TLS'",
                rule.matches
            ),
        ));
    }
    if sender_rule && rule.level < default.level {
        out.push(Warning::new(
            "sender_rule_below_default",
            format!(
                "sender-domain rule '{}' is '{}', below the inbound default '{}': sender domains \
                 can be forged, and a sender rule only tightens the connect-time level",
                rule.matches,
                rule.level.as_str(),
                default.level.as_str()
            ),
        ));
    }
    if rule.cipher_strength == CipherStrength::High && !rule.level.requires_tls() {
        out.push(Warning::new(
            "cipher_strength_ignored",
            format!(
                "rule '{}' asks for 'high' ciphers at level '{}'; strength is enforced only at \
                 'encrypt' and 'verify'",
                rule.matches,
                rule.level.as_str()
            ),
        ));
    }
    out
}
