//! The compiled matcher agrees with a naive reference matcher (a linear scan that applies
//! docs/src/policy.md#rules-and-matching literally) on random policies and random lookups.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use postern_policy::{
    CipherStrength, CompiledPolicy, Direction, Level, Match, Policy, Rule, Settings,
};
use proptest::prelude::*;

/// The most specific enabled rule by a literal reading of the product contract.
fn naive_ip(rules: &[Rule], ip: IpAddr) -> Option<&str> {
    rules
        .iter()
        .filter(|r| r.enabled)
        .filter_map(|r| match &r.matches {
            Match::Net(n) if n.contains(&ip) => Some((n.prefix_len(), r.id.as_str())),
            _ => None,
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, id)| id)
}

fn naive_domain<'a>(rules: &'a [Rule], domain: &str) -> Option<&'a str> {
    let enabled = || rules.iter().filter(|r| r.enabled);
    if let Some(r) = enabled().find(|r| r.matches == Match::Domain(domain.to_string())) {
        return Some(&r.id);
    }
    enabled()
        .filter_map(|r| match &r.matches {
            Match::Subdomains(p) if domain.ends_with(&format!(".{p}")) => {
                Some((p.split('.').count(), r.id.as_str()))
            }
            _ => None,
        })
        .max_by_key(|(labels, _)| *labels)
        .map(|(_, id)| id)
}

fn ipv4() -> impl Strategy<Value = Ipv4Addr> {
    // A narrow space, so rules and lookups collide often.
    (0u8..4, 0u8..4, any::<u8>()).prop_map(|(b, c, d)| Ipv4Addr::new(10, b, c, d))
}

fn ipv6() -> impl Strategy<Value = Ipv6Addr> {
    (0u16..4, 0u16..4, any::<u16>())
        .prop_map(|(a, b, c)| Ipv6Addr::new(0x2001, 0xdb8, a, b, 0, 0, 0, c))
}

fn domain() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec!["a", "b", "mx", "example", "com"]),
        1..5,
    )
    .prop_map(|labels| labels.join("."))
}

fn matches() -> impl Strategy<Value = Match> {
    prop_oneof![
        (ipv4(), 0u8..=32)
            .prop_map(|(ip, len)| Match::Net(IpNet::new(ip.into(), len).unwrap().trunc())),
        (ipv6(), 0u8..=128)
            .prop_map(|(ip, len)| Match::Net(IpNet::new(ip.into(), len).unwrap().trunc())),
        domain().prop_map(Match::Domain),
        domain().prop_map(Match::Subdomains),
    ]
}

fn rules() -> impl Strategy<Value = Vec<Rule>> {
    prop::collection::vec((matches(), any::<bool>(), 0usize..4), 0..60).prop_map(|specs| {
        let mut seen = std::collections::HashSet::new();
        specs
            .into_iter()
            .filter(|(m, _, _)| seen.insert(m.clone()))
            .enumerate()
            .map(|(i, (matches, enabled, level))| Rule {
                id: format!("r{i}"),
                matches,
                level: [Level::None, Level::May, Level::Encrypt, Level::Verify][level],
                cipher_strength: CipherStrength::Medium,
                enabled: enabled || i % 3 != 0,
                comment: String::new(),
            })
            .collect()
    })
}

fn compile(inbound: Vec<Rule>) -> CompiledPolicy {
    let outbound = inbound
        .iter()
        .filter(|r| !r.matches.is_ip())
        .cloned()
        .collect();
    let policy = Policy {
        inbound,
        outbound,
        ..Policy::default()
    };
    CompiledPolicy::compile(1, policy, Settings::default()).expect("compiles")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn ip_lookup_is_longest_prefix(rules in rules(), v4 in prop::collection::vec(ipv4(), 20), v6 in prop::collection::vec(ipv6(), 20)) {
        let compiled = compile(rules.clone());
        for ip in v4.into_iter().map(IpAddr::from).chain(v6.into_iter().map(IpAddr::from)) {
            let got = compiled.rule_for_ip(Direction::Inbound, ip).map(|r| r.id.as_str());
            prop_assert_eq!(got, naive_ip(&rules, ip), "ip {}", ip);
        }
    }

    #[test]
    fn ipv4_mapped_lookups_match_ipv4_rules(rules in rules(), v4 in prop::collection::vec(ipv4(), 20)) {
        let compiled = compile(rules.clone());
        for ip in v4 {
            let mapped = IpAddr::V6(ip.to_ipv6_mapped());
            let got = compiled.rule_for_ip(Direction::Inbound, mapped).map(|r| r.id.as_str());
            prop_assert_eq!(got, naive_ip(&rules, IpAddr::V4(ip)));
        }
    }

    #[test]
    fn domain_lookup_is_most_specific(rules in rules(), domains in prop::collection::vec(domain(), 20)) {
        let compiled = compile(rules.clone());
        let outbound: Vec<Rule> = rules.iter().filter(|r| !r.matches.is_ip()).cloned().collect();
        for d in domains {
            let got = compiled.rule_for_domain(Direction::Inbound, &d).map(|r| r.id.as_str());
            prop_assert_eq!(got, naive_domain(&rules, &d), "domain {}", &d);
            let rcpt = format!("user@{}", d.to_uppercase());
            let got = match compiled.outbound(&rcpt).level_rule {
                postern_policy::RuleRef::Rule(r) => Some(r.id.as_str()),
                postern_policy::RuleRef::Default(_) => None,
            };
            prop_assert_eq!(got, naive_domain(&outbound, &d), "recipient {}", &rcpt);
        }
    }

    #[test]
    fn match_parsing_round_trips(m in matches()) {
        let text = m.to_string();
        prop_assert_eq!(Match::parse(&text).unwrap(), m);
    }
}
