//! Delivering one group of a round's recipients: route (the connector's hosts), plan (the
//! delivery plan of postern-policy, with the domain's MTA-STS policy when it may decide), the
//! hosts the plan allows, then an attempt per address until one is not deferred for every
//! member (docs/src/policy.md#outbound: the next address is tried before deferring), within
//! `mx_address_limit` addresses and `mx_session_limit` sessions. The plan judges each attempt;
//! this records what it said.

use postern_events::{self as events, Event, Leg, PolicySource, Tls};
use postern_policy::{
    DeliveryPlan, Destination, KnownPolicy, NoHostAllowed, normalize_lookup_domain,
};
use postern_smtp::{Envelope, Reply};
use postern_sts::ResultType;

use super::deliver::{Attempt, Target};
use super::measure;
use super::round::{GroupKey, RcptResult, Round};
use crate::sts::Lookup;

/// The plan of a group, and what the MTA-STS lookup found.
struct Planned {
    plan: DeliveryPlan,
    lookup: Lookup,
}

impl Round<'_> {
    /// Delivers to one group; a result per member. Never fails: a local failure is the
    /// members' deferral reason.
    pub(super) async fn deliver(&mut self, key: &GroupKey, members: &[usize]) -> Vec<RcptResult> {
        let all = |reply: Reply| -> Vec<RcptResult> {
            let one = RcptResult::local(reply, None, key.source());
            members.iter().map(|_| one.clone()).collect()
        };
        let domain = self.domain(key, members);
        let (queue, policy) = (self.queue, self.policy);
        let hosts = match queue.connector.hosts(&key.hop, &domain, policy).await {
            Ok(h) => h,
            Err(reply) => return all(reply),
        };
        let Planned { plan, lookup } = self.plan(key, &domain).await;
        let mut hosts = match plan.hosts(hosts, |h| &h.host) {
            Ok(h) => h,
            Err(refused) => return self.none_allowed(&plan, &lookup, refused, members.len()),
        };
        hosts.truncate(policy.settings.delivery.mx_address_limit.max(1) as usize);
        let destination = if key.mx_domain.is_empty() {
            key.hop.as_str()
        } else {
            key.mx_domain.as_str()
        };
        let Ok(_slots) = queue.connector.slots(destination, policy).await else {
            return all(Reply::new(451, "4.3.0 delivery stopped"));
        };
        let message = match self.body().await {
            Ok(m) => m,
            Err(reply) => return all(reply),
        };
        let envelope = Envelope {
            from: self.envelope.sender.clone(),
            recipients: members
                .iter()
                .map(|i| self.state.recipients[*i].address.clone())
                .collect(),
            size: message.len() as u64,
            eight_bit: self.envelope.eight_bit,
            smtputf8: self.envelope.smtputf8,
        };
        let mut last = None;
        let mut sessions = 0;
        for h in &hosts {
            let target = Target {
                host: h.host.clone(),
                addr: h.addr,
                level: plan.level,
                strength: plan.strength,
            };
            let a = queue
                .connector
                .attempt(&target, &envelope, message.clone(), policy)
                .await;
            sessions += u32::from(a.greeted);
            let (results, deferred_all) = self.judged(&plan, &lookup, a);
            if !deferred_all {
                return results;
            }
            last = Some(results);
            if sessions >= policy.settings.delivery.mx_session_limit {
                break;
            }
        }
        last.unwrap_or_else(|| all(Reply::new(451, "4.4.0 no delivery attempt")))
    }

    /// The domain the group goes to: its MX domain, or its first recipient's.
    fn domain(&self, key: &GroupKey, members: &[usize]) -> String {
        if !key.mx_domain.is_empty() {
            return key.mx_domain.clone();
        }
        // Normalised as `route` did when it grouped the recipient (its rule is the group's).
        let address = &self.state.recipients[members[0]].address;
        address
            .rsplit_once('@')
            .and_then(|(_, d)| normalize_lookup_domain(d))
            .unwrap_or_default()
    }

    /// The group's delivery plan; MTA-STS is looked up only when it may decide.
    async fn plan(&self, key: &GroupKey, domain: &str) -> Planned {
        let (queue, policy) = (self.queue, self.policy);
        let mut destination = Destination {
            domain,
            mx: !key.mx_domain.is_empty(),
            tls_optional: self.envelope.tls_optional,
            mta_sts: None,
        };
        let plan = policy.delivery_plan(&destination);
        if !plan.consults_mta_sts {
            return Planned {
                plan,
                lookup: Lookup::default(),
            };
        }
        let now = queue.scheduler.now();
        let lookup = queue.sts.lookup(domain, policy, now).await;
        if let Some(c) = lookup.policy.as_ref().filter(|_| lookup.fetched) {
            queue.track(
                policy,
                Event::StsPolicy(events::StsPolicy {
                    domain: domain.to_string(),
                    id: c.id.clone(),
                    mode: c.policy.mode,
                    max_age: c.policy.max_age,
                    mx: c.policy.mx.clone(),
                    fetched_ms: c.fetched_at.saturating_mul(1000),
                }),
            );
        }
        destination.mta_sts = lookup.policy.as_ref().map(|c| KnownPolicy {
            id: &c.id,
            policy: &c.policy,
        });
        Planned {
            plan: policy.delivery_plan(&destination),
            lookup,
        }
    }

    /// An enforced policy allowed none of the MX hosts: one failed session per name, and
    /// every member deferred.
    fn none_allowed(
        &self,
        plan: &DeliveryPlan,
        lookup: &Lookup,
        refused: NoHostAllowed,
        members: usize,
    ) -> Vec<RcptResult> {
        for name in &refused.names {
            let result = Some(ResultType::ValidationFailure);
            self.session(plan, lookup, result, Some(name), None);
        }
        let one = RcptResult::local(
            refused.reply,
            Some(NoHostAllowed::VIOLATION),
            refused.source,
        );
        (0..members).map(|_| one.clone()).collect()
    }

    /// What the plan makes of attempt `a`: the members' results, and whether all of them were
    /// deferred (then the next address is tried).
    fn judged(&self, plan: &DeliveryPlan, lookup: &Lookup, a: Attempt) -> (Vec<RcptResult>, bool) {
        let judgement = plan.judge(&a.facts(), lookup.failure.as_ref());
        if let (PolicySource::MtaSts(s), Some(failure)) = (&judgement.source, &judgement.failure) {
            tracing::warn!(domain = %plan.domain, id = %s.id, mode = %s.mode, host = %a.host, %failure, "MTA-STS validation failed");
        }
        if let Some(result) = judgement.session {
            self.session(plan, lookup, result, Some(&a.host), Some(&a));
        }
        measure::attempt(&self.queue.policy.metrics, &a);
        let deferred_all = a
            .outcome
            .recipients
            .iter()
            .all(|(_, r)| (400..500).contains(&r.code));
        let leg = leg_of(&a);
        let remote = (!a.outcome.local).then(|| a.host.clone());
        let results = a
            .outcome
            .recipients
            .into_iter()
            .map(|(_, reply)| RcptResult {
                reply,
                violation: a.violation,
                leg: Some(leg.clone()),
                remote_mta: remote.clone(),
                policy: judgement.source.clone(),
            })
            .collect();
        (results, deferred_all)
    }

    /// A session with the domain's MX hosts, for TLS-RPT (RFC 8460: not a relay or smart host).
    fn session(
        &self,
        plan: &DeliveryPlan,
        lookup: &Lookup,
        result: Option<ResultType>,
        mx: Option<&str>,
        a: Option<&Attempt>,
    ) {
        if !plan.reported {
            return;
        }
        let sts = lookup.policy.as_ref().filter(|_| plan.sts.is_some());
        self.queue.track(
            self.policy,
            Event::TlsSession(events::TlsSession {
                domain: plan.domain.clone(),
                sts: sts.map(session_policy),
                result,
                sending_ip: a.and_then(|a| a.local_ip.clone()),
                receiving_mx: mx.map(str::to_string),
                receiving_ip: a.map(|a| a.ip.clone()),
                at_ms: postern_time::now_ms(),
            }),
        );
    }
}

/// The policy as TLS-RPT describes it: its lines as served and its mx patterns.
fn session_policy(c: &postern_sts::Cached) -> events::SessionPolicy {
    events::SessionPolicy {
        id: c.id.clone(),
        lines: c
            .text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        mx: c.policy.mx.clone(),
    }
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
