//! The current policy state in memory: the rules by id (ULIDs, so in creation order) with an
//! index of their matches for duplicate checks, the singleton documents and the version. The
//! store is the source of truth; this is rebuilt from it at start and kept in step on each write.

use std::collections::{BTreeMap, HashMap};

use postern_policy::{DefaultRule, Direction, Level, Match, Policy, Relay, Rule, Settings, Trust};

use crate::change::Op;
use crate::store::{Doc, DocWrite, Loaded, RuleWrite};

#[derive(Debug, Clone, Default)]
pub struct State {
    pub version: u64,
    rules: [BTreeMap<String, Rule>; 2],
    matches: [HashMap<Match, String>; 2],
    pub inbound_default: DefaultRule,
    pub outbound_default: DefaultRule,
    pub relay: Relay,
    pub trust: Trust,
    pub settings: Settings,
}

fn slot(direction: Direction) -> usize {
    match direction {
        Direction::Inbound => 0,
        Direction::Outbound => 1,
    }
}

fn is_inbound_verify(rule: &Rule) -> bool {
    rule.enabled && rule.level == Level::Verify
}

impl State {
    pub fn from_loaded(l: Loaded) -> Self {
        let mut s = State {
            version: l.version,
            inbound_default: l.inbound_default.unwrap_or_default(),
            outbound_default: l.outbound_default.unwrap_or_default(),
            relay: l.relay.unwrap_or_default(),
            trust: l.trust.unwrap_or_default(),
            settings: l.settings.unwrap_or_default(),
            ..State::default()
        };
        s.replace_rules(Direction::Inbound, l.inbound);
        s.replace_rules(Direction::Outbound, l.outbound);
        s
    }

    pub fn rules(&self, direction: Direction) -> &BTreeMap<String, Rule> {
        &self.rules[slot(direction)]
    }

    /// The id of the rule (enabled or not) with this match in `direction`.
    pub fn rule_with_match(&self, direction: Direction, m: &Match) -> Option<&str> {
        self.matches[slot(direction)].get(m).map(String::as_str)
    }

    pub fn default_rule(&self, direction: Direction) -> DefaultRule {
        match direction {
            Direction::Inbound => self.inbound_default,
            Direction::Outbound => self.outbound_default,
        }
    }

    /// The whole policy as one document (what workers receive and `GET /v1/policy` shows).
    pub fn policy(&self) -> Policy {
        Policy {
            inbound_default: self.inbound_default,
            outbound_default: self.outbound_default,
            inbound: self.rules[0].values().cloned().collect(),
            outbound: self.rules[1].values().cloned().collect(),
            relay: self.relay.clone(),
            trust: self.trust.clone(),
        }
    }

    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::PutRule { direction, rule } => {
                self.remove_rule(*direction, &rule.id);
                let s = slot(*direction);
                self.matches[s].insert(rule.matches.clone(), rule.id.clone());
                self.rules[s].insert(rule.id.clone(), rule.clone());
            }
            Op::DeleteRule { direction, id } => self.remove_rule(*direction, id),
            Op::ReplaceRules { direction, rules } => self.replace_rules(*direction, rules.clone()),
            Op::SetDefault { direction, default } => match direction {
                Direction::Inbound => self.inbound_default = *default,
                Direction::Outbound => self.outbound_default = *default,
            },
            Op::SetRelay { relay } => self.relay = relay.clone(),
            Op::SetTrust { trust } => self.trust = trust.clone(),
            Op::SetSettings { settings } => self.settings = (**settings).clone(),
        }
    }

    fn remove_rule(&mut self, direction: Direction, id: &str) {
        let s = slot(direction);
        if let Some(old) = self.rules[s].remove(id)
            && self.matches[s]
                .get(&old.matches)
                .is_some_and(|owner| owner == id)
        {
            // A rollback may already have given this match to another rule.
            self.matches[s].remove(&old.matches);
        }
    }

    fn replace_rules(&mut self, direction: Direction, rules: Vec<Rule>) {
        let s = slot(direction);
        self.matches[s] = rules
            .iter()
            .map(|r| (r.matches.clone(), r.id.clone()))
            .collect();
        self.rules[s] = rules.into_iter().map(|r| (r.id.clone(), r)).collect();
    }

    /// What the store must write for `ops` applied to this state: rules to put or remove, and
    /// singleton documents as JSON.
    pub fn delta(&self, ops: &[Op]) -> (Vec<RuleWrite>, Vec<DocWrite>) {
        let mut rules = Vec::new();
        let mut docs = Vec::new();
        for op in ops {
            match op {
                Op::PutRule { direction, rule } => {
                    rules.push((*direction, rule.id.clone(), Some(rule.clone())));
                }
                Op::DeleteRule { direction, id } => rules.push((*direction, id.clone(), None)),
                Op::ReplaceRules {
                    direction,
                    rules: new,
                } => {
                    let keep: std::collections::HashSet<&str> =
                        new.iter().map(|r| r.id.as_str()).collect();
                    rules.extend(
                        self.rules(*direction)
                            .keys()
                            .filter(|id| !keep.contains(id.as_str()))
                            .map(|id| (*direction, id.clone(), None)),
                    );
                    rules.extend(
                        new.iter()
                            .map(|r| (*direction, r.id.clone(), Some(r.clone()))),
                    );
                }
                Op::SetDefault { direction, default } => docs.push((
                    match direction {
                        Direction::Inbound => Doc::InboundDefault,
                        Direction::Outbound => Doc::OutboundDefault,
                    },
                    json(default),
                )),
                Op::SetRelay { relay } => docs.push((Doc::Relay, json(relay))),
                Op::SetTrust { trust } => docs.push((Doc::Trust, json(trust))),
                Op::SetSettings { settings } => docs.push((Doc::Settings, json(settings))),
            }
        }
        (rules, docs)
    }

    /// docs/src/policy.md#inbound: after `ops`, would an enabled inbound `verify` rule (or default)
    /// stand
    /// while `/v1/trust` is empty? Returns what is wrong, if so.
    pub fn trust_conflict_after(&self, ops: &[Op]) -> Option<String> {
        let trust_empty_after = ops
            .iter()
            .rev()
            .find_map(|op| match op {
                Op::SetTrust { trust } => Some(trust.ca_pems.is_empty()),
                _ => None,
            })
            .unwrap_or(self.trust.ca_pems.is_empty());
        if !trust_empty_after {
            return None;
        }
        let inbound = &self.rules[0];
        // Every write keeps this invariant, so with no CA trusted now there is no enabled verify
        // rule to count: the common case stays O(ops), not O(rules).
        let mut verify: isize = if self.trust.ca_pems.is_empty() {
            0
        } else {
            inbound.values().filter(|r| is_inbound_verify(r)).count() as isize
        };
        let mut default_verify = self.inbound_default.level == Level::Verify;
        let old_verify = |id: &str| inbound.get(id).is_some_and(is_inbound_verify) as isize;
        for op in ops {
            match op {
                Op::PutRule {
                    direction: Direction::Inbound,
                    rule,
                } => {
                    verify += is_inbound_verify(rule) as isize - old_verify(&rule.id);
                }
                Op::DeleteRule {
                    direction: Direction::Inbound,
                    id,
                } => verify -= old_verify(id),
                Op::ReplaceRules {
                    direction: Direction::Inbound,
                    rules,
                } => {
                    verify = rules.iter().filter(|r| is_inbound_verify(r)).count() as isize;
                }
                Op::SetDefault {
                    direction: Direction::Inbound,
                    default,
                } => {
                    default_verify = default.level == Level::Verify;
                }
                _ => {}
            }
        }
        if default_verify {
            Some("the inbound default would be 'verify' while /v1/trust holds no CA".into())
        } else if verify > 0 {
            Some(format!(
                "{verify} enabled inbound 'verify' rule(s) would stand while /v1/trust holds no CA"
            ))
        } else {
            None
        }
    }

    /// The operations that turn this state into `target` (for rollback).
    pub fn diff_to(&self, target: &State) -> Vec<Op> {
        let mut ops = Vec::new();
        for direction in [Direction::Inbound, Direction::Outbound] {
            let (now, then) = (self.rules(direction), target.rules(direction));
            ops.extend(
                now.keys()
                    .filter(|id| !then.contains_key(*id))
                    .map(|id| Op::DeleteRule {
                        direction,
                        id: id.clone(),
                    }),
            );
            ops.extend(
                then.values()
                    .filter(|r| now.get(&r.id) != Some(r))
                    .map(|r| Op::PutRule {
                        direction,
                        rule: r.clone(),
                    }),
            );
            if self.default_rule(direction) != target.default_rule(direction) {
                ops.push(Op::SetDefault {
                    direction,
                    default: target.default_rule(direction),
                });
            }
        }
        if self.relay != target.relay {
            ops.push(Op::SetRelay {
                relay: target.relay.clone(),
            });
        }
        if self.trust != target.trust {
            ops.push(Op::SetTrust {
                trust: target.trust.clone(),
            });
        }
        if self.settings != target.settings {
            ops.push(Op::SetSettings {
                settings: Box::new(target.settings.clone()),
            });
        }
        ops
    }
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("our types serialise")
}
