//! One delivery round of one message (docs/src/policy.md#outbound), owned by a `Round` from its
//! load to its
//! save: the due recipients are routed into groups by (next hop, effective level, strength,
//! deciding rule) (an MX next hop is the recipient domain's MX hosts, so it also splits by
//! domain); each group is delivered (`group.rs`: plan, hosts, attempt, judge) and each
//! recipient's result recorded (`record.rs`). Each recipient succeeds, defers or bounces on its
//! own; the bounced get one DSN per round. Nothing after the first delivery can end the round
//! early: whatever local step fails, what the next hops said is kept.

use std::collections::BTreeMap;
use std::sync::Arc;

use postern_events::{Leg, PolicySource};
use postern_policy::{
    CipherStrength, CompiledPolicy, Level, RuleRef, Violation, normalize_lookup_domain,
};
use postern_smtp::Reply;

use super::queue::{Queue, QueueError, blocking, local_retry_s};
use super::state::MessageState;
use crate::spool;

/// Messages up to this size are read with their envelope at the start of a round (one disk
/// visit); larger ones only once a connection is ready. A round waiting for a slot holds at most
/// this much body, so the 20,000 rounds in flight hold at most 320 MiB of bodies.
pub(super) const SMALL_MESSAGE: u64 = 16 * 1024;

/// Recipients that travel together.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupKey {
    /// `mx`, `host:port` or `[ip]:port`.
    pub hop: String,
    /// The recipient domain for an MX next hop (its MX hosts are its own); empty otherwise.
    pub mx_domain: String,
    pub level: Level,
    pub strength: CipherStrength,
    /// A local outbound rule set the level (it beats MTA-STS). Recipients of different
    /// domains, and so of different rules, of one relay hop travel together.
    pub rule: bool,
}

impl GroupKey {
    /// What set the level, before any MTA-STS policy is looked up (`record` names each
    /// recipient's own rule).
    pub(super) fn source(&self) -> PolicySource {
        if self.rule {
            PolicySource::Rule { id: String::new() }
        } else {
            PolicySource::Default
        }
    }
}

/// The due recipients of `state` by group, and those whose address cannot be routed at all.
pub fn route(
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
        let decision = policy.outbound_domain(&domain);
        let mx_domain = if hop.eq_ignore_ascii_case("mx") {
            domain
        } else {
            String::new()
        };
        let rule = matches!(decision.level_rule, RuleRef::Rule(_));
        groups
            .entry(GroupKey {
                hop,
                mx_domain,
                level: decision.level,
                strength: decision.cipher_strength,
                rule,
            })
            .or_default()
            .push(i);
    }
    (groups, unroutable)
}

/// What one recipient got from a group's delivery.
#[derive(Clone)]
pub(super) struct RcptResult {
    pub(super) reply: Reply,
    /// Set when the TLS policy deferred it.
    pub(super) violation: Option<Violation>,
    pub(super) leg: Option<Leg>,
    /// The next hop's host name when `reply` is its own.
    pub(super) remote_mta: Option<String>,
    /// What set the TLS level.
    pub(super) policy: PolicySource,
}

impl RcptResult {
    /// A result that reached no next hop.
    pub(super) fn local(reply: Reply, violation: Option<Violation>, policy: PolicySource) -> Self {
        RcptResult {
            reply,
            violation,
            leg: None,
            remote_mta: None,
            policy,
        }
    }
}

/// One message while it is delivered.
pub(super) struct Round<'a> {
    pub(super) queue: &'a Queue,
    pub(super) id: &'a str,
    pub(super) policy: &'a CompiledPolicy,
    pub(super) envelope: spool::Envelope,
    pub(super) state: MessageState,
    /// The message's bytes once read (small ones come with the envelope).
    pub(super) body: Option<Arc<[u8]>>,
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
                self.scheduler.keep_unsaved(id, None);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let round = Round {
            queue: self,
            id,
            policy,
            state: self.scheduler.state_of(id, &envelope, saved),
            envelope,
            body: body.map(Into::into),
        };
        Ok(round.run().await)
    }
}

impl Round<'_> {
    /// Route, then for each group: plan, hosts, attempt, judge, record; then the DSNs and the
    /// state file.
    async fn run(mut self) -> Option<u64> {
        let (queue, policy) = (self.queue, self.policy);
        let forced = queue.scheduler.schedule().take_forced(self.id);
        let (groups, unroutable) = route(&self.state, policy, queue.scheduler.now(), forced);
        for i in unroutable {
            let reply = Reply::new(550, "5.1.3 bad recipient address syntax");
            self.state.bounce(i, &reply);
        }
        let intake = policy.settings.reports.receive_address.clone();
        for (key, members) in groups {
            // TLS-RPT reports for us are taken here, not relayed (`intake`).
            let (reports, members): (Vec<usize>, Vec<usize>) = members.into_iter().partition(|i| {
                intake
                    .as_deref()
                    .is_some_and(|a| self.state.recipients[*i].address.eq_ignore_ascii_case(a))
            });
            for i in reports {
                let result = self.take_report(&key).await;
                self.record(i, result);
            }
            if members.is_empty() {
                continue;
            }
            let results = self.deliver(&key, &members).await;
            for (i, result) in members.into_iter().zip(results) {
                self.record(i, result);
            }
            // The next group may wait long for a slot (a next hop that never answers): a
            // large body is read again when its connection is ready, not held meanwhile.
            if self
                .body
                .as_ref()
                .is_some_and(|b| b.len() as u64 > SMALL_MESSAGE)
            {
                self.body = None;
            }
        }
        self.state
            .expire(queue.scheduler.now(), &policy.settings.queue);
        self.report_bounces().await;
        self.save(local_retry_s(policy)).await
    }

    /// The message's bytes, read from the spool once per round.
    pub(super) async fn body(&mut self) -> Result<Arc<[u8]>, Reply> {
        if let Some(b) = &self.body {
            return Ok(b.clone());
        }
        let id = self.id.to_string();
        match blocking(&self.queue.spool, move |s| s.read(&id)).await {
            Ok((_, m)) => {
                let m: Arc<[u8]> = m.into();
                self.body = Some(m.clone());
                Ok(m)
            }
            Err(e) => Err(Reply::new(451, format!("4.3.0 {e}"))),
        }
    }
}
