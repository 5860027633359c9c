//! Every row of docs/src/policy.md#inbound (connect, MAIL FROM), 3 (RCPT) and 2.3 (the outbound TLS
//! steps),
//! as verdicts and their replies, without sockets.

use std::net::IpAddr;

use super::*;
use crate::{
    CipherStrength, CompiledPolicy, DefaultRule, Level, Match, Policy, Relay, RelayDomain, Rule,
    Settings, Trust,
};

fn rule(m: &str, level: Level, strength: CipherStrength) -> Rule {
    Rule {
        id: m.into(),
        matches: Match::parse(m).unwrap(),
        level,
        cipher_strength: strength,
        enabled: true,
        comment: String::new(),
    }
}

/// Inbound default `may`; one IP rule and one sender rule per level, `verify` allowed (trust is
/// only checked by validation, which `compile` does not need for these rows).
fn policy(inbound: Vec<Rule>) -> CompiledPolicy {
    let policy = Policy {
        inbound_default: DefaultRule {
            level: Level::May,
            cipher_strength: CipherStrength::Medium,
        },
        outbound_default: DefaultRule {
            level: Level::May,
            cipher_strength: CipherStrength::Medium,
        },
        inbound,
        outbound: vec![],
        relay: Relay {
            domains: vec![RelayDomain {
                domain: "ours.example".into(),
                next_hop: "[192.0.2.25]:25".into(),
            }],
            networks: vec!["10.9.0.0/16".into()],
        },
        trust: Trust { ca_pems: vec![] },
    };
    CompiledPolicy::compile(1, policy, Settings::default()).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const STRONG_VERIFIED: SessionTls = SessionTls {
    high: true,
    client_certificate: Certificate::Verified,
};

fn tls(high: bool, client_certificate: Certificate) -> Option<SessionTls> {
    Some(SessionTls {
        high,
        client_certificate,
    })
}

#[test]
fn connect_offers_by_the_ip_rule_else_the_default() {
    use CipherStrength::*;
    let p = policy(vec![
        rule("192.0.2.1", Level::None, Medium),
        rule("192.0.2.2", Level::Encrypt, High),
        rule("192.0.2.3", Level::Verify, Medium),
    ]);
    let none = p.connect_verdict(Some(ip("192.0.2.1")));
    assert!(!none.offer_starttls);
    let high = p.connect_verdict(Some(ip("192.0.2.2")));
    assert!(high.offer_starttls && high.high_only && high.prefer_256);
    assert!(!high.request_client_cert);
    let verify = p.connect_verdict(Some(ip("192.0.2.3")));
    assert!(verify.request_client_cert && !verify.high_only);
    let default = p.connect_verdict(Some(ip("203.0.113.9")));
    assert!(default.offer_starttls && !default.high_only && !default.request_client_cert);
    assert_eq!(default.decision.level, Level::May);
}

#[test]
fn a_sender_verify_rule_asks_every_client_for_a_certificate() {
    let p = policy(vec![rule(
        "bank.example",
        Level::Verify,
        CipherStrength::Medium,
    )]);
    let v = p.connect_verdict(Some(ip("203.0.113.9")));
    assert!(v.request_client_cert);
    assert!(!v.prefer_256);
}

#[test]
fn mail_from_none_and_may_accept_in_both_sessions() {
    for level in [Level::None, Level::May] {
        let p = policy(vec![rule("192.0.2.5", level, CipherStrength::Medium)]);
        let c = p.connect_verdict(Some(ip("192.0.2.5")));
        assert_eq!(p.mail_verdict(&c, "a@x.example", None), MailVerdict::Accept);
        let weak = tls(false, Certificate::None);
        assert_eq!(p.mail_verdict(&c, "a@x.example", weak), MailVerdict::Accept);
    }
}

#[test]
fn mail_from_encrypt_rows() {
    let p = policy(vec![
        rule("strict.example", Level::Encrypt, CipherStrength::Medium),
        rule("high.example", Level::Encrypt, CipherStrength::High),
    ]);
    let c = p.connect_verdict(Some(ip("203.0.113.9")));
    let plain = p.mail_verdict(&c, "a@strict.example", None);
    assert_eq!(plain, MailVerdict::MustUseTls);
    let reply = plain.reply("a@strict.example").unwrap();
    assert_eq!(
        reply.to_string(),
        "530 5.7.0 <a@strict.example>: Sender address rejected: Must use TLS"
    );
    assert!(!reply.close, "a 530 leaves the session open");
    let weak = tls(false, Certificate::None);
    assert_eq!(
        p.mail_verdict(&c, "a@strict.example", weak),
        MailVerdict::Accept
    );
    let low = p.mail_verdict(&c, "a@high.example", weak);
    assert_eq!(low, MailVerdict::CipherTooWeak);
    let reply = low.reply("a@high.example").unwrap();
    assert_eq!(
        reply.to_string(),
        "421 4.7.0 <a@high.example>: Sender address rejected: Cipher strength too low"
    );
    assert!(reply.close, "every 421 closes");
    assert_eq!(
        p.mail_verdict(&c, "a@high.example", tls(true, Certificate::None)),
        MailVerdict::Accept
    );
}

#[test]
fn mail_from_verify_rows() {
    let p = policy(vec![rule(
        "bank.example",
        Level::Verify,
        CipherStrength::High,
    )]);
    let c = p.connect_verdict(Some(ip("203.0.113.9")));
    assert_eq!(
        p.mail_verdict(&c, "a@bank.example", None),
        MailVerdict::MustUseTls
    );
    // The strength is checked before the certificate.
    assert_eq!(
        p.mail_verdict(&c, "a@bank.example", tls(false, Certificate::Verified)),
        MailVerdict::CipherTooWeak
    );
    for unverified in [
        Certificate::Untrusted,
        Certificate::NameMismatch,
        Certificate::None,
    ] {
        let v = p.mail_verdict(&c, "a@bank.example", tls(true, unverified));
        assert_eq!(v, MailVerdict::UnverifiedClientCertificate);
        assert_eq!(
            v.reply("a@bank.example").unwrap().to_string(),
            "421 4.7.1 <a@bank.example>: Sender address rejected: Unverified client certificate"
        );
    }
    assert_eq!(
        p.mail_verdict(&c, "a@bank.example", Some(STRONG_VERIFIED)),
        MailVerdict::Accept
    );
}

#[test]
fn a_sender_rule_only_tightens_the_ip_rule() {
    let p = policy(vec![
        rule("192.0.2.9", Level::Encrypt, CipherStrength::Medium),
        rule("loose.example", Level::May, CipherStrength::Medium),
    ]);
    let c = p.connect_verdict(Some(ip("192.0.2.9")));
    assert_eq!(
        p.mail_verdict(&c, "a@loose.example", None),
        MailVerdict::MustUseTls
    );
}

#[test]
fn a_sender_none_rule_refuses_tls_only_on_a_may_session() {
    let p = policy(vec![
        rule("legacy.example", Level::None, CipherStrength::Medium),
        rule("192.0.2.9", Level::Encrypt, CipherStrength::Medium),
    ]);
    let may = p.connect_verdict(Some(ip("203.0.113.9")));
    let v = p.mail_verdict(&may, "a@legacy.example", tls(false, Certificate::None));
    assert_eq!(v, MailVerdict::MustNotUseTls);
    let reply = v.reply("a@legacy.example").unwrap();
    assert_eq!(
        reply.to_string(),
        "421 4.7.0 <a@legacy.example>: Sender address rejected: Must not use TLS"
    );
    assert!(reply.close);
    assert_eq!(
        p.mail_verdict(&may, "a@legacy.example", None),
        MailVerdict::Accept
    );
    let encrypt = p.connect_verdict(Some(ip("192.0.2.9")));
    assert_eq!(
        p.mail_verdict(&encrypt, "a@legacy.example", tls(false, Certificate::None)),
        MailVerdict::Accept
    );
}

#[test]
fn the_null_sender_is_shown_as_empty_brackets() {
    let p = policy(vec![rule(
        "192.0.2.9",
        Level::Encrypt,
        CipherStrength::Medium,
    )]);
    let c = p.connect_verdict(Some(ip("192.0.2.9")));
    let v = p.mail_verdict(&c, "", None);
    assert_eq!(
        v.reply("").unwrap().to_string(),
        "530 5.7.0 <>: Sender address rejected: Must use TLS"
    );
}

#[test]
fn rcpt_relay_control() {
    let p = policy(vec![]);
    let outside = ip("203.0.113.9");
    assert_eq!(
        p.rcpt_verdict(outside, "b@ours.example"),
        RcptVerdict::Accept
    );
    assert_eq!(p.rcpt_verdict(outside, "Postmaster"), RcptVerdict::Accept);
    assert_eq!(
        p.rcpt_verdict(ip("10.9.1.1"), "b@anywhere.example"),
        RcptVerdict::Accept
    );
    let denied = p.rcpt_verdict(outside, "b@anywhere.example");
    assert_eq!(denied, RcptVerdict::RelayDenied);
    assert_eq!(
        denied.reply("b@anywhere.example").unwrap().to_string(),
        "554 5.7.1 <b@anywhere.example>: Relay access denied"
    );
    assert_eq!(RcptVerdict::Accept.reply("b@ours.example"), None);
}

#[test]
fn outbound_none_never_tries_and_may_falls_back() {
    assert_eq!(after_ehlo(Level::None, true, "h", "i"), TlsStep::Plain);
    assert_eq!(after_ehlo(Level::May, true, "h", "i"), TlsStep::StartTls);
    assert_eq!(after_ehlo(Level::May, false, "h", "i"), TlsStep::Plain);
    assert_eq!(
        after_starttls_refused(Level::May, "h", "i", "454 no"),
        TlsStep::FallbackPlain
    );
    assert_eq!(after_handshake_failure(Level::May), TlsStep::FallbackPlain);
    assert_eq!(
        after_handshake(Level::May, Certificate::NameMismatch),
        Ok(())
    );
    // `encrypt` does not check certificates.
    assert_eq!(
        after_handshake(Level::Encrypt, Certificate::Untrusted),
        Ok(())
    );
    assert_eq!(
        after_handshake(Level::Verify, Certificate::Verified),
        Ok(())
    );
}

fn deferral(step: TlsStep) -> (Violation, String) {
    match step {
        TlsStep::Defer(d) => (d.violation, d.to_string()),
        other => panic!("not a deferral: {other:?}"),
    }
}

#[test]
fn outbound_the_five_deferrals() {
    for level in [Level::Encrypt, Level::Verify] {
        assert_eq!(
            deferral(after_ehlo(level, false, "mx.partner.example", "198.51.100.2")),
            (
                Violation::TlsNotOffered,
                "4.7.4 TLS is required, but was not offered by host mx.partner.example[198.51.100.2]"
                    .into()
            )
        );
        assert_eq!(
            deferral(after_starttls_refused(
                level,
                "mx.partner.example",
                "198.51.100.2",
                "454 4.7.0 TLS not available due to local problem"
            )),
            (
                Violation::StartTlsRefused,
                "4.7.5 TLS is required, but host mx.partner.example[198.51.100.2] refused to start TLS: 454 4.7.0 TLS not available due to local problem".into()
            )
        );
        assert_eq!(
            deferral(after_handshake_failure(level)),
            (
                Violation::HandshakeFailed,
                "4.7.5 Cannot start TLS: handshake failure".into()
            )
        );
    }
    for cert in [Certificate::Untrusted, Certificate::None] {
        assert_eq!(
            deferral(after_handshake(Level::Verify, cert).unwrap_err()),
            (
                Violation::CertificateNotTrusted,
                "4.7.5 Server certificate not trusted".into()
            )
        );
    }
    assert_eq!(
        deferral(after_handshake(Level::Verify, Certificate::NameMismatch).unwrap_err()),
        (
            Violation::CertificateNotVerified,
            "4.7.5 Server certificate not verified".into()
        )
    );
}

#[test]
fn every_violation_has_a_4_7_or_5_7_status() {
    for v in Violation::ALL {
        let s = v.status();
        assert_eq!(s.1, 7, "{v:?}");
        assert!(s.0 == 4 || s.0 == 5);
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, format!("\"{}\"", v.as_str()));
    }
}

#[test]
fn enhanced_status_parsing() {
    assert_eq!(
        EnhancedStatus::parse("4.7.5"),
        Some(EnhancedStatus(4, 7, 5))
    );
    assert_eq!(
        EnhancedStatus::parse("5.1.10"),
        Some(EnhancedStatus(5, 1, 10))
    );
    for bad in [
        "3.1.1", "4.7", "4.7.5.1", "a.b.c", "4..5", "45.7.5", "4.1234.1",
    ] {
        assert_eq!(EnhancedStatus::parse(bad), None, "{bad}");
    }
    assert_eq!(EnhancedStatus(5, 7, 1).to_string(), "5.7.1");
}

#[test]
fn certificates_show_three_values_and_read_back() {
    for (c, shown) in [
        (Certificate::Verified, "verified"),
        (Certificate::Untrusted, "unverified"),
        (Certificate::NameMismatch, "unverified"),
        (Certificate::None, "none"),
    ] {
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, format!("\"{shown}\""));
        let back: Certificate = serde_json::from_str(&json).unwrap();
        assert_eq!(back.as_str(), shown);
    }
    assert!(serde_json::from_str::<Certificate>("\"maybe\"").is_err());
}
