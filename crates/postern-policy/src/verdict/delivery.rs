//! The delivery plan (docs/src/policy.md#outbound, RFC 8461 5, RFC 8689): for one recipient domain
//! and
//! next hop, which entry decides the outbound TLS level (a local rule, then the domain's
//! MTA-STS policy, then the default), what it overrode, the level and strength the worker
//! delivers under, which MX hosts it may use, and what an attempt's facts mean for the
//! delivery and for TLS-RPT. The worker and `POST /v1/policy/evaluate` both ask this module,
//! so what is explained is what is done. Pure: the worker looks up and connects; this decides.

use postern_smtp::Reply;
use postern_sts::{Mode, Policy, ResultType};
use serde::{Deserialize, Serialize};

use super::{Certificate, EnhancedStatus, Violation};
use crate::compiled::CompiledPolicy;
use crate::evaluate::RuleRef;
use crate::level::{CipherStrength, Level};

/// Which entry set a delivery's TLS level; tracked with every attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicySource {
    /// A local outbound rule for the domain, by id (empty in events from before ids were sent).
    Rule {
        /// The rule's id.
        id: String,
    },
    /// The domain's published MTA-STS policy.
    MtaSts(StsApplied),
    /// The outbound default.
    #[default]
    Default,
}

/// The MTA-STS policy a delivery followed, and what it found wrong with an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StsApplied {
    /// The `id` of the `_mta-sts` record the policy was fetched under.
    pub id: String,
    /// `enforce` or `testing` (a `none` policy is no policy).
    pub mode: Mode,
    /// What enforcing found (or would have found, in `testing`); `None` when all was well.
    pub failure: Option<ResultType>,
}

/// A candidate the deciding entry beat, in precedence order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Overridden {
    /// The domain's MTA-STS policy.
    MtaSts,
    /// The outbound default.
    Default,
}

/// A domain's MTA-STS policy as the caller knows it (the worker's cache, the control plane's
/// record of the last fetch): valid now, or absent.
#[derive(Debug, Clone, Copy)]
pub struct KnownPolicy<'a> {
    /// The `id` of the `_mta-sts` record the policy was fetched under.
    pub id: &'a str,
    /// The policy itself.
    pub policy: &'a Policy,
}

/// What the plan is made from besides the compiled policy.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    /// The recipient domain, normalised.
    pub domain: &'a str,
    /// The next hop is the domain's MX hosts (MTA-STS and TLS-RPT cover only those; a relay
    /// domain's next hop or the smart host is the operator's own choice).
    pub mx: bool,
    /// The message is one of our TLS-RPT reports (`TLS-Required: No`, RFC 8689): it goes even
    /// where TLS is broken, at most at `may` and without MTA-STS; a local rule is never lowered.
    pub tls_optional: bool,
    /// The domain's MTA-STS policy, when one was looked up (`DeliveryPlan::consults_mta_sts`).
    pub mta_sts: Option<KnownPolicy<'a>>,
}

/// How one delivery goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryPlan {
    /// The recipient domain.
    pub domain: String,
    /// The outbound TLS level the delivery goes under.
    pub level: Level,
    /// The cipher strength the delivery goes under (`medium` below `encrypt`).
    pub strength: CipherStrength,
    /// Which entry set the level.
    pub source: PolicySource,
    /// What the deciding entry overrode, in precedence order.
    pub overridden: Vec<Overridden>,
    /// The MTA-STS policy followed (enforced, or in `testing`).
    pub sts: Option<Policy>,
    /// Sessions are counted for TLS-RPT (the next hop is the domain's MX hosts).
    pub reported: bool,
    /// Whether the domain's MTA-STS policy can decide: no rule did, the next hop is its MX
    /// hosts, MTA-STS is on and the message is not a `TLS-Required: No` report.
    pub consults_mta_sts: bool,
}

/// Every MX host was refused by an enforced policy: the delivery defers before connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoHostAllowed {
    /// The MX host names refused, for TLS-RPT (one failed session each).
    pub names: Vec<String>,
    /// The `451 4.7.5` reply the recipients get.
    pub reply: Reply,
    /// The source as tracked, with MTA-STS's `validation-failure`.
    pub source: PolicySource,
}

impl NoHostAllowed {
    /// The violation a delivery deferred this way is tracked as.
    pub const VIOLATION: Violation = Violation::CertificateNotVerified;
}

/// What happened on one attempt, as far as the TLS policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptFacts<'a> {
    /// The reference name (the MX host).
    pub host: &'a str,
    /// A server greeted us (a session TLS-RPT counts).
    pub greeted: bool,
    /// The transaction ran on a connection that carried an earlier message (not a new session).
    pub reused: bool,
    /// The handshake completed; how the certificate was judged (also when the policy then
    /// deferred for it).
    pub certificate: Option<Certificate>,
    /// The TLS policy deferred the attempt, and why.
    pub violation: Option<Violation>,
    /// A `may` delivery fell back to plaintext.
    pub fallback: bool,
    /// The server answered STARTTLS with an error.
    pub starttls_refused: bool,
}

/// What an attempt means beyond its replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// The source as tracked, with what MTA-STS found wrong.
    pub source: PolicySource,
    /// What the MTA-STS policy found wrong (enforced: the attempt was deferred for it).
    pub failure: Option<ResultType>,
    /// A new session with an MX host, counted for TLS-RPT: `Some(None)` a success,
    /// `Some(Some(result))` a failure; `None` when it is not a session TLS-RPT counts.
    pub session: Option<Option<ResultType>>,
}

impl CompiledPolicy {
    /// The plan for delivering to `d`.
    pub fn delivery_plan(&self, d: &Destination<'_>) -> DeliveryPlan {
        let decision = self.outbound_domain(d.domain);
        let rule = match decision.level_rule {
            RuleRef::Rule(r) => Some(r.id.clone()),
            RuleRef::Default(_) => None,
        };
        // MTA-STS covers mail to the MX hosts, when on, except our `TLS-Required: No` reports;
        // a `none` policy is as no policy (RFC 8461 5). It decides only where no rule did, but
        // `evaluate` shows a rule overriding it.
        let eligible = d.mx && self.settings.delivery.mta_sts && !d.tls_optional;
        let consults_mta_sts = rule.is_none() && eligible;
        let usable = d
            .mta_sts
            .filter(|k| eligible && k.policy.mode != Mode::None);
        let mut plan = DeliveryPlan {
            domain: d.domain.to_string(),
            level: decision.level,
            strength: decision.cipher_strength,
            source: PolicySource::Default,
            overridden: Vec::new(),
            sts: None,
            reported: d.mx,
            consults_mta_sts,
        };
        match (rule, usable) {
            (Some(id), sts) => {
                plan.source = PolicySource::Rule { id };
                plan.overridden = sts
                    .map(|_| Overridden::MtaSts)
                    .into_iter()
                    .chain([Overridden::Default])
                    .collect();
            }
            (None, Some(k)) => {
                plan.source = PolicySource::MtaSts(StsApplied {
                    id: k.id.to_string(),
                    mode: k.policy.mode,
                    failure: None,
                });
                plan.overridden = vec![Overridden::Default];
                plan.sts = Some(k.policy.clone());
                // STARTTLS, TLS 1.2 or later and a certificate verified for the MX host name
                // (also the SNI) against webpki's roots and /v1/trust: `verify`.
                if k.policy.mode == Mode::Enforce {
                    plan.level = Level::Verify;
                }
            }
            (None, None) => {
                if d.tls_optional {
                    plan.level = plan.level.min(Level::May);
                }
            }
        }
        plan
    }
}

impl DeliveryPlan {
    /// The MTA-STS policy followed, if it is enforced.
    fn enforced(&self) -> Option<&Policy> {
        self.sts.as_ref().filter(|p| p.mode == Mode::Enforce)
    }

    /// The hosts an enforced policy allows (all of them otherwise), in their order; `name`
    /// gives a host's MX name.
    pub fn hosts<H>(
        &self,
        hosts: Vec<H>,
        name: impl Fn(&H) -> &str,
    ) -> Result<Vec<H>, NoHostAllowed> {
        let Some(policy) = self.enforced() else {
            return Ok(hosts);
        };
        let mut names: Vec<String> = hosts.iter().map(|h| name(h).to_string()).collect();
        names.dedup();
        let allowed: Vec<H> = hosts
            .into_iter()
            .filter(|h| policy.allows(name(h)))
            .collect();
        if !allowed.is_empty() {
            return Ok(allowed);
        }
        let id = self.sts_id().unwrap_or_default();
        Err(NoHostAllowed {
            reply: Reply::with_status(
                451,
                EnhancedStatus(4, 7, 5),
                format!(
                    "Server certificate not verified: MTA-STS policy {id} of {} allows none of its MX hosts ({})",
                    self.domain,
                    names.join(", ")
                ),
            ),
            names,
            source: self.source_with(Some(ResultType::ValidationFailure)),
        })
    }

    fn sts_id(&self) -> Option<&str> {
        match &self.source {
            PolicySource::MtaSts(s) => Some(&s.id),
            _ => None,
        }
    }

    /// The source, with what MTA-STS found wrong.
    fn source_with(&self, failure: Option<ResultType>) -> PolicySource {
        match &self.source {
            PolicySource::MtaSts(s) => PolicySource::MtaSts(StsApplied {
                failure,
                ..s.clone()
            }),
            other => other.clone(),
        }
    }

    /// What `a` means: what the MTA-STS policy finds wrong with it, the source as tracked, and
    /// the TLS-RPT session it makes. `fetch_failure` is why no policy could be had (a session
    /// without a policy then fails as `no-policy-found` with that result, RFC 8460 4.3.2.3).
    pub fn judge(&self, a: &AttemptFacts<'_>, fetch_failure: Option<&ResultType>) -> Judgement {
        let failure = self
            .sts
            .as_ref()
            .and_then(|p| sts_failure(p, a, self.level));
        let counted = self.reported && a.greeted && !a.reused;
        Judgement {
            source: self.source_with(failure.clone()),
            session: counted.then(|| failure.clone().or_else(|| fetch_failure.cloned())),
            failure,
        }
    }
}

/// What an MTA-STS policy finds wrong with an attempt, as a TLS-RPT result type (RFC 8460
/// 4.3.2): enforced, it deferred the attempt; in `testing`, the delivery went on regardless.
/// `None` for an attempt that reached no server, or that met every requirement; and for
/// plaintext at level `none` (a `testing` policy under a `none` default: STARTTLS was not
/// tried, so the server is not to blame).
fn sts_failure(policy: &Policy, a: &AttemptFacts<'_>, level: Level) -> Option<ResultType> {
    use ResultType as R;
    if !policy.allows(a.host) {
        return Some(R::ValidationFailure);
    }
    Some(match (a.certificate, a.violation) {
        (Some(Certificate::Verified), _) => return None,
        (Some(Certificate::NameMismatch), _) => R::CertificateHostMismatch,
        (Some(Certificate::Expired), _) => R::CertificateExpired,
        (Some(Certificate::Untrusted), _) => R::CertificateNotTrusted,
        // No certificate: enforced, deferred as not trusted; in `testing`, not validated.
        (Some(Certificate::None), Some(Violation::CertificateNotTrusted)) => {
            R::CertificateNotTrusted
        }
        (Some(Certificate::None), _) => R::ValidationFailure,
        // Enforced, the attempt stopped at the failed check.
        (None, Some(Violation::TlsNotOffered | Violation::StartTlsRefused)) => {
            R::StartTlsNotSupported
        }
        (None, Some(Violation::CertificateNotVerified)) => R::CertificateHostMismatch,
        (None, Some(Violation::CertificateNotTrusted)) => R::CertificateNotTrusted,
        (None, Some(_)) => R::ValidationFailure,
        // A `may` fallback: STARTTLS refused (454) or a failed handshake.
        (None, None) if a.fallback && a.starttls_refused => R::StartTlsNotSupported,
        (None, None) if a.fallback => R::ValidationFailure,
        (None, None) if a.greeted && level > Level::None => R::StartTlsNotSupported,
        (None, None) => return None,
    })
}
