//! Decisions (docs/src/policy.md#inbound, policy.md#outbound): the connect-time decision from the
//! client IP, the MAIL FROM
//! decision where a sender-domain rule can only tighten it, and the outbound decision from the
//! recipient domain; plus `evaluate`, which explains them for the REST API.

use std::net::IpAddr;

use crate::compiled::CompiledPolicy;
use crate::domain::{domain_of_address, normalize_lookup_domain};
use crate::level::{CipherStrength, Level};
use crate::model::{Direction, Rule};
use crate::verdict::{Certificate, MailVerdict, RcptVerdict, SessionTls};
use crate::warnings::{Warning, rule_warnings};

/// Which entry produced a decision: a rule, or the list's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleRef<'a> {
    /// The default of this direction's rule list.
    Default(Direction),
    /// This rule.
    Rule(&'a Rule),
}

/// A level and strength with the entries that produced them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'a> {
    /// The TLS level required.
    pub level: Level,
    /// The strength enforced: always `Medium` below `encrypt`, where strength is not enforced.
    pub cipher_strength: CipherStrength,
    /// The entry that set the level.
    pub level_rule: RuleRef<'a>,
    /// The entry that set the strength; `None` below `encrypt`.
    pub strength_rule: Option<RuleRef<'a>>,
}

impl<'a> Decision<'a> {
    fn from_entry(level: Level, strength: CipherStrength, entry: RuleRef<'a>) -> Self {
        let enforced = level.requires_tls();
        Decision {
            level,
            cipher_strength: if enforced {
                strength
            } else {
                CipherStrength::Medium
            },
            level_rule: entry,
            strength_rule: enforced.then_some(entry),
        }
    }

    fn from_rule(rule: &'a Rule) -> Self {
        Decision::from_entry(rule.level, rule.cipher_strength, RuleRef::Rule(rule))
    }

    /// `self` tightened by `other`: the stricter level, and the stronger of the strengths of the
    /// entries that require TLS (on a tie, the entry that set the level).
    fn tightened_by(self, other: Decision<'a>) -> Decision<'a> {
        let (level, level_rule) = if other.level > self.level {
            (other.level, other.level_rule)
        } else {
            (self.level, self.level_rule)
        };
        let strength = [self, other]
            .into_iter()
            .filter_map(|d| d.strength_rule.map(|r| (d.cipher_strength, r)))
            .max_by_key(|(s, r)| (*s, *r == level_rule));
        Decision {
            level,
            cipher_strength: strength.map_or(CipherStrength::Medium, |(s, _)| s),
            level_rule,
            strength_rule: strength.map(|(_, r)| r),
        }
    }
}

impl CompiledPolicy {
    /// The connect-time decision for a client: its IP rule, else the inbound default.
    pub fn inbound_connect(&self, ip: Option<IpAddr>) -> Decision<'_> {
        match ip.and_then(|ip| self.rule_for_ip(Direction::Inbound, ip)) {
            Some(rule) => Decision::from_rule(rule),
            None => self.default_decision(Direction::Inbound),
        }
    }

    /// The enabled inbound domain rule for a MAIL FROM address, if any.
    pub fn sender_rule(&self, sender: &str) -> Option<&Rule> {
        let domain = normalize_lookup_domain(domain_of_address(sender)?)?;
        self.rule_for_domain(Direction::Inbound, &domain)
    }

    /// The MAIL FROM decision: the connect-time decision tightened by the sender's rule.
    pub fn inbound_mail_from<'a>(&'a self, connect: Decision<'a>, sender: &str) -> Decision<'a> {
        match self.sender_rule(sender) {
            Some(rule) => connect.tightened_by(Decision::from_rule(rule)),
            None => connect,
        }
    }

    /// The outbound decision for one recipient: its domain's rule, else the outbound default.
    pub fn outbound(&self, recipient: &str) -> Decision<'_> {
        match domain_of_address(recipient).and_then(normalize_lookup_domain) {
            Some(domain) => self.outbound_domain(&domain),
            None => self.default_decision(Direction::Outbound),
        }
    }

    /// The outbound decision for a normalised recipient domain.
    pub fn outbound_domain(&self, domain: &str) -> Decision<'_> {
        match self.rule_for_domain(Direction::Outbound, domain) {
            Some(rule) => Decision::from_rule(rule),
            None => self.default_decision(Direction::Outbound),
        }
    }

    fn default_decision(&self, direction: Direction) -> Decision<'_> {
        let d = self.policy.default_rule(direction);
        Decision::from_entry(d.level, d.cipher_strength, RuleRef::Default(direction))
    }

    /// Explains what the policy decides for a hypothetical peer (`POST /v1/policy/evaluate`).
    pub fn evaluate(&self, query: &Query<'_>) -> Evaluation<'_> {
        match query.direction {
            Direction::Inbound => {
                let offer = self.connect_verdict(query.client_ip);
                let connect = offer.decision;
                let sender_rule = query.sender.and_then(|s| self.sender_rule(s));
                let decision = match sender_rule {
                    Some(rule) => connect.tightened_by(Decision::from_rule(rule)),
                    None => connect,
                };
                let mut warnings = match sender_rule {
                    Some(rule) => {
                        rule_warnings(rule, Direction::Inbound, self.policy.inbound_default)
                    }
                    None => Vec::new(),
                };
                if connect.level == Level::None && decision.level.requires_tls() {
                    warnings.push(Warning::new(
                        "tls_required_not_offered",
                        "the sender's rule requires TLS but STARTTLS is not offered to this \
                         client (connect-time level 'none'): its mail gets \
                         '530 5.7.0 <sender>: Sender address rejected: Must use TLS'"
                            .to_string(),
                    ));
                }
                let sender = query.sender;
                let assumed = query.tls.unwrap_or(SessionTls {
                    high: true,
                    client_certificate: Certificate::Verified,
                });
                Evaluation {
                    mail_plaintext: sender.map(|s| self.mail_verdict(&offer, s, None)),
                    mail_tls: sender
                        .filter(|_| offer.offer_starttls)
                        .map(|s| self.mail_verdict(&offer, s, Some(assumed))),
                    rcpt: query.recipient.map(|r| {
                        let ip = query.client_ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
                        self.rcpt_verdict(ip, r)
                    }),
                    starttls_offered: offer.offer_starttls,
                    request_client_cert: offer.request_client_cert,
                    decision,
                    connect: Some(connect),
                    sender_rule,
                    warnings,
                }
            }
            Direction::Outbound => {
                let decision = query.recipient.map_or_else(
                    || self.default_decision(Direction::Outbound),
                    |r| self.outbound(r),
                );
                let warnings = match decision.level_rule {
                    RuleRef::Rule(rule) => {
                        rule_warnings(rule, Direction::Outbound, self.policy.outbound_default)
                    }
                    RuleRef::Default(_) => Vec::new(),
                };
                Evaluation {
                    mail_plaintext: None,
                    mail_tls: None,
                    rcpt: None,
                    starttls_offered: decision.level != Level::None,
                    request_client_cert: false,
                    decision,
                    connect: None,
                    sender_rule: None,
                    warnings,
                }
            }
        }
    }
}

/// A hypothetical peer to evaluate the policy for.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// Which rule list to evaluate.
    pub direction: Direction,
    /// Inbound: the client's address; without one, no IP rule matches.
    pub client_ip: Option<IpAddr>,
    /// Inbound: the MAIL FROM address, whose domain may match a sender-domain rule.
    pub sender: Option<&'a str>,
    /// Inbound: the recipient (relay control); outbound: the recipient whose domain decides.
    pub recipient: Option<&'a str>,
    /// Inbound: the TLS session to judge MAIL FROM in (default: a 256-bit suite and a verified
    /// client certificate, the best a client can do).
    pub tls: Option<SessionTls>,
}

/// What the policy decides, and why.
#[derive(Debug, Clone)]
pub struct Evaluation<'a> {
    /// The effective decision (inbound: at MAIL FROM when a sender was given).
    pub decision: Decision<'a>,
    /// Inbound: STARTTLS is offered in EHLO. Outbound: the worker will try STARTTLS.
    pub starttls_offered: bool,
    /// Inbound: a client certificate is requested in the handshake. Outbound: always false.
    pub request_client_cert: bool,
    /// Inbound: the connect-time decision, from the client IP alone.
    pub connect: Option<Decision<'a>>,
    /// Inbound: the sender-domain rule that matched, if any.
    pub sender_rule: Option<&'a Rule>,
    /// What the operator should know about the rules that decided.
    pub warnings: Vec<Warning>,
    /// Inbound, with a sender: the MAIL FROM verdict in a plaintext session.
    pub mail_plaintext: Option<MailVerdict>,
    /// Inbound, with a sender, when STARTTLS is offered: the verdict inside TLS (`Query::tls`).
    pub mail_tls: Option<MailVerdict>,
    /// Inbound, with a recipient: the RCPT TO verdict.
    pub rcpt: Option<RcptVerdict>,
}
