//! One delivery round of one message: the due recipients grouped by (next hop, effective level,
//! strength) as PRODUCT.md 2.3 says (an MX next hop is the recipient domain's MX hosts, so it
//! also splits by domain), each group delivered over one connection (a cached one when it can),
//! the next address tried before deferring, within `mx_address_limit` addresses and
//! `mx_session_limit` sessions. Each recipient succeeds, defers or bounces on its own; the
//! bounced get one DSN per round. Nothing after the first delivery can end the round early:
//! whatever local step fails, what the next hops said is kept.

use std::collections::BTreeMap;
use std::sync::Arc;

use postern_events::{self as events, Event, Leg, Tls};
use postern_policy::{
    CipherStrength, CompiledPolicy, Level, NextHop, RuleRef, Violation, normalize_lookup_domain,
};
use postern_smtp::{Envelope, Reply};
use postern_sts::{Mode, Source};

use super::bounce::Bounce;
use super::deliver::{Attempt, Context, Deadlines, Target, attempt};
use super::maillog;
use super::measure;
use super::pool::Reuse;
use super::queue::{Queue, QueueError, local_retry_s};
use super::route::Router;
use super::state::{Fate, MessageState};
use super::sts_result::{session_policy, sts_applied, sts_failure};
use crate::spool;

/// Messages up to this size are read with their envelope at the start of a round (one disk
/// visit); larger ones only once a connection is ready. A round waiting for a slot holds at most
/// this much body, so the 20,000 rounds in flight hold at most 320 MiB of bodies.
const SMALL_MESSAGE: u64 = 16 * 1024;

/// Recipients that travel together.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupKey {
    /// `mx`, `host:port` or `[ip]:port`.
    pub hop: String,
    /// The recipient domain for an MX next hop (its MX hosts are its own); empty otherwise.
    pub mx_domain: String,
    pub level: Level,
    pub strength: CipherStrength,
    /// A local outbound rule set the level (it beats a published MTA-STS policy).
    pub rule: bool,
}

impl GroupKey {
    /// What set the level, before any MTA-STS policy is looked up.
    pub(super) fn source(&self) -> events::PolicySource {
        if self.rule {
            events::PolicySource::Rule
        } else {
            events::PolicySource::Default
        }
    }
}

/// The due recipients of `state` by group, and those whose address cannot be routed at all.
pub fn plan(
    state: &MessageState,
    policy: &CompiledPolicy,
    now: u64,
    forced: bool,
) -> (BTreeMap<GroupKey, Vec<usize>>, Vec<usize>) {
    let mut groups: BTreeMap<GroupKey, Vec<usize>> = BTreeMap::new();
    let mut unroutable = Vec::new();
    for i in state.due(now, forced) {
        let address = &state.recipients[i].address;
        let Some(domain) = address
            .rsplit_once('@')
            .and_then(|(_, d)| normalize_lookup_domain(d))
        else {
            unroutable.push(i);
            continue;
        };
        let hop = policy.next_hop(&domain).to_string();
        let decision = policy.outbound(address);
        let mx_domain = if hop.eq_ignore_ascii_case("mx") {
            domain
        } else {
            String::new()
        };
        groups
            .entry(GroupKey {
                hop,
                mx_domain,
                level: decision.level,
                strength: decision.cipher_strength,
                rule: matches!(decision.level_rule, RuleRef::Rule(_)),
            })
            .or_default()
            .push(i);
    }
    (groups, unroutable)
}

/// What one recipient got from a group's delivery.
pub(super) struct RcptResult {
    pub(super) reply: Reply,
    /// Set when the TLS policy deferred it.
    pub(super) violation: Option<Violation>,
    pub(super) leg: Option<Leg>,
    /// The next hop's host name when `reply` is its own.
    pub(super) remote_mta: Option<String>,
    /// What set the TLS level.
    pub(super) policy: events::PolicySource,
}

/// How `attempt` travelled, as tracking records it.
fn leg_of(attempt: &Attempt) -> Leg {
    Leg {
        host: attempt.host.clone(),
        ip: attempt.ip.clone(),
        tls: attempt.tls.as_ref().map(|t| Tls {
            version: t.version.into(),
            cipher: t.cipher.into(),
            key_exchange: t.key_exchange.into(),
            certificate: t.certificate,
        }),
        tls_fallback: attempt.tls_fallback,
    }
}

/// Runs `f` on a blocking thread with the spool (spool files are read and written there, never
/// on the runtime's threads).
pub(super) async fn blocking<T: Send + 'static>(
    spool: &spool::Spool,
    f: impl FnOnce(&spool::Spool) -> std::io::Result<T> + Send + 'static,
) -> Result<T, QueueError> {
    let spool = spool.clone();
    tokio::task::spawn_blocking(move || f(&spool))
        .await
        .map_err(|e| QueueError::Task(e.to_string()))?
        .map_err(QueueError::Read)
}

impl Queue {
    /// One delivery round for message `id`; when it is next due (`None`: it left the queue).
    pub(super) async fn round(
        &self,
        id: &str,
        policy: &CompiledPolicy,
    ) -> Result<Option<u64>, QueueError> {
        let owned = id.to_string();
        let loaded = blocking(&self.spool, move |s| {
            s.load::<MessageState>(&owned, SMALL_MESSAGE)
        })
        .await;
        let (envelope, body, saved) = match loaded {
            Ok(loaded) => loaded,
            // Gone from the spool (finished, or removed by an operator): nothing left to do.
            Err(QueueError::Read(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                self.unsaved().remove(id);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let mut state = self.state_of(id, &envelope, saved);
        let mut body: Option<Arc<[u8]>> = body.map(Into::into);
        let settings = &policy.settings;
        let forced = self.schedule().take_forced(id);
        let (groups, unroutable) = plan(&state, policy, self.now(), forced);
        for i in unroutable {
            state.bounce(i, &Reply::new(550, "5.1.3 bad recipient address syntax"));
        }
        let intake = settings.reports.receive_address.as_deref();
        if !groups.is_empty() {
            let router = self.router(policy);
            for (key, members) in groups {
                // TLS-RPT reports for us are taken here, not relayed (`intake`).
                let (reports, members): (Vec<usize>, Vec<usize>) =
                    members.into_iter().partition(|i| {
                        intake.is_some_and(|a| state.recipients[*i].address.eq_ignore_ascii_case(a))
                    });
                for i in reports {
                    let result = self.take_report(&envelope, &mut body, &key, policy).await;
                    self.apply(id, &envelope.sender, i, result, &mut state, policy);
                }
                if members.is_empty() {
                    continue;
                }
                let results = match &router {
                    Ok(router) => {
                        self.deliver_group(
                            router, &key, &members, &state, &envelope, &mut body, policy,
                        )
                        .await
                    }
                    Err(e) => members
                        .iter()
                        .map(|_| RcptResult {
                            reply: e.reply(),
                            violation: None,
                            leg: None,
                            remote_mta: None,
                            policy: key.source(),
                        })
                        .collect(),
                };
                for (i, result) in members.into_iter().zip(results) {
                    self.apply(id, &envelope.sender, i, result, &mut state, policy);
                }
                // The next group may wait long for a slot (a next hop that never answers): a
                // large body is read again when its connection is ready, not held meanwhile.
                if body
                    .as_ref()
                    .is_some_and(|b| b.len() as u64 > SMALL_MESSAGE)
                {
                    body = None;
                }
            }
        }
        state.expire(self.now(), &settings.queue);
        self.report_bounces(id, &envelope, &mut state, body, policy)
            .await;
        Ok(self.save(id, state, local_retry_s(policy)).await)
    }

    /// Records what recipient `i` got, tracks it and logs it (a delivery or a deferral; a
    /// bounce is logged with its DSN).
    fn apply(
        &self,
        id: &str,
        from: &str,
        i: usize,
        r: RcptResult,
        state: &mut MessageState,
        policy: &CompiledPolicy,
    ) {
        let now = self.now();
        let fate = state.record(
            i,
            now,
            r.leg.clone(),
            &r.reply,
            r.remote_mta.as_deref(),
            &policy.settings.queue,
        );
        let recipient = state.recipients[i].address.clone();
        let metrics = &self.policy.metrics;
        let level = policy.outbound(&recipient).level;
        match fate {
            Fate::Delivered => {
                measure::recipient(metrics, "delivered", level);
                let age = now.saturating_sub(state.created);
                metrics.delivery_seconds.observe(age as f64);
            }
            Fate::Deferred { .. } => {
                measure::recipient(metrics, "deferred", level);
                let (tls_policy, remote) = (r.violation.is_some(), r.remote_mta.is_some());
                measure::deferred(metrics, tls_policy, remote, &r.reply);
            }
            Fate::Bounced => {}
        }
        // The reply as `record` stored it.
        let text = state.recipients[i].last.clone().unwrap_or_default();
        if !matches!(fate, Fate::Bounced) {
            maillog::Outcome {
                queue_id: id,
                from,
                to: &recipient,
                leg: r.leg.as_ref(),
                delay_s: now.saturating_sub(state.created),
                dsn: state.recipients[i].last_status,
                status: if matches!(fate, Fate::Delivered) {
                    "sent"
                } else {
                    "deferred"
                },
                reply: &text,
            }
            .log();
        }
        self.track(
            policy,
            Event::Attempt(events::Attempt {
                queue_id: id.to_string(),
                recipient: recipient.clone(),
                leg: r.leg,
                reply: text.clone(),
                violation: r.violation,
                policy: r.policy,
            }),
        );
        match fate {
            Fate::Delivered => self.track(
                policy,
                Event::Delivered(events::Delivered {
                    queue_id: id.to_string(),
                    recipient,
                    reply: text,
                }),
            ),
            Fate::Deferred { next_attempt } => self.track(
                policy,
                Event::Deferred(events::Deferred {
                    queue_id: id.to_string(),
                    recipient,
                    reason: text,
                    next_attempt_ms: next_attempt * 1000,
                    violation: r.violation,
                }),
            ),
            // Tracked once its DSN is queued (`report_bounces`).
            Fate::Bounced => {}
        }
    }

    /// Queues one DSN for every bounced recipient not yet reported; a DSN that cannot be
    /// spooled is tried again at the next round (the recipients stay bounced meanwhile).
    async fn report_bounces(
        &self,
        id: &str,
        envelope: &spool::Envelope,
        state: &mut MessageState,
        body: Option<Arc<[u8]>>,
        policy: &CompiledPolicy,
    ) {
        let pending = state.dsn_pending();
        if pending.is_empty() {
            return;
        }
        let message = match body {
            Some(b) => b,
            None => {
                let owned = id.to_string();
                match blocking(&self.spool, move |s| s.read(&owned)).await {
                    Ok((_, m)) => m.into(),
                    Err(e) => {
                        tracing::error!(%id, error = %e, "reading a bounced message for its DSN failed; retried");
                        return;
                    }
                }
            }
        };
        let failed: Vec<Bounce<'_>> = pending
            .iter()
            .map(|i| {
                let r = &state.recipients[*i];
                Bounce {
                    recipient: &r.address,
                    reason: r.last.as_deref().unwrap_or("5.0.0 undeliverable"),
                    status: r.last_status,
                    remote_mta: r.remote_mta.as_deref(),
                }
            })
            .collect();
        let dsn = match self.report(id, envelope, &message, &failed).await {
            Ok(dsn) => dsn,
            Err(e) => {
                tracing::error!(%id, error = %e, "queueing a DSN failed; retried");
                return;
            }
        };
        let now = self.now();
        let metrics = &self.policy.metrics;
        for i in pending {
            let r = &mut state.recipients[i];
            r.dsn_pending = false;
            let reason = r.last.as_deref().unwrap_or_default();
            // A 4xx reason that ended in a bounce is the queue lifetime running out.
            let status = if r.last_status.is_some_and(|s| s[0] == 4) {
                "expired"
            } else {
                "bounced"
            };
            maillog::Outcome {
                queue_id: id,
                from: &envelope.sender,
                to: &r.address,
                leg: r.history.last().and_then(|a| a.leg.as_ref()),
                delay_s: now.saturating_sub(state.created),
                dsn: r.last_status,
                status,
                reply: reason,
            }
            .log();
            measure::recipient(metrics, status, policy.outbound(&r.address).level);
            self.track(
                policy,
                Event::Bounced(events::Bounced {
                    queue_id: id.to_string(),
                    recipient: r.address.clone(),
                    reason: r.last.clone().unwrap_or_default(),
                    dsn: dsn.clone(),
                }),
            );
        }
    }

    /// Makes the round's result durable: the message leaves the spool when finished, else its
    /// state is written. Either may fail; the state is then kept in memory and wins over the
    /// file, so that nothing delivered is delivered again. When the message is next due.
    async fn save(&self, id: &str, state: MessageState, retry_s: u64) -> Option<u64> {
        let retry = self.now() + retry_s;
        if state.finished() {
            return match self.spool.remove(id).await {
                Ok(()) => {
                    self.unsaved().remove(id);
                    None
                }
                Err(e) => {
                    tracing::error!(%id, error = %e, "removing a finished message failed; retried");
                    self.unsaved().insert(id.to_string(), state);
                    Some(retry)
                }
            };
        }
        let mut next = state.next_due().unwrap_or(retry);
        if !state.dsn_pending().is_empty() {
            next = next.min(retry);
        }
        match self.spool.write_state(id, &state).await {
            Ok(()) => {
                self.unsaved().remove(id);
            }
            Err(e) => {
                tracing::error!(%id, error = %e, "writing a delivery state failed; kept in memory");
                self.unsaved().insert(id.to_string(), state);
            }
        }
        Some(next)
    }

    /// Delivers to one group; a result per member. Never fails: a local failure is the
    /// members' deferral reason.
    #[allow(clippy::too_many_arguments)]
    async fn deliver_group(
        &self,
        router: &Router,
        key: &GroupKey,
        members: &[usize],
        state: &MessageState,
        envelope: &spool::Envelope,
        body: &mut Option<Arc<[u8]>>,
        policy: &CompiledPolicy,
    ) -> Vec<RcptResult> {
        let all = |reply: Reply| -> Vec<RcptResult> {
            members
                .iter()
                .map(|_| RcptResult {
                    reply: reply.clone(),
                    violation: None,
                    leg: None,
                    remote_mta: None,
                    policy: key.source(),
                })
                .collect()
        };
        let d = &policy.settings.delivery;
        let first_domain = state.recipients[members[0]]
            .address
            .rsplit_once('@')
            .map_or("", |(_, d)| d)
            .to_ascii_lowercase();
        let domain = if key.mx_domain.is_empty() {
            first_domain.as_str()
        } else {
            key.mx_domain.as_str()
        };
        let next_hop = match NextHop::parse(&key.hop) {
            Ok(h) => h,
            Err(e) => {
                return all(Reply::new(
                    451,
                    format!("4.3.5 bad next hop {}: {e}", key.hop),
                ));
            }
        };
        let limit = d.mx_address_limit.max(1) as usize;
        let mut hops = match router
            .hops_within(&next_hop, domain, &self.own, limit)
            .await
        {
            Ok(h) => h,
            Err(e) => return all(e.reply()),
        };
        let trust = policy.policy.trust.certificates();
        // MTA-STS (issue 15): a domain's published policy governs its MX hosts unless a local
        // rule decides (`choose`: rule > MTA-STS > default).
        // A report the control plane submitted with `TLS-Required: No` (RFC 8689) goes even
        // where TLS is broken (what it may be reporting): no MTA-STS, at most `may`; but a
        // local rule is the operator's own word and is never lowered.
        let tls_optional = envelope.tls_optional;
        let lookup = if !key.mx_domain.is_empty() && !key.rule && d.mta_sts && !tls_optional {
            let now = self.now();
            self.sts
                .lookup(domain, router, d.mta_sts_port, &trust, now)
                .await
        } else {
            crate::sts::Lookup::default()
        };
        if let Some(c) = lookup.policy.as_ref().filter(|_| lookup.fetched) {
            self.track(
                policy,
                Event::StsPolicy(events::StsPolicy {
                    domain: domain.to_string(),
                    id: c.id.clone(),
                    mode: c.policy.mode.as_str().into(),
                    max_age: c.policy.max_age,
                    mx: c.policy.mx.iter().map(|m| m.as_str().to_string()).collect(),
                    fetched_ms: c.fetched_at.saturating_mul(1000),
                }),
            );
        }
        let sts = match postern_sts::choose(key.rule, d.mta_sts, lookup.policy.as_ref()) {
            Source::Sts(c) => Some(c.clone()),
            Source::Rule | Source::Default => None,
        };
        let mut level = if tls_optional && !key.rule {
            key.level.min(Level::May)
        } else {
            key.level
        };
        // TLS-RPT counts the sessions with the domain's MX hosts (not a relay or smart host).
        let report =
            |result: Option<&str>, mx: Option<&str>, a: Option<&super::deliver::Attempt>| {
                if key.mx_domain.is_empty() {
                    return;
                }
                self.track(
                    policy,
                    Event::TlsSession(events::TlsSession {
                        domain: domain.to_string(),
                        sts: sts.as_ref().map(session_policy),
                        result: result.or(lookup.failure).map(str::to_string),
                        sending_ip: a.and_then(|a| a.local_ip.clone()),
                        receiving_mx: mx.map(str::to_string),
                        receiving_ip: a.map(|a| a.ip.clone()),
                        at_ms: postern_time::now_ms(),
                    }),
                );
            };
        if let Some(c) = sts.as_ref().filter(|c| c.policy.mode == Mode::Enforce) {
            let mut names: Vec<String> = hops.iter().map(|h| h.host.clone()).collect();
            names.dedup();
            hops.retain(|h| c.policy.allows(&h.host));
            if hops.is_empty() {
                for name in &names {
                    report(Some("validation-failure"), Some(name), None);
                }
                return members
                    .iter()
                    .map(|_| RcptResult {
                        reply: Reply::new(
                            451,
                            format!(
                                "4.7.5 Server certificate not verified: MTA-STS policy {} of {domain} allows none of its MX hosts ({})",
                                c.id,
                                names.join(", ")
                            ),
                        ),
                        violation: Some(Violation::CertificateNotVerified),
                        leg: None,
                        remote_mta: None,
                        policy: sts_applied(c, Some("validation-failure")),
                    })
                    .collect();
            }
            // STARTTLS, TLS 1.2 or later (all we speak) and a certificate verified for the
            // MX host name (also the SNI) against webpki's roots and /v1/trust: `verify`.
            level = Level::Verify;
        }
        hops.truncate(d.mx_address_limit.max(1) as usize);
        let destination = if key.mx_domain.is_empty() {
            key.hop.as_str()
        } else {
            key.mx_domain.as_str()
        };
        let Ok(_slots) = self.slots(destination, policy).await else {
            return all(Reply::new(451, "4.3.0 delivery stopped"));
        };
        let message = match self.body(&envelope.id, body).await {
            Ok(m) => m,
            Err(reply) => return all(reply),
        };
        let smtp_envelope = Envelope {
            from: envelope.sender.clone(),
            recipients: members
                .iter()
                .map(|i| state.recipients[*i].address.clone())
                .collect(),
            size: message.len() as u64,
            eight_bit: envelope.eight_bit,
            smtputf8: envelope.smtputf8,
        };
        let reuse = Reuse::of(d);
        self.pool.configure(reuse);
        let cx = Context {
            helo: &self.hostname,
            trust: &trust,
            deadlines: Deadlines::of(d),
            pool: (reuse.count > 0).then_some(&*self.pool),
            generation: policy.version,
        };
        let mut last = None;
        let mut sessions = 0;
        for h in &hops {
            let target = Target {
                host: h.host.clone(),
                addr: h.addr,
                level,
                strength: key.strength,
            };
            let a = attempt(&target, &cx, &smtp_envelope, message.clone()).await;
            let failure = sts.as_ref().and_then(|c| sts_failure(&c.policy, &a, level));
            let source = match &sts {
                Some(c) => sts_applied(c, failure),
                None => key.source(),
            };
            if let (Some(c), Some(failure)) = (&sts, failure) {
                tracing::warn!(%domain, id = %c.id, mode = c.policy.mode.as_str(), host = %a.host, %failure, "MTA-STS validation failed");
            }
            // A transaction on a reused connection is not a new session.
            if a.greeted && !a.reused {
                report(failure, Some(&a.host), Some(&a));
            }
            measure::attempt(&self.policy.metrics, &a);
            sessions += u32::from(a.greeted);
            let deferred_all = a
                .outcome
                .recipients
                .iter()
                .all(|(_, r)| (400..500).contains(&r.code));
            let leg = leg_of(&a);
            let remote = (!a.outcome.local).then(|| a.host.clone());
            let results: Vec<RcptResult> = a
                .outcome
                .recipients
                .into_iter()
                .map(|(_, reply)| RcptResult {
                    reply,
                    violation: a.violation,
                    leg: Some(leg.clone()),
                    remote_mta: remote.clone(),
                    policy: source.clone(),
                })
                .collect();
            // The next address is tried before deferring (PRODUCT.md 2.3).
            if !deferred_all {
                return results;
            }
            last = Some(results);
            if sessions >= d.mx_session_limit {
                break;
            }
        }
        last.unwrap_or_else(|| all(Reply::new(451, "4.4.0 no delivery attempt")))
    }
}

impl Queue {
    /// The message's bytes, read from the spool once per round.
    pub(super) async fn body(
        &self,
        id: &str,
        body: &mut Option<Arc<[u8]>>,
    ) -> Result<Arc<[u8]>, Reply> {
        if let Some(b) = body {
            return Ok(b.clone());
        }
        let id = id.to_string();
        match blocking(&self.spool, move |s| s.read(&id)).await {
            Ok((_, m)) => {
                let m: Arc<[u8]> = m.into();
                *body = Some(m.clone());
                Ok(m)
            }
            Err(e) => Err(Reply::new(451, format!("4.3.0 {e}"))),
        }
    }
}
