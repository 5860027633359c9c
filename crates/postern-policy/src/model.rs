//! The policy document: two rule lists with their defaults, relay control and trusted CAs.

use serde::{Deserialize, Serialize};

use crate::level::{CipherStrength, Level};
use crate::matching::Match;
use crate::relay::Relay;
use crate::trust::Trust;

/// A stored rule. Ids are made by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rule {
    pub id: String,
    /// `192.0.2.0/24`, `2001:db8::1/128` (inbound only), `example.com` or `.example.com`.
    #[serde(rename = "match")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "example.com"))]
    pub matches: Match,
    pub level: Level,
    pub cipher_strength: CipherStrength,
    pub enabled: bool,
    pub comment: String,
}

/// A rule as an operator writes it: the server normalises `match` and makes the id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RuleInput {
    #[serde(rename = "match")]
    #[cfg_attr(feature = "openapi", schema(example = ".example.com"))]
    pub matches: String,
    pub level: Level,
    #[serde(default)]
    pub cipher_strength: CipherStrength,
    #[serde(default = "enabled_by_default")]
    #[cfg_attr(feature = "openapi", schema(default = true))]
    pub enabled: bool,
    #[serde(default)]
    pub comment: String,
}

fn enabled_by_default() -> bool {
    true
}

/// The entry used when no rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DefaultRule {
    pub level: Level,
    #[serde(default)]
    pub cipher_strength: CipherStrength,
}

impl Default for DefaultRule {
    fn default() -> Self {
        DefaultRule {
            level: Level::May,
            cipher_strength: CipherStrength::Medium,
        }
    }
}

/// Everything a worker enforces except settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub inbound_default: DefaultRule,
    pub outbound_default: DefaultRule,
    pub inbound: Vec<Rule>,
    pub outbound: Vec<Rule>,
    pub relay: Relay,
    pub trust: Trust,
}

/// Which rule list: inbound (clients connecting to a worker) or outbound (the worker relaying).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

impl Policy {
    pub fn rules(&self, direction: Direction) -> &Vec<Rule> {
        match direction {
            Direction::Inbound => &self.inbound,
            Direction::Outbound => &self.outbound,
        }
    }

    pub fn rules_mut(&mut self, direction: Direction) -> &mut Vec<Rule> {
        match direction {
            Direction::Inbound => &mut self.inbound,
            Direction::Outbound => &mut self.outbound,
        }
    }

    pub fn default_rule(&self, direction: Direction) -> DefaultRule {
        match direction {
            Direction::Inbound => self.inbound_default,
            Direction::Outbound => self.outbound_default,
        }
    }

    pub fn default_rule_mut(&mut self, direction: Direction) -> &mut DefaultRule {
        match direction {
            Direction::Inbound => &mut self.inbound_default,
            Direction::Outbound => &mut self.outbound_default,
        }
    }
}
