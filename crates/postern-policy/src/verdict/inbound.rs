//! The inbound verdicts: at connect (what to offer), at MAIL FROM (docs/src/policy.md#inbound) and
//! at RCPT
//! TO (3: never an open relay).

use std::net::IpAddr;

use super::{Certificate, EnhancedStatus, VerdictReply, Violation};
use crate::compiled::CompiledPolicy;
use crate::domain::normalize_lookup_domain;
use crate::evaluate::Decision;
use crate::level::{CipherStrength, Level};

/// What a session is offered, from the client's address alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectVerdict<'a> {
    /// The connect-time decision, from the client IP alone.
    pub decision: Decision<'a>,
    /// STARTTLS in the EHLO reply (not under `none`).
    pub offer_starttls: bool,
    /// Only 256-bit suites in the handshake (an IP rule `encrypt`/`verify` with `high`).
    pub high_only: bool,
    /// The server prefers 256-bit suites (any enabled `high` rule,
    /// docs/src/policy.md#rules-and-matching).
    pub prefer_256: bool,
    /// A client certificate is asked for (an IP `verify` rule, or any sender `verify` rule:
    /// the sender is not known at the handshake).
    pub request_client_cert: bool,
}

impl CompiledPolicy {
    /// What a client at `ip` is offered at connect; without an address, the default decides.
    pub fn connect_verdict(&self, ip: Option<IpAddr>) -> ConnectVerdict<'_> {
        let decision = self.inbound_connect(ip);
        ConnectVerdict {
            decision,
            offer_starttls: decision.level != Level::None,
            high_only: decision.level.requires_tls()
                && decision.cipher_strength == CipherStrength::High,
            prefer_256: self.any_high,
            request_client_cert: decision.level == Level::Verify || self.any_sender_verify,
        }
    }
}

/// What the session's TLS established, as MAIL FROM needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTls {
    /// A 256-bit suite was negotiated.
    pub high: bool,
    /// How the client's certificate was judged.
    pub client_certificate: Certificate,
}

/// The MAIL FROM verdict: accept, or a refusal (`530` in plaintext; `421` and close in TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailVerdict {
    /// The transaction goes on.
    Accept,
    /// `530 5.7.0`: the level requires TLS and the session is in plaintext.
    MustUseTls,
    /// `421 4.7.0`: `high` is required but no 256-bit suite was negotiated.
    CipherTooWeak,
    /// `421 4.7.1`: `verify` is required but the client certificate did not verify.
    UnverifiedClientCertificate,
    /// `421 4.7.0`: a sender `none` rule refuses TLS where the connect-time level is `may`.
    MustNotUseTls,
}

impl MailVerdict {
    /// The violation the refusal is tracked as; `None` for `Accept`.
    pub fn violation(self) -> Option<Violation> {
        match self {
            MailVerdict::Accept => None,
            MailVerdict::MustUseTls => Some(Violation::MustUseTls),
            MailVerdict::CipherTooWeak => Some(Violation::CipherTooWeak),
            MailVerdict::UnverifiedClientCertificate => {
                Some(Violation::UnverifiedClientCertificate)
            }
            MailVerdict::MustNotUseTls => Some(Violation::MustNotUseTls),
        }
    }

    /// The reply refusing `sender` (the address as given, without brackets).
    pub fn reply(self, sender: &str) -> Option<VerdictReply> {
        let (code, why) = match self {
            MailVerdict::Accept => return None,
            MailVerdict::MustUseTls => (530, "Must use TLS"),
            MailVerdict::CipherTooWeak => (421, "Cipher strength too low"),
            MailVerdict::UnverifiedClientCertificate => (421, "Unverified client certificate"),
            MailVerdict::MustNotUseTls => (421, "Must not use TLS"),
        };
        Some(VerdictReply {
            code,
            status: self.violation()?.status(),
            text: format!("<{sender}>: Sender address rejected: {why}"),
            close: code == 421,
        })
    }
}

impl CompiledPolicy {
    /// The MAIL FROM verdict for `sender` in a session connected under `connect`, with `tls`
    /// when STARTTLS completed.
    pub fn mail_verdict(
        &self,
        connect: &ConnectVerdict<'_>,
        sender: &str,
        tls: Option<SessionTls>,
    ) -> MailVerdict {
        let sender_rule = self.sender_rule(sender);
        let decision = self.inbound_mail_from(connect.decision, sender);
        let Some(tls) = tls else {
            return if decision.level.requires_tls() {
                MailVerdict::MustUseTls
            } else {
                MailVerdict::Accept
            };
        };
        // A sender `none` rule: TLS is refused for it when the session was only `may`; a
        // stricter IP rule wins (docs/src/policy.md#inbound).
        if sender_rule.is_some_and(|r| r.level == Level::None)
            && connect.decision.level == Level::May
        {
            return MailVerdict::MustNotUseTls;
        }
        if decision.level.requires_tls()
            && decision.cipher_strength == CipherStrength::High
            && !tls.high
        {
            return MailVerdict::CipherTooWeak;
        }
        if decision.level == Level::Verify && !tls.client_certificate.is_verified() {
            return MailVerdict::UnverifiedClientCertificate;
        }
        MailVerdict::Accept
    }
}

/// The RCPT TO verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RcptVerdict {
    /// The recipient is accepted.
    Accept,
    /// `554 5.7.1 <rcpt>: Relay access denied`.
    RelayDenied,
}

impl RcptVerdict {
    /// The reply refusing `recipient`; `None` for `Accept`.
    pub fn reply(self, recipient: &str) -> Option<VerdictReply> {
        match self {
            RcptVerdict::Accept => None,
            RcptVerdict::RelayDenied => Some(VerdictReply {
                code: 554,
                status: EnhancedStatus(5, 7, 1),
                text: format!("<{recipient}>: Relay access denied"),
                close: false,
            }),
        }
    }
}

impl CompiledPolicy {
    /// `postmaster`, a client in a trusted network, or a recipient in a relay domain.
    pub fn rcpt_verdict(&self, ip: IpAddr, recipient: &str) -> RcptVerdict {
        if recipient.eq_ignore_ascii_case("postmaster") || self.is_trusted_network(ip) {
            return RcptVerdict::Accept;
        }
        let relayed = crate::domain::domain_of_address(recipient)
            .and_then(normalize_lookup_domain)
            .is_some_and(|d| self.relay_domain(&d).is_some());
        if relayed {
            RcptVerdict::Accept
        } else {
            RcptVerdict::RelayDenied
        }
    }
}
