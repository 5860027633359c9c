//! The change log: each policy version records the operations that made it, not a copy of the
//! whole policy, so 100,000 rules cost one copy however many versions follow. Replaying the log
//! from version 1 rebuilds any version (rollback).

use postern_policy::{DefaultRule, Direction, Relay, Rule, Settings, Trust};
use serde::{Deserialize, Serialize};

/// One operation on the policy state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Create a rule, or replace the rule with the same id.
    PutRule {
        direction: Direction,
        rule: Rule,
    },
    DeleteRule {
        direction: Direction,
        id: String,
    },
    ReplaceRules {
        direction: Direction,
        rules: Vec<Rule>,
    },
    SetDefault {
        direction: Direction,
        default: DefaultRule,
    },
    SetRelay {
        relay: Relay,
    },
    SetTrust {
        trust: Trust,
    },
    SetSettings {
        settings: Box<Settings>,
    },
}

/// The record of one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub version: u64,
    /// RFC 3339.
    pub at: String,
    pub actor: String,
    pub summary: String,
    pub ops: Vec<Op>,
}
