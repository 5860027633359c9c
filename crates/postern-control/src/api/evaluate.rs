//! `POST /v1/policy/evaluate`: what the policy decides for a hypothetical peer, and why. The
//! outbound answer is the delivery plan the worker makes (`CompiledPolicy::delivery_plan`), fed
//! with the domain's MTA-STS policy as a worker last fetched it: explain and delivery cannot
//! disagree.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use postern_policy::{
    Certificate, CipherStrength, DeliveryPlan, Destination, Direction, KnownPolicy, Level,
    MailVerdict, Overridden, PolicySource, Query, RcptVerdict, RuleRef, SessionTls, TlsStep,
    VerdictReply, Violation, Warning, after_ehlo, after_handshake, after_handshake_failure,
    after_starttls_refused,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::ApiJson;
use super::{ApiError, Problem};
use crate::auth::Actor;
use crate::control::Control;
use crate::tracking::sts::KnownSts;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateRequest {
    pub direction: Direction,
    /// Inbound: the client's address.
    pub client_ip: Option<String>,
    /// Inbound: the MAIL FROM address.
    pub sender: Option<String>,
    /// Outbound: the recipient address whose domain decides. Inbound: a RCPT TO address, for
    /// the relay verdict.
    pub recipient: Option<String>,
    /// Inbound: the TLS session MAIL FROM is judged in for `mail_from_tls` (default: a 256-bit
    /// suite and a verified client certificate).
    pub tls: Option<SessionTlsDto>,
}

/// A TLS session as the MAIL FROM verdict needs it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionTlsDto {
    /// A 256-bit suite was negotiated.
    #[serde(default = "yes")]
    pub high_cipher: bool,
    #[serde(default = "verified")]
    pub client_certificate: Certificate,
}

fn yes() -> bool {
    true
}

fn verified() -> Certificate {
    Certificate::Verified
}

/// A verdict as the client would see it: the reply a worker gives.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerdictDto {
    /// `accept`, or why not: a violation kind (`must_use_tls`, `cipher_too_weak`,
    /// `unverified_client_certificate`, `must_not_use_tls`) or `relay_denied`.
    pub verdict: String,
    pub violation: Option<Violation>,
    pub code: Option<u16>,
    /// The enhanced status, e.g. `5.7.0`.
    pub status: Option<String>,
    /// The whole reply line.
    pub reply: Option<String>,
    /// The worker closes the session after the reply (every 421).
    pub closes: bool,
}

impl VerdictDto {
    fn new(verdict: &str, violation: Option<Violation>, reply: Option<VerdictReply>) -> Self {
        VerdictDto {
            verdict: verdict.into(),
            violation,
            code: reply.as_ref().map(|r| r.code),
            status: reply.as_ref().map(|r| r.status.to_string()),
            closes: reply.as_ref().is_some_and(|r| r.close),
            reply: reply.map(|r| r.to_string()),
        }
    }

    fn mail(v: MailVerdict, sender: &str) -> Self {
        let name = v.violation().map_or("accept", Violation::as_str);
        VerdictDto::new(name, v.violation(), v.reply(sender))
    }

    fn rcpt(v: RcptVerdict, recipient: &str) -> Self {
        let name = match v {
            RcptVerdict::Accept => "accept",
            RcptVerdict::RelayDenied => "relay_denied",
        };
        VerdictDto::new(name, None, v.reply(recipient))
    }
}

/// What the worker does at one outbound TLS step under the recipient's level.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutboundStepDto {
    /// `starttls_offered`, `starttls_not_offered`, `starttls_refused`, `handshake_failed`,
    /// `certificate_untrusted`, `certificate_name_mismatch`.
    pub when: String,
    /// `starttls`, `plaintext`, `fallback_plaintext` (a new plaintext connection, recorded as a
    /// TLS fallback), `continue` (inside TLS) or `defer`.
    pub action: String,
    pub violation: Option<Violation>,
    /// The deferral's reason, with `<host>` and `<ip>` for the next hop.
    pub reason: Option<String>,
}

fn outbound_steps(level: Level) -> Vec<OutboundStepDto> {
    let (host, ip) = ("<host>", "<ip>");
    let step = |when: &str, step: Result<(), TlsStep>| {
        let (action, deferral) = match step {
            Ok(()) => ("continue", None),
            Err(TlsStep::StartTls) => ("starttls", None),
            Err(TlsStep::Plain) => ("plaintext", None),
            Err(TlsStep::FallbackPlain) => ("fallback_plaintext", None),
            Err(TlsStep::Defer(d)) => ("defer", Some(d)),
        };
        OutboundStepDto {
            when: when.into(),
            action: action.into(),
            violation: deferral.as_ref().map(|d| d.violation),
            reason: deferral.map(|d| d.to_string()),
        }
    };
    let mut steps = vec![
        step("starttls_offered", Err(after_ehlo(level, true, host, ip))),
        step(
            "starttls_not_offered",
            Err(after_ehlo(level, false, host, ip)),
        ),
    ];
    if level != Level::None {
        steps.extend([
            step(
                "starttls_refused",
                Err(after_starttls_refused(level, host, ip, "<reply>")),
            ),
            step("handshake_failed", Err(after_handshake_failure(level))),
            step(
                "certificate_untrusted",
                after_handshake(level, Certificate::Untrusted),
            ),
            step(
                "certificate_name_mismatch",
                after_handshake(level, Certificate::NameMismatch),
            ),
        ]);
    }
    steps
}

/// Which entry produced a decision.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleRefDto {
    /// `rule` or `default`.
    pub kind: String,
    /// The rule id; null for a default.
    pub id: Option<String>,
    /// The rule's match; null for a default.
    #[serde(rename = "match")]
    pub matches: Option<String>,
}

impl From<RuleRef<'_>> for RuleRefDto {
    fn from(r: RuleRef<'_>) -> Self {
        match r {
            RuleRef::Default(_) => RuleRefDto {
                kind: "default".into(),
                id: None,
                matches: None,
            },
            RuleRef::Rule(rule) => RuleRefDto {
                kind: "rule".into(),
                id: Some(rule.id.clone()),
                matches: Some(rule.matches.to_string()),
            },
        }
    }
}

/// The connect-time decision (inbound), from the client IP alone.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectDecision {
    pub level: Level,
    pub cipher_strength: CipherStrength,
    pub level_rule: RuleRefDto,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EvaluateResponse {
    /// The policy version evaluated.
    pub version: u64,
    /// The effective level (inbound: at MAIL FROM when a sender is given).
    pub level: Level,
    /// The strength enforced; always `medium` below `encrypt`.
    pub cipher_strength: CipherStrength,
    /// Inbound: STARTTLS is offered in EHLO. Outbound: the worker will try STARTTLS.
    pub starttls_offered: bool,
    pub request_client_cert: bool,
    pub level_rule: RuleRefDto,
    /// Null below `encrypt`, where strength is not enforced.
    pub strength_rule: Option<RuleRefDto>,
    /// Inbound only.
    pub connect: Option<ConnectDecision>,
    /// Inbound only: the sender-domain rule that matched.
    pub sender_rule: Option<RuleRefDto>,
    pub warnings: Vec<Warning>,
    /// Inbound, with a sender: the MAIL FROM verdict in a plaintext session.
    pub mail_from: Option<VerdictDto>,
    /// Inbound, with a sender, when STARTTLS is offered: the verdict inside the TLS session
    /// described by the request's `tls`.
    pub mail_from_tls: Option<VerdictDto>,
    /// Inbound, with a recipient: the RCPT TO (relay) verdict.
    pub rcpt_to: Option<VerdictDto>,
    /// Outbound: what the worker does at each TLS step.
    pub outbound_steps: Vec<OutboundStepDto>,
    /// Outbound, with a recipient: which entry decides (rule, then MTA-STS, then the default)
    /// and what it overrode.
    pub outbound_source: Option<OutboundSource>,
}

/// Where an outbound decision comes from: an enabled local rule beats the domain's published
/// MTA-STS policy, which beats the outbound default.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutboundSource {
    /// `rule`, `mta-sts` or `default`.
    pub decided_by: String,
    /// The domain's MTA-STS policy as a worker last fetched it, while unexpired.
    pub mta_sts: Option<KnownStsView>,
    /// The candidates the deciding entry beat, in precedence order (`mta-sts`, `default`).
    pub overridden: Vec<String>,
    /// Whether mail for the domain goes to its MX hosts (MTA-STS covers only those: a relay
    /// domain's next hop or the smart host is the operator's own choice).
    pub mx_delivery: bool,
    /// `settings.delivery.mta_sts`.
    pub mta_sts_enabled: bool,
}

/// A domain's MTA-STS policy, as a worker last fetched it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = KnownSts)]
pub struct KnownStsView {
    pub domain: String,
    /// The `_mta-sts` record id it was fetched under.
    pub id: String,
    pub mode: postern_sts::Mode,
    pub max_age: u64,
    /// The policy's `mx` patterns.
    pub mx: Vec<String>,
    /// RFC 3339.
    pub fetched_at: String,
    /// RFC 3339: `fetched_at` + `max_age`.
    pub expires_at: String,
    /// The worker that fetched it.
    pub worker: String,
}

impl From<&KnownSts> for KnownStsView {
    fn from(k: &KnownSts) -> Self {
        KnownStsView {
            domain: k.domain.clone(),
            id: k.id.clone(),
            mode: k.mode,
            max_age: k.max_age,
            mx: k.mx.iter().map(|m| m.as_str().to_string()).collect(),
            fetched_at: postern_time::rfc3339_ms(k.fetched_ms),
            expires_at: postern_time::rfc3339_ms(k.expires_ms()),
            worker: k.worker.clone(),
        }
    }
}

impl OutboundSource {
    fn new(plan: &DeliveryPlan, known: Option<&KnownSts>, mta_sts_enabled: bool) -> Self {
        OutboundSource {
            decided_by: match plan.source {
                PolicySource::Rule { .. } => "rule",
                PolicySource::MtaSts(_) => "mta-sts",
                PolicySource::Default => "default",
            }
            .into(),
            mta_sts: known.map(Into::into),
            overridden: plan
                .overridden
                .iter()
                .map(|o| match o {
                    Overridden::MtaSts => "mta-sts",
                    Overridden::Default => "default",
                })
                .map(str::to_string)
                .collect(),
            mx_delivery: plan.reported,
            mta_sts_enabled,
        }
    }
}

#[utoipa::path(post, path = "/v1/policy/evaluate", tag = "policy", operation_id = "evaluate_policy",
    request_body = EvaluateRequest, security(("bearer" = [])),
    responses((status = 200, body = EvaluateResponse, description = "OK"), (status = 422, body = Problem, description = "Semantically invalid; nothing was stored")))]
pub async fn evaluate(
    State(c): State<Arc<Control>>,
    _a: Actor,
    ApiJson(req): ApiJson<EvaluateRequest>,
) -> Result<Json<EvaluateResponse>, ApiError> {
    let mut errors = Vec::new();
    let inbound_only = |field: &str| format!("{field} applies to inbound evaluations only");
    match req.direction {
        Direction::Outbound if req.client_ip.is_some() => errors.push(
            postern_policy::FieldError::new("/client_ip", inbound_only("client_ip")),
        ),
        Direction::Outbound if req.sender.is_some() => errors.push(
            postern_policy::FieldError::new("/sender", inbound_only("sender")),
        ),
        Direction::Outbound if req.tls.is_some() => {
            errors.push(postern_policy::FieldError::new("/tls", inbound_only("tls")))
        }
        _ => {}
    }
    let client_ip = match req.client_ip.as_deref().map(str::parse::<IpAddr>) {
        Some(Ok(ip)) => Some(ip.to_canonical()),
        Some(Err(_)) => {
            errors.push(postern_policy::FieldError::new(
                "/client_ip",
                "not an IPv4 or IPv6 address",
            ));
            None
        }
        None => None,
    };
    if !errors.is_empty() {
        return Err(errors.into());
    }
    let compiled = c.compiled().await?;
    let e = compiled.evaluate(&Query {
        direction: req.direction,
        client_ip,
        sender: req.sender.as_deref(),
        recipient: req.recipient.as_deref(),
        tls: req.tls.as_ref().map(|t| SessionTls {
            high: t.high_cipher,
            client_certificate: t.client_certificate,
        }),
    });
    let sender = req.sender.as_deref().unwrap_or_default();
    let recipient = req.recipient.as_deref().unwrap_or_default();
    // Outbound, with a recipient: the worker's delivery plan for its domain.
    let plan = match (req.direction, postern_policy::domain_of_address(recipient)) {
        (Direction::Outbound, Some(domain)) => {
            let domain = postern_policy::normalize_lookup_domain(domain).unwrap_or_default();
            let (tracking, lookup) = (c.tracking.clone(), domain.clone());
            let known = tokio::task::spawn_blocking(move || tracking.sts_policy(&lookup))
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?
                .map_err(|e| ApiError::unavailable(e.to_string()))?
                .filter(|k| k.valid_at_ms(postern_time::now_ms()));
            let policy = known.as_ref().map(KnownSts::policy);
            let plan = compiled.delivery_plan(&Destination {
                domain: &domain,
                mx: compiled.next_hop(&domain).eq_ignore_ascii_case("mx"),
                tls_optional: false,
                mta_sts: known
                    .as_ref()
                    .zip(policy.as_ref())
                    .map(|(k, policy)| KnownPolicy { id: &k.id, policy }),
            });
            let source =
                OutboundSource::new(&plan, known.as_ref(), compiled.settings.delivery.mta_sts);
            Some((plan, source))
        }
        _ => None,
    };
    let level = plan.as_ref().map_or(e.decision.level, |(p, _)| p.level);
    Ok(Json(EvaluateResponse {
        version: compiled.version,
        level,
        cipher_strength: e.decision.cipher_strength,
        starttls_offered: e.starttls_offered,
        request_client_cert: e.request_client_cert,
        level_rule: e.decision.level_rule.into(),
        strength_rule: e.decision.strength_rule.map(Into::into),
        connect: e.connect.map(|d| ConnectDecision {
            level: d.level,
            cipher_strength: d.cipher_strength,
            level_rule: d.level_rule.into(),
        }),
        sender_rule: e.sender_rule.map(|r| RuleRef::Rule(r).into()),
        warnings: e.warnings,
        mail_from: e.mail_plaintext.map(|v| VerdictDto::mail(v, sender)),
        mail_from_tls: e.mail_tls.map(|v| VerdictDto::mail(v, sender)),
        rcpt_to: e.rcpt.map(|v| VerdictDto::rcpt(v, recipient)),
        outbound_steps: match req.direction {
            Direction::Inbound => Vec::new(),
            Direction::Outbound => outbound_steps(level),
        },
        outbound_source: plan.map(|(_, source)| source),
    }))
}
