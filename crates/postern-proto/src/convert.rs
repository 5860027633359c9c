//! Conversions between `pb` and `postern_policy` types.

use postern_policy::{
    CipherStrength, DefaultRule, Level, Match, Policy, Relay, RelayDomain, Rule, Trust,
};

use crate::pb;

/// A snapshot field the worker cannot understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{field}: unknown or unspecified value {value}")]
    Enum { field: String, value: i32 },
    #[error("{field}: {detail}")]
    Invalid { field: String, detail: String },
    #[error("{0} is missing")]
    Missing(&'static str),
}

fn level_to(l: Level) -> pb::Level {
    match l {
        Level::None => pb::Level::None,
        Level::May => pb::Level::May,
        Level::Encrypt => pb::Level::Encrypt,
        Level::Verify => pb::Level::Verify,
    }
}

fn level_from(field: impl Fn() -> String, v: i32) -> Result<Level, WireError> {
    match pb::Level::try_from(v) {
        Ok(pb::Level::None) => Ok(Level::None),
        Ok(pb::Level::May) => Ok(Level::May),
        Ok(pb::Level::Encrypt) => Ok(Level::Encrypt),
        Ok(pb::Level::Verify) => Ok(Level::Verify),
        _ => Err(WireError::Enum {
            field: field(),
            value: v,
        }),
    }
}

fn strength_to(s: CipherStrength) -> pb::CipherStrength {
    match s {
        CipherStrength::Medium => pb::CipherStrength::Medium,
        CipherStrength::High => pb::CipherStrength::High,
    }
}

fn strength_from(field: impl Fn() -> String, v: i32) -> Result<CipherStrength, WireError> {
    match pb::CipherStrength::try_from(v) {
        Ok(pb::CipherStrength::Medium) => Ok(CipherStrength::Medium),
        Ok(pb::CipherStrength::High) => Ok(CipherStrength::High),
        _ => Err(WireError::Enum {
            field: field(),
            value: v,
        }),
    }
}

impl From<&DefaultRule> for pb::DefaultRule {
    fn from(d: &DefaultRule) -> Self {
        pb::DefaultRule {
            level: level_to(d.level).into(),
            cipher_strength: strength_to(d.cipher_strength).into(),
        }
    }
}

fn default_from(name: &'static str, d: Option<pb::DefaultRule>) -> Result<DefaultRule, WireError> {
    let d = d.ok_or(WireError::Missing(name))?;
    Ok(DefaultRule {
        level: level_from(|| format!("{name}.level"), d.level)?,
        cipher_strength: strength_from(|| format!("{name}.cipher_strength"), d.cipher_strength)?,
    })
}

impl From<&Rule> for pb::Rule {
    fn from(r: &Rule) -> Self {
        pb::Rule {
            id: r.id.clone(),
            r#match: r.matches.to_string(),
            level: level_to(r.level).into(),
            cipher_strength: strength_to(r.cipher_strength).into(),
            enabled: r.enabled,
            comment: r.comment.clone(),
        }
    }
}

fn rules_from(list: &'static str, rules: Vec<pb::Rule>) -> Result<Vec<Rule>, WireError> {
    rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let field = |f: &str| format!("{list}[{i}].{f}");
            Ok(Rule {
                matches: Match::parse(&r.r#match).map_err(|detail| WireError::Invalid {
                    field: field("match"),
                    detail,
                })?,
                level: level_from(|| field("level"), r.level)?,
                cipher_strength: strength_from(|| field("cipher_strength"), r.cipher_strength)?,
                id: r.id,
                enabled: r.enabled,
                comment: r.comment,
            })
        })
        .collect()
}

impl From<&Policy> for pb::Policy {
    fn from(p: &Policy) -> Self {
        pb::Policy {
            inbound_default: Some((&p.inbound_default).into()),
            outbound_default: Some((&p.outbound_default).into()),
            inbound: p.inbound.iter().map(Into::into).collect(),
            outbound: p.outbound.iter().map(Into::into).collect(),
            relay: Some(pb::Relay {
                domains: p
                    .relay
                    .domains
                    .iter()
                    .map(|d| pb::RelayDomain {
                        domain: d.domain.clone(),
                        next_hop: d.next_hop.clone(),
                    })
                    .collect(),
                networks: p.relay.networks.clone(),
            }),
            trust_ca_pems: p.trust.ca_pems.clone(),
        }
    }
}

impl TryFrom<pb::Policy> for Policy {
    type Error = WireError;

    fn try_from(p: pb::Policy) -> Result<Self, WireError> {
        let relay = p.relay.unwrap_or_default();
        Ok(Policy {
            inbound_default: default_from("inbound_default", p.inbound_default)?,
            outbound_default: default_from("outbound_default", p.outbound_default)?,
            inbound: rules_from("inbound", p.inbound)?,
            outbound: rules_from("outbound", p.outbound)?,
            relay: Relay {
                domains: relay
                    .domains
                    .into_iter()
                    .map(|d| RelayDomain {
                        domain: d.domain,
                        next_hop: d.next_hop,
                    })
                    .collect(),
                networks: relay.networks,
            },
            trust: Trust {
                ca_pems: p.trust_ca_pems,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, m: &str, level: Level) -> Rule {
        Rule {
            id: id.into(),
            matches: Match::parse(m).unwrap(),
            level,
            cipher_strength: CipherStrength::High,
            enabled: id != "b",
            comment: format!("rule {id}"),
        }
    }

    #[test]
    fn policy_round_trips() {
        let policy = Policy {
            inbound_default: DefaultRule {
                level: Level::Encrypt,
                cipher_strength: CipherStrength::High,
            },
            outbound_default: DefaultRule::default(),
            inbound: vec![
                rule("a", "10.0.0.0/8", Level::Verify),
                rule("b", ".example.com", Level::None),
            ],
            outbound: vec![rule("c", "example.org", Level::May)],
            relay: Relay {
                domains: vec![RelayDomain {
                    domain: "example.com".into(),
                    next_hop: "mx".into(),
                }],
                networks: vec!["127.0.0.0/8".into()],
            },
            trust: Trust {
                ca_pems: vec!["pem".into()],
            },
        };
        let wire = pb::Policy::from(&policy);
        assert_eq!(Policy::try_from(wire).unwrap(), policy);
    }

    #[test]
    fn invalid_wire_values_are_typed_errors() {
        let mut wire = pb::Policy::from(&Policy::default());
        wire.inbound.push(pb::Rule {
            r#match: "10.0.0.0/33".into(),
            level: 2,
            cipher_strength: 1,
            ..Default::default()
        });
        assert!(
            matches!(Policy::try_from(wire.clone()), Err(WireError::Invalid { field, .. }) if field == "inbound[0].match")
        );
        wire.inbound[0] = pb::Rule {
            r#match: "a.example".into(),
            level: 9,
            cipher_strength: 1,
            ..Default::default()
        };
        assert_eq!(
            Policy::try_from(wire.clone()).unwrap_err(),
            WireError::Enum {
                field: "inbound[0].level".into(),
                value: 9
            }
        );
        wire.inbound_default = None;
        assert_eq!(
            Policy::try_from(wire).unwrap_err(),
            WireError::Missing("inbound_default")
        );
    }
}
