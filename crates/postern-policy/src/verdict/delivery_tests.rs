//! The delivery plan without sockets: precedence (rule > MTA-STS > default), every MTA-STS
//! mode, the `TLS-Required: No` cap, the MX filter, and every result type an attempt can earn.

use postern_sts::{Mode, MxPattern, Policy, ResultType};

use super::*;
use crate::{
    CipherStrength, CompiledPolicy, DefaultRule, Level, Match, Policy as Rules, Relay, Rule,
    Settings, Trust,
};

/// Outbound `rules` over the outbound default `default`, MTA-STS on or off.
fn compiled_over(default: Level, rules: &[(&str, Level)], mta_sts: bool) -> CompiledPolicy {
    let rules = Rules {
        inbound_default: DefaultRule {
            level: Level::May,
            cipher_strength: CipherStrength::Medium,
        },
        outbound_default: DefaultRule {
            level: default,
            cipher_strength: CipherStrength::Medium,
        },
        inbound: vec![],
        outbound: rules
            .iter()
            .map(|(m, level)| Rule {
                id: format!("r-{m}"),
                matches: Match::parse(m).unwrap(),
                level: *level,
                cipher_strength: CipherStrength::High,
                enabled: true,
                comment: String::new(),
            })
            .collect(),
        relay: Relay::default(),
        trust: Trust { ca_pems: vec![] },
    };
    let mut settings = Settings::default();
    settings.delivery.mta_sts = mta_sts;
    CompiledPolicy::compile(1, rules, settings).unwrap()
}

/// The same over the default `may`.
fn compiled(rules: &[(&str, Level)], mta_sts: bool) -> CompiledPolicy {
    compiled_over(Level::May, rules, mta_sts)
}

fn sts(mode: Mode) -> Policy {
    Policy {
        mode,
        max_age: 86_400,
        mx: vec![MxPattern::parse("*.partner.example").unwrap()],
    }
}

fn plan(
    p: &CompiledPolicy,
    domain: &str,
    mx: bool,
    tls_optional: bool,
    known: Option<&Policy>,
) -> DeliveryPlan {
    p.delivery_plan(&Destination {
        domain,
        mx,
        tls_optional,
        mta_sts: known.map(|policy| KnownPolicy {
            id: "20261208",
            policy,
        }),
    })
}

fn applied(mode: Mode, failure: Option<ResultType>) -> PolicySource {
    PolicySource::MtaSts(StsApplied {
        id: "20261208".into(),
        mode,
        failure,
    })
}

#[test]
fn a_local_rule_beats_mta_sts_which_beats_the_default() {
    let p = compiled(&[("ruled.example", Level::Encrypt)], true);
    let enforce = sts(Mode::Enforce);

    let ruled = plan(&p, "ruled.example", true, false, Some(&enforce));
    assert_eq!(
        ruled.source,
        PolicySource::Rule {
            id: "r-ruled.example".into()
        }
    );
    assert_eq!(ruled.overridden, [Overridden::MtaSts, Overridden::Default]);
    assert_eq!(
        (ruled.level, ruled.strength),
        (Level::Encrypt, CipherStrength::High)
    );
    assert!(!ruled.consults_mta_sts && ruled.sts.is_none());
    let without = plan(&p, "ruled.example", true, false, None);
    assert_eq!(without.overridden, [Overridden::Default]);

    let published = plan(&p, "partner.example", true, false, Some(&enforce));
    assert_eq!(published.source, applied(Mode::Enforce, None));
    assert_eq!(published.overridden, [Overridden::Default]);
    assert_eq!(
        published.level,
        Level::Verify,
        "an enforced policy delivers as verify"
    );
    assert!(published.consults_mta_sts && published.reported);

    let default = plan(&p, "partner.example", true, false, None);
    assert_eq!(default.source, PolicySource::Default);
    assert!(default.overridden.is_empty());
    assert_eq!(default.level, Level::May);
}

#[test]
fn testing_and_none_modes_do_not_change_the_level() {
    let p = compiled(&[], true);
    let testing = plan(
        &p,
        "partner.example",
        true,
        false,
        Some(&sts(Mode::Testing)),
    );
    assert_eq!(testing.source, applied(Mode::Testing, None));
    assert_eq!(testing.level, Level::May);
    assert!(testing.sts.is_some());
    let none = plan(&p, "partner.example", true, false, Some(&sts(Mode::None)));
    assert_eq!(
        none.source,
        PolicySource::Default,
        "a none policy is no policy"
    );
    assert!(none.sts.is_none());
}

#[test]
fn mta_sts_covers_only_mx_delivery_and_only_when_enabled() {
    let enforce = sts(Mode::Enforce);
    let on = compiled(&[], true);
    let relayed = plan(&on, "partner.example", false, false, Some(&enforce));
    assert_eq!(relayed.source, PolicySource::Default);
    assert!(!relayed.consults_mta_sts && !relayed.reported);
    let off = compiled(&[], false);
    let disabled = plan(&off, "partner.example", true, false, Some(&enforce));
    assert_eq!(disabled.source, PolicySource::Default);
    assert!(!disabled.consults_mta_sts && disabled.reported);
}

#[test]
fn a_tls_optional_report_goes_at_most_at_may_but_a_rule_is_never_lowered() {
    let p = compiled_over(Level::Verify, &[("ruled.example", Level::Verify)], true);
    let report = plan(&p, "partner.example", true, true, Some(&sts(Mode::Enforce)));
    assert_eq!(
        (report.level, &report.source),
        (Level::May, &PolicySource::Default)
    );
    assert!(!report.consults_mta_sts);
    let ruled = plan(&p, "ruled.example", true, true, None);
    assert_eq!(ruled.level, Level::Verify);
}

#[test]
fn an_enforced_policy_filters_mx_hosts_and_defers_when_none_is_left() {
    let p = compiled(&[], true);
    let enforced = plan(
        &p,
        "partner.example",
        true,
        false,
        Some(&sts(Mode::Enforce)),
    );
    let hosts = vec!["mx1.partner.example", "evil.example", "mx2.partner.example"];
    assert_eq!(
        enforced.hosts(hosts.clone(), |h| h).unwrap(),
        ["mx1.partner.example", "mx2.partner.example"]
    );
    let refused = enforced
        .hosts(vec!["evil.example", "evil.example", "other.example"], |h| h)
        .unwrap_err();
    assert_eq!(refused.names, ["evil.example", "other.example"]);
    assert_eq!(
        refused.reply.to_string(),
        "451 4.7.5 Server certificate not verified: MTA-STS policy 20261208 of partner.example allows none of its MX hosts (evil.example, other.example)\r\n"
    );
    assert_eq!(
        refused.source,
        applied(Mode::Enforce, Some(ResultType::ValidationFailure))
    );
    // In testing, every host is used.
    let testing = plan(
        &p,
        "partner.example",
        true,
        false,
        Some(&sts(Mode::Testing)),
    );
    assert_eq!(testing.hosts(hosts.clone(), |h| h).unwrap(), hosts);
}

fn facts(host: &str) -> AttemptFacts<'_> {
    AttemptFacts {
        host,
        greeted: true,
        reused: false,
        certificate: Some(Certificate::Verified),
        violation: None,
        fallback: false,
        starttls_refused: false,
    }
}

#[test]
fn every_result_type_an_attempt_can_earn() {
    use ResultType as R;
    let p = compiled(&[], true);
    let testing = plan(
        &p,
        "partner.example",
        true,
        false,
        Some(&sts(Mode::Testing)),
    );
    let host = "mx1.partner.example";
    let cert = |c| AttemptFacts {
        certificate: Some(c),
        ..facts(host)
    };
    let deferred = |c, v| AttemptFacts {
        certificate: c,
        violation: Some(v),
        ..facts(host)
    };
    let plain = AttemptFacts {
        certificate: None,
        ..facts(host)
    };
    let cases = [
        (facts(host), None),
        (facts("evil.example"), Some(R::ValidationFailure)),
        (
            cert(Certificate::NameMismatch),
            Some(R::CertificateHostMismatch),
        ),
        (cert(Certificate::Expired), Some(R::CertificateExpired)),
        (cert(Certificate::Untrusted), Some(R::CertificateNotTrusted)),
        (cert(Certificate::None), Some(R::ValidationFailure)),
        (
            deferred(Some(Certificate::None), Violation::CertificateNotTrusted),
            Some(R::CertificateNotTrusted),
        ),
        (
            deferred(None, Violation::TlsNotOffered),
            Some(R::StartTlsNotSupported),
        ),
        (
            deferred(None, Violation::StartTlsRefused),
            Some(R::StartTlsNotSupported),
        ),
        (
            deferred(None, Violation::HandshakeFailed),
            Some(R::ValidationFailure),
        ),
        (
            AttemptFacts {
                fallback: true,
                starttls_refused: true,
                ..plain
            },
            Some(R::StartTlsNotSupported),
        ),
        (
            AttemptFacts {
                fallback: true,
                ..plain
            },
            Some(R::ValidationFailure),
        ),
        (plain, Some(R::StartTlsNotSupported)),
        (
            AttemptFacts {
                greeted: false,
                ..plain
            },
            None,
        ),
    ];
    for (a, expected) in cases {
        let j = testing.judge(&a, None);
        assert_eq!(j.failure, expected, "{a:?}");
        assert_eq!(j.source, applied(Mode::Testing, expected.clone()), "{a:?}");
        let counted = a.greeted.then_some(expected);
        assert_eq!(j.session, counted, "{a:?}");
    }
}

#[test]
fn plaintext_at_level_none_is_not_the_servers_fault() {
    let p = compiled_over(Level::None, &[], true);
    let testing = plan(
        &p,
        "partner.example",
        true,
        false,
        Some(&sts(Mode::Testing)),
    );
    let plain = AttemptFacts {
        certificate: None,
        ..facts("mx1.partner.example")
    };
    assert_eq!(testing.judge(&plain, None).failure, None);
}

#[test]
fn sessions_are_counted_once_per_new_connection_to_an_mx_host() {
    let p = compiled(&[], true);
    let default = plan(&p, "partner.example", true, false, None);
    let host = "mx1.partner.example";
    assert_eq!(default.judge(&facts(host), None).session, Some(None));
    let fetch = ResultType::StsPolicyFetchError;
    assert_eq!(
        default.judge(&facts(host), Some(&fetch)).session,
        Some(Some(fetch.clone())),
        "without a policy, a failed fetch is the session's result"
    );
    let reused = AttemptFacts {
        reused: true,
        ..facts(host)
    };
    assert_eq!(default.judge(&reused, None).session, None);
    let relayed = plan(&p, "partner.example", false, false, None);
    assert_eq!(relayed.judge(&facts(host), None).session, None);
    assert_eq!(
        relayed.judge(&facts(host), None).source,
        PolicySource::Default
    );
}
