//! Precedence and decisions exactly as docs/src/policy.md (rules and matching, inbound, outbound)
//! states them.

use std::net::IpAddr;

use postern_policy::*;

fn rule(id: &str, m: &str, level: Level, strength: CipherStrength) -> Rule {
    Rule {
        id: id.into(),
        matches: Match::parse(m).unwrap(),
        level,
        cipher_strength: strength,
        enabled: true,
        comment: String::new(),
    }
}

fn id(r: RuleRef<'_>) -> &str {
    match r {
        RuleRef::Rule(r) => &r.id,
        RuleRef::Default(Direction::Inbound) => "inbound-default",
        RuleRef::Default(Direction::Outbound) => "outbound-default",
    }
}

fn policy() -> CompiledPolicy {
    use CipherStrength::*;
    use Level::*;
    let mut disabled = rule("off", "192.0.2.7", Verify, High);
    disabled.enabled = false;
    let inbound = vec![
        rule("net8", "10.0.0.0/8", Encrypt, Medium),
        rule("net24", "10.1.2.0/24", None, Medium),
        rule("host", "10.1.2.3", May, Medium),
        rule("v6", "2001:db8::/32", Encrypt, High),
        disabled,
        rule("bank", "bank.example", Encrypt, High),
        rule("banksubs", ".bank.example", Verify, Medium),
        rule("deep", ".eu.bank.example", Encrypt, Medium),
        rule("legacy", "legacy.example", None, Medium),
    ];
    let outbound = vec![
        rule("partner", "partner.example", Verify, Medium),
        rule("partnersubs", ".partner.example", Encrypt, High),
        rule("old", "old.example", None, Medium),
    ];
    let trust = Trust { ca_pems: vec![] };
    let policy = Policy {
        inbound_default: DefaultRule {
            level: Level::May,
            cipher_strength: Medium,
        },
        outbound_default: DefaultRule {
            level: Level::May,
            cipher_strength: Medium,
        },
        inbound,
        outbound,
        relay: Relay::default(),
        trust,
    };
    CompiledPolicy::compile(7, policy, Settings::default()).unwrap()
}

fn inbound<'a>(p: &'a CompiledPolicy, ip: &str, sender: Option<&'a str>) -> Evaluation<'a> {
    let ip: IpAddr = ip.parse().unwrap();
    p.evaluate(&Query {
        direction: Direction::Inbound,
        client_ip: Some(ip),
        sender,
        recipient: None,
        tls: None,
    })
}

#[test]
fn longest_prefix_wins_and_disabled_rules_never_match() {
    let p = policy();
    assert_eq!(
        id(p.inbound_connect(Some("10.1.2.3".parse().unwrap()))
            .level_rule),
        "host"
    );
    assert_eq!(
        id(p.inbound_connect(Some("10.1.2.4".parse().unwrap()))
            .level_rule),
        "net24"
    );
    assert_eq!(
        id(p.inbound_connect(Some("10.9.9.9".parse().unwrap()))
            .level_rule),
        "net8"
    );
    assert_eq!(
        id(p.inbound_connect(Some("::ffff:10.9.9.9".parse().unwrap()))
            .level_rule),
        "net8"
    );
    assert_eq!(
        id(p.inbound_connect(Some("192.0.2.7".parse().unwrap()))
            .level_rule),
        "inbound-default"
    );
    assert_eq!(id(p.inbound_connect(None).level_rule), "inbound-default");
}

#[test]
fn connect_decides_starttls_and_client_certificates() {
    let p = policy();
    let e = inbound(&p, "10.1.2.4", None);
    assert_eq!(e.decision.level, Level::None);
    assert!(!e.starttls_offered);
    // A sender-domain verify rule exists, so every session asks for a certificate.
    assert!(e.request_client_cert);
    let e = inbound(&p, "2001:db8::1", None);
    assert_eq!(
        (e.decision.level, e.decision.cipher_strength),
        (Level::Encrypt, CipherStrength::High)
    );
    assert!(e.starttls_offered);
}

#[test]
fn sender_rules_only_tighten() {
    let p = policy();
    // Connect-time encrypt/medium, sender exact rule encrypt/high: level stays with the IP
    // rule, strength comes from the sender rule.
    let e = inbound(&p, "10.9.9.9", Some("<a@Bank.Example>"));
    assert_eq!(e.decision.level, Level::Encrypt);
    assert_eq!(id(e.decision.level_rule), "net8");
    assert_eq!(e.decision.cipher_strength, CipherStrength::High);
    assert_eq!(id(e.decision.strength_rule.unwrap()), "bank");
    // The exact rule beats the parent rule; the parent with most labels beats a shorter one.
    assert_eq!(
        id(inbound(&p, "192.0.2.1", Some("x@mail.bank.example"))
            .decision
            .level_rule),
        "banksubs"
    );
    assert_eq!(
        id(inbound(&p, "192.0.2.1", Some("x@a.eu.bank.example"))
            .decision
            .level_rule),
        "deep"
    );
    // A looser sender rule cannot loosen the connect-time decision, and says so.
    let e = inbound(&p, "10.9.9.9", Some("x@legacy.example"));
    assert_eq!(e.decision.level, Level::Encrypt);
    assert_eq!(id(e.decision.level_rule), "net8");
    let codes: Vec<_> = e.warnings.iter().map(|w| w.code.as_str()).collect();
    assert_eq!(codes, ["sender_rule_none", "sender_rule_below_default"]);
    // A sender rule requiring TLS for a client that is never offered STARTTLS is flagged.
    let e = inbound(&p, "10.1.2.4", Some("x@bank.example"));
    assert_eq!(e.decision.level, Level::Encrypt);
    assert!(
        e.warnings
            .iter()
            .any(|w| w.code == "tls_required_not_offered")
    );
}

#[test]
fn null_sender_and_bare_names_match_no_domain() {
    let p = policy();
    for sender in ["<>", "", "postmaster", "x@[10.0.0.1]"] {
        let e = inbound(&p, "192.0.2.1", Some(sender));
        assert!(e.sender_rule.is_none(), "{sender}");
        assert_eq!(id(e.decision.level_rule), "inbound-default");
    }
}

#[test]
fn strength_is_not_reported_below_encrypt() {
    let p = policy();
    let e = inbound(&p, "192.0.2.1", None);
    assert_eq!(
        (e.decision.level, e.decision.cipher_strength),
        (Level::May, CipherStrength::Medium)
    );
    assert!(e.decision.strength_rule.is_none());
}

#[test]
fn outbound_uses_the_recipient_domain() {
    let p = policy();
    let out = |r: &str| {
        let e = p.evaluate(&Query {
            direction: Direction::Outbound,
            client_ip: None,
            sender: None,
            recipient: Some(r),
            tls: None,
        });
        (
            id(e.decision.level_rule).to_string(),
            e.decision.level,
            e.decision.cipher_strength,
        )
    };
    assert_eq!(
        out("a@partner.example"),
        ("partner".into(), Level::Verify, CipherStrength::Medium)
    );
    assert_eq!(
        out("a@mx.Partner.Example."),
        ("partnersubs".into(), Level::Encrypt, CipherStrength::High)
    );
    assert_eq!(
        out("a@elsewhere.example"),
        (
            "outbound-default".into(),
            Level::May,
            CipherStrength::Medium
        )
    );
}

#[test]
fn compile_refuses_duplicates_and_outbound_addresses() {
    let mut policy = Policy {
        inbound: vec![
            rule("a", "10.0.0.1", Level::May, CipherStrength::Medium),
            rule("b", "10.0.0.1/32", Level::None, CipherStrength::Medium),
        ],
        outbound: vec![rule("c", "10.0.0.0/8", Level::May, CipherStrength::Medium)],
        ..Policy::default()
    };
    policy.inbound[1].enabled = false;
    let err = CompiledPolicy::compile(1, policy, Settings::default()).unwrap_err();
    let pointers: Vec<_> = err.0.iter().map(|e| e.pointer.as_str()).collect();
    assert_eq!(
        pointers,
        ["/inbound/items/1/match", "/outbound/items/0/match"]
    );
}

#[test]
fn trusted_networks() {
    let policy = Policy {
        relay: Relay {
            domains: vec![],
            networks: vec!["127.0.0.0/8".into(), "::1/128".into()],
        },
        ..Policy::default()
    };
    let p = CompiledPolicy::compile(1, policy, Settings::default()).unwrap();
    assert!(p.is_trusted_network("127.0.0.1".parse().unwrap()));
    assert!(p.is_trusted_network("::ffff:127.0.0.1".parse().unwrap()));
    assert!(p.is_trusted_network("::1".parse().unwrap()));
    assert!(!p.is_trusted_network("192.0.2.1".parse().unwrap()));
}

#[test]
fn settings_defaults_and_validation() {
    let s = Settings::default();
    assert_eq!(s.smtp.max_message_size, 25 * 1024 * 1024);
    assert_eq!(s.queue.lifetime_s, 432_000);
    let mut bad = s.clone();
    bad.queue.max_retry_s = 10;
    bad.smtp.max_line = 80;
    bad.delivery.nameservers = vec!["127.0.0.1".into(), "nope".into()];
    let errs = bad.normalized().unwrap_err();
    let pointers: Vec<_> = errs.iter().map(|e| e.pointer.as_str()).collect();
    assert_eq!(
        pointers,
        [
            "/smtp/max_line",
            "/queue/max_retry_s",
            "/delivery/nameservers/1"
        ]
    );
}

#[test]
fn any_enabled_inbound_high_rule_makes_the_server_prefer_256_bit_suites() {
    let mut may_high = rule("a", "192.0.2.0/24", Level::May, CipherStrength::High);
    let compile = |inbound: Vec<Rule>| {
        CompiledPolicy::compile(
            1,
            Policy {
                inbound,
                ..Policy::default()
            },
            Settings::default(),
        )
        .unwrap()
    };
    assert!(compile(vec![may_high.clone()]).any_high);
    may_high.enabled = false;
    assert!(!compile(vec![may_high]).any_high);
    assert!(
        !compile(vec![rule(
            "b",
            "192.0.2.0/24",
            Level::Verify,
            CipherStrength::Medium
        )])
        .any_high
    );
}

#[test]
fn relay_domains_match_exactly_or_by_parent() {
    let policy = Policy {
        relay: Relay {
            domains: vec![
                RelayDomain {
                    domain: "example.com".into(),
                    next_hop: "mx".into(),
                },
                RelayDomain {
                    domain: ".example.net".into(),
                    next_hop: "[192.0.2.1]:25".into(),
                },
            ],
            networks: vec![],
        },
        ..Policy::default()
    };
    let p = CompiledPolicy::compile(1, policy, Settings::default()).unwrap();
    assert_eq!(p.relay_domain("example.com").unwrap().next_hop, "mx");
    assert!(p.relay_domain("sub.example.com").is_none());
    assert_eq!(
        p.relay_domain("mx.example.net").unwrap().next_hop,
        "[192.0.2.1]:25"
    );
    assert!(p.relay_domain("example.net").is_none());
}
