//! The compiled policy: hash tables per prefix length for IP rules (longest prefix wins) and per
//! domain for domain rules (exact, else the `.parent` with the most labels), built once per policy
//! version and shared by every session that uses that version.

use std::hash::Hash;
use std::net::IpAddr;

use ipnet::IpNet;
use rustc_hash::FxHashMap;

use crate::error::{FieldError, ValidationErrors};
use crate::level::{CipherStrength, Level};
use crate::matching::Match;
use crate::model::{Direction, Policy, Rule};
use crate::settings::Settings;
use crate::validate::validate_rules;

/// A policy version ready for lookups. Building it validates what the lookups rely on, so a
/// worker can refuse (NACK) a snapshot that does not compile and keep its last good one.
#[derive(Debug)]
pub struct CompiledPolicy {
    /// The policy version this was compiled from.
    pub version: u64,
    /// The policy document the lookups index into.
    pub policy: Policy,
    /// The settings distributed with this version.
    pub settings: Settings,
    pub(crate) inbound: RuleIndex,
    pub(crate) outbound: RuleIndex,
    trusted: RuleIndex,
    /// Relay domains, as rules whose index points into `policy.relay.domains`.
    relay: RuleIndex,
    /// Some enabled inbound rule (or the inbound default) asks for 256-bit suites: the server
    /// then prefers them.
    pub any_high: bool,
    /// Some enabled inbound sender-domain rule is `verify`: every session requests a certificate.
    pub any_sender_verify: bool,
}

impl CompiledPolicy {
    /// Validates `policy` and `settings` and builds the lookup tables for version `version`.
    /// Errors point into the snapshot: `/inbound/items/0/match`, `/relay/...`, `/settings/...`.
    pub fn compile(
        version: u64,
        policy: Policy,
        settings: Settings,
    ) -> Result<Self, ValidationErrors> {
        let mut errors = Vec::new();
        for (direction, pointer) in [
            (Direction::Inbound, "/inbound"),
            (Direction::Outbound, "/outbound"),
        ] {
            let rules = policy.rules(direction);
            errors.extend(validate_rules(rules).into_iter().map(|e| e.under(pointer)));
            if direction == Direction::Outbound {
                for (i, r) in rules.iter().enumerate() {
                    if r.matches.is_ip() {
                        errors.push(FieldError::new(
                            format!("/outbound/items/{i}/match"),
                            "outbound rules cannot match addresses",
                        ));
                    }
                }
            }
        }
        let relay = policy.relay.normalized();
        if let Err(e) = &relay {
            errors.extend(e.iter().cloned().map(|e| e.under("/relay")));
        }
        errors.extend(
            policy
                .trust
                .validate()
                .into_iter()
                .map(|e| e.under("/trust")),
        );
        if let Err(e) = settings.normalized() {
            errors.extend(e.into_iter().map(|e| e.under("/settings")));
        }
        ValidationErrors::check(errors)?;

        let trusted_rules: Vec<Rule> = policy
            .relay
            .parsed_networks()
            .into_iter()
            .map(|net| Rule {
                id: String::new(),
                matches: Match::Net(net),
                level: Level::None,
                cipher_strength: CipherStrength::Medium,
                enabled: true,
                comment: String::new(),
            })
            .collect();
        let relay_rules: Vec<Rule> = policy
            .relay
            .domains
            .iter()
            .filter_map(|d| Match::parse(&d.domain).ok())
            .map(|matches| Rule {
                id: String::new(),
                matches,
                level: Level::None,
                cipher_strength: CipherStrength::Medium,
                enabled: true,
                comment: String::new(),
            })
            .collect();
        let enabled = |r: &&Rule| r.enabled;
        Ok(CompiledPolicy {
            version,
            inbound: RuleIndex::build(&policy.inbound),
            outbound: RuleIndex::build(&policy.outbound),
            trusted: RuleIndex::build(&trusted_rules),
            relay: RuleIndex::build(&relay_rules),
            // docs/src/policy.md#rules-and-matching: any enabled `high` rule, whatever its level,
            // makes the server
            // (inbound) prefer 256-bit suites.
            any_high: policy
                .inbound
                .iter()
                .filter(enabled)
                .any(|r| r.cipher_strength == CipherStrength::High)
                || policy.inbound_default.cipher_strength == CipherStrength::High,
            any_sender_verify: policy
                .inbound
                .iter()
                .filter(enabled)
                .any(|r| !r.matches.is_ip() && r.level == Level::Verify),
            policy,
            settings,
        })
    }

    /// The enabled rule of `direction` whose IP match is the longest prefix containing `ip`.
    pub fn rule_for_ip(&self, direction: Direction, ip: IpAddr) -> Option<&Rule> {
        let i = self.index(direction).lookup_ip(ip)?;
        Some(&self.policy.rules(direction)[i])
    }

    /// The enabled rule of `direction` for an already-normalised domain: exact, else the
    /// `.parent` rule with the most labels.
    pub fn rule_for_domain(&self, direction: Direction, domain: &str) -> Option<&Rule> {
        let i = self.index(direction).lookup_domain(domain)?;
        Some(&self.policy.rules(direction)[i])
    }

    /// Whether `ip` is in the relay's trusted networks.
    pub fn is_trusted_network(&self, ip: IpAddr) -> bool {
        self.trusted.lookup_ip(ip).is_some()
    }

    /// The relay domain an already-normalised recipient domain belongs to (exact, else the
    /// `.parent` entry with the most labels).
    pub fn relay_domain(&self, domain: &str) -> Option<&crate::relay::RelayDomain> {
        let i = self.relay.lookup_domain(domain)?;
        self.policy.relay.domains.get(i)
    }

    /// Where mail for `domain` goes: its relay domain's next hop, else the smart host, else
    /// `mx` (its MX hosts; the only case MTA-STS covers).
    pub fn next_hop(&self, domain: &str) -> &str {
        match self.relay_domain(domain) {
            Some(relay) => &relay.next_hop,
            None => self.settings.delivery.smart_host.as_deref().unwrap_or("mx"),
        }
    }

    fn index(&self, direction: Direction) -> &RuleIndex {
        match direction {
            Direction::Inbound => &self.inbound,
            Direction::Outbound => &self.outbound,
        }
    }
}

/// Lookup tables over one rule list; values are indexes into that list.
#[derive(Debug, Default)]
pub(crate) struct RuleIndex {
    v4: PrefixTable<u32>,
    v6: PrefixTable<u128>,
    exact: FxHashMap<Box<str>, usize>,
    parents: FxHashMap<Box<str>, usize>,
}

impl RuleIndex {
    fn build(rules: &[Rule]) -> Self {
        let mut index = RuleIndex::default();
        for (i, rule) in rules.iter().enumerate().filter(|(_, r)| r.enabled) {
            match &rule.matches {
                Match::Net(IpNet::V4(n)) => {
                    index.v4.insert(n.network().to_bits(), n.prefix_len(), i)
                }
                Match::Net(IpNet::V6(n)) => {
                    index.v6.insert(n.network().to_bits(), n.prefix_len(), i)
                }
                Match::Domain(d) => {
                    index.exact.insert(d.as_str().into(), i);
                }
                Match::Subdomains(d) => {
                    index.parents.insert(d.as_str().into(), i);
                }
            }
        }
        index.v4.finish();
        index.v6.finish();
        index
    }

    fn lookup_ip(&self, ip: IpAddr) -> Option<usize> {
        match ip.to_canonical() {
            IpAddr::V4(a) => self.v4.lookup(a.to_bits()),
            IpAddr::V6(a) => self.v6.lookup(a.to_bits()),
        }
    }

    fn lookup_domain(&self, domain: &str) -> Option<usize> {
        if let Some(&i) = self.exact.get(domain) {
            return Some(i);
        }
        if self.parents.is_empty() {
            return None;
        }
        // Proper suffixes from the longest (most labels) to the shortest.
        let mut rest = domain;
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(&i) = self.parents.get(parent) {
                return Some(i);
            }
            rest = parent;
        }
        None
    }
}

/// Address bits that can be masked to a prefix.
trait Bits: Copy + Eq + Hash + Default {
    const WIDTH: u8;
    fn masked(self, len: u8) -> Self;
}

impl Bits for u32 {
    const WIDTH: u8 = 32;
    fn masked(self, len: u8) -> Self {
        if len == 0 {
            0
        } else {
            self & (u32::MAX << (32 - u32::from(len)))
        }
    }
}

impl Bits for u128 {
    const WIDTH: u8 = 128;
    fn masked(self, len: u8) -> Self {
        if len == 0 {
            0
        } else {
            self & (u128::MAX << (128 - u32::from(len)))
        }
    }
}

/// One hash table per prefix length in use, longest first: a lookup probes at most one table
/// per distinct length (33 for IPv4), which stays well under a microsecond at 100,000 rules.
#[derive(Debug, Default)]
struct PrefixTable<K: Bits> {
    by_len: Vec<(u8, FxHashMap<K, usize>)>,
}

impl<K: Bits> PrefixTable<K> {
    fn insert(&mut self, network: K, len: u8, rule: usize) {
        debug_assert!(len <= K::WIDTH);
        match self.by_len.iter_mut().find(|(l, _)| *l == len) {
            Some((_, map)) => {
                map.insert(network, rule);
            }
            None => {
                let mut map = FxHashMap::default();
                map.insert(network, rule);
                self.by_len.push((len, map));
            }
        }
    }

    fn finish(&mut self) {
        self.by_len.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
    }

    fn lookup(&self, addr: K) -> Option<usize> {
        self.by_len
            .iter()
            .find_map(|(len, map)| map.get(&addr.masked(*len)).copied())
    }
}
