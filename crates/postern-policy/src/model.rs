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
    /// The rule's id, made by the server (a ULID).
    pub id: String,
    /// `192.0.2.0/24`, `2001:db8::1/128` (inbound only), `example.com` or `.example.com`.
    #[serde(rename = "match")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "example.com"))]
    pub matches: Match,
    /// The TLS level required of the peers the rule matches.
    pub level: Level,
    /// The cipher suites accepted where the level requires TLS.
    pub cipher_strength: CipherStrength,
    /// Disabled rules are kept but match nothing.
    pub enabled: bool,
    /// A note for operators; it does not affect matching.
    pub comment: String,
}

/// A rule as an operator writes it: the server normalises `match` and makes the id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RuleInput {
    /// An IP or CIDR (inbound only), `example.com`, or `.example.com` for its subdomains.
    #[serde(rename = "match")]
    #[cfg_attr(feature = "openapi", schema(example = ".example.com"))]
    pub matches: String,
    /// The TLS level required of the peers the rule matches.
    pub level: Level,
    /// The cipher suites accepted where the level requires TLS (default `medium`).
    #[serde(default)]
    pub cipher_strength: CipherStrength,
    /// Disabled rules are kept but match nothing (default `true`).
    #[serde(default = "enabled_by_default")]
    #[cfg_attr(feature = "openapi", schema(default = true))]
    pub enabled: bool,
    /// A note for operators, at most 1024 octets (default empty).
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
    /// The TLS level required when no rule matches.
    pub level: Level,
    /// The cipher suites accepted where the level requires TLS (default `medium`).
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
    /// Applies to clients that no inbound rule matches.
    pub inbound_default: DefaultRule,
    /// Applies to recipient domains that no outbound rule matches.
    pub outbound_default: DefaultRule,
    /// Rules for clients: by IP at connect, by sender domain at MAIL FROM.
    pub inbound: Vec<Rule>,
    /// Rules for deliveries, by recipient domain.
    pub outbound: Vec<Rule>,
    /// Relay domains with their next hops, and the networks trusted to relay.
    pub relay: Relay,
    /// The CAs trusted for `verify`.
    pub trust: Trust,
}

/// Which rule list: inbound (clients connecting to a worker) or outbound (the worker relaying).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Clients connecting to a worker.
    Inbound,
    /// The worker relaying mail to next hops.
    Outbound,
}

impl Direction {
    /// The name as serialised: `inbound` or `outbound`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

impl Policy {
    /// The rule list of `direction`.
    pub fn rules(&self, direction: Direction) -> &Vec<Rule> {
        match direction {
            Direction::Inbound => &self.inbound,
            Direction::Outbound => &self.outbound,
        }
    }

    /// The rule list of `direction`, for changing it.
    pub fn rules_mut(&mut self, direction: Direction) -> &mut Vec<Rule> {
        match direction {
            Direction::Inbound => &mut self.inbound,
            Direction::Outbound => &mut self.outbound,
        }
    }

    /// The default of `direction`'s rule list.
    pub fn default_rule(&self, direction: Direction) -> DefaultRule {
        match direction {
            Direction::Inbound => self.inbound_default,
            Direction::Outbound => self.outbound_default,
        }
    }

    /// The default of `direction`'s rule list, for changing it.
    pub fn default_rule_mut(&mut self, direction: Direction) -> &mut DefaultRule {
        match direction {
            Direction::Inbound => &mut self.inbound_default,
            Direction::Outbound => &mut self.outbound_default,
        }
    }
}
