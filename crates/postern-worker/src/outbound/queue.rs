//! The delivery queue (PRODUCT.md 2.3, 2.4): every spooled message is delivered from the spool,
//! recipients grouped by (next hop, level, strength), each group on its own connection, the
//! next address tried before deferring. Each recipient succeeds, defers or fails on its own;
//! deferred ones are retried from `queue.first_retry_s`, doubling to `queue.max_retry_s`, until
//! `queue.lifetime_s`; failures get one DSN per message per round (never to `<>`). A message
//! leaves the spool once every recipient is final. Progress is kept in `<id>.state` beside the
//! message, so a worker killed mid-delivery retries what was not recorded (a duplicate at
//! worst, never a loss).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postern_events::{self as events, Certificate, Event, Leg, Tls};
use postern_policy::{CipherStrength, CompiledPolicy, Level, NextHop, normalize_lookup_domain};
use postern_smtp::{Envelope, Reply};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, watch};

use super::deliver::{Target, attempt};
use super::dsn;
use super::route::Router;
use crate::outbox::Outbox;
use crate::policy::PolicyStore;
use crate::spool::{self, Spool};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RcptStatus {
    Pending,
    Deferred,
    Delivered,
    Bounced,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RcptState {
    pub address: String,
    pub status: RcptStatus,
    pub attempts: u32,
    /// Unix seconds.
    pub next_attempt: u64,
    /// The last reply or reason.
    pub last: Option<String>,
    /// The last attempt's next hop, `host[ip]`.
    pub host: Option<String>,
    /// Every attempt, oldest first (PRODUCT.md 5: host, IP, TLS, reply and reason).
    #[serde(default)]
    pub history: Vec<AttemptRecord>,
}

impl RcptState {
    pub fn pending(address: &str) -> RcptState {
        RcptState {
            address: address.to_string(),
            status: RcptStatus::Pending,
            attempts: 0,
            next_attempt: 0,
            last: None,
            host: None,
            history: Vec::new(),
        }
    }
}

/// One delivery attempt of one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Unix seconds.
    pub at: u64,
    /// The next hop reached; `None` when none was (no route, say).
    pub leg: Option<Leg>,
    /// The reply, or our own reason.
    pub reply: String,
}

/// How `attempt` travelled, as tracking records it.
fn leg_of(attempt: &super::deliver::Attempt) -> Leg {
    Leg {
        host: attempt.host.clone(),
        ip: attempt.ip.clone(),
        tls: attempt.tls.as_ref().map(|t| Tls {
            version: t.version.into(),
            cipher: t.cipher.into(),
            key_exchange: t.key_exchange.into(),
            certificate: match t.certificate.as_str() {
                "verified" => Certificate::Verified,
                "unverified" => Certificate::Unverified,
                _ => Certificate::None,
            },
        }),
        tls_fallback: attempt.tls_fallback,
    }
}

/// `host[ip]`, as in the DSN's Remote-MTA and the queue listing.
fn display(leg: &Leg) -> String {
    format!("{}[{}]", leg.host, leg.ip)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageState {
    /// Unix seconds of the first delivery round (the lifetime counts from here).
    pub created: u64,
    pub recipients: Vec<RcptState>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

type RouterKey = (Vec<String>, u16);

/// When each queued message is next due, and what operators asked for it.
#[derive(Default)]
pub(super) struct Schedule {
    /// (due, id), earliest first.
    due: BTreeSet<(u64, String)>,
    /// id → due, for the operators' commands.
    at: HashMap<String, u64>,
    /// Messages in a delivery round now.
    pub(super) running: HashSet<String>,
    /// Messages whose deferred recipients are due at their next round, whatever their time.
    forced: HashSet<String>,
    /// Deletions asked for during a round, done when it ends (the flag: with a DSN).
    pub(super) deleting: HashMap<String, bool>,
}

impl Schedule {
    pub(super) fn insert(&mut self, id: String, at: u64) {
        if let Some(old) = self.at.insert(id.clone(), at) {
            self.due.remove(&(old, id.clone()));
        }
        self.due.insert((at, id));
    }

    pub(super) fn remove(&mut self, id: &str) -> bool {
        match self.at.remove(id) {
            Some(at) => self.due.remove(&(at, id.to_string())),
            None => false,
        }
    }

    /// The first message due by `now`, marked running.
    fn take_due(&mut self, now: u64) -> Option<String> {
        let (at, _) = self.due.first()?;
        if *at > now {
            return None;
        }
        let (_, id) = self.due.pop_first()?;
        self.at.remove(&id);
        self.running.insert(id.clone());
        Some(id)
    }

    /// Makes `id` due now with every deferred recipient; whether it is queued here.
    pub(super) fn force(&mut self, id: &str) -> bool {
        if self.running.contains(id) {
            self.forced.insert(id.to_string());
            true
        } else if self.at.contains_key(id) {
            self.forced.insert(id.to_string());
            self.insert(id.to_string(), 0);
            true
        } else {
            false
        }
    }

    /// Every queued id (waiting or in a round).
    pub(super) fn ids(&self) -> impl Iterator<Item = String> + '_ {
        self.at.keys().chain(self.running.iter()).cloned()
    }

    pub(super) fn len(&self) -> usize {
        self.at.len() + self.running.len()
    }
}

pub struct Queue {
    pub(super) spool: Spool,
    policy: Arc<PolicyStore>,
    hostname: String,
    /// This worker's SMTP address: a next hop that is this worker loops.
    own_smtp: SocketAddr,
    /// Ids of newly queued messages (from the SMTP sessions, and our own DSNs).
    queued: mpsc::UnboundedSender<String>,
    pub(super) outbox: Arc<Outbox>,
    pub(super) schedule: Mutex<Schedule>,
    /// Wakes the run loop after an operator's command.
    pub(super) wake: Notify,
    /// The resolver for the current (nameservers, MX port) settings.
    router: Mutex<Option<(RouterKey, Arc<Router>)>>,
    /// Connections per destination (`delivery.per_destination_concurrency`), by (destination,
    /// limit) so that a changed limit takes effect for new deliveries.
    destinations: Mutex<HashMap<(String, u32), Arc<tokio::sync::Semaphore>>>,
    /// Connect and reply timeout of each attempt.
    pub attempt_timeout: Duration,
}

impl Queue {
    pub fn new(
        spool: Spool,
        policy: Arc<PolicyStore>,
        hostname: String,
        own_smtp: SocketAddr,
        queued: mpsc::UnboundedSender<String>,
        outbox: Arc<Outbox>,
    ) -> Arc<Queue> {
        let mut schedule = Schedule::default();
        for id in spool.list().unwrap_or_default() {
            schedule.insert(id, 0);
        }
        Arc::new(Queue {
            spool,
            policy,
            hostname,
            own_smtp,
            queued,
            outbox,
            schedule: Mutex::new(schedule),
            wake: Notify::new(),
            router: Mutex::new(None),
            destinations: Mutex::default(),
            attempt_timeout: Duration::from_secs(60),
        })
    }

    pub(super) fn schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().expect("schedule lock")
    }

    /// Runs delivery rounds until `shutdown` turns true. The schedule lives in memory: the
    /// spool is listed once at start, new messages arrive on `new_ids`, and each round says
    /// when its message is next due.
    pub async fn run(
        self: Arc<Self>,
        mut new_ids: mpsc::UnboundedReceiver<String>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let (done_tx, mut done) = mpsc::unbounded_channel::<(String, Option<u64>)>();
        loop {
            if let Some(policy) = self.policy.current() {
                let limit = (policy.settings.delivery.concurrency as usize).max(1);
                loop {
                    let id = {
                        let mut schedule = self.schedule();
                        if schedule.running.len() >= limit {
                            break;
                        }
                        match schedule.take_due(now()) {
                            Some(id) => id,
                            None => break,
                        }
                    };
                    let (this, policy, done_tx) = (self.clone(), policy.clone(), done_tx.clone());
                    tokio::spawn(async move {
                        let next = match this.round(&id, &policy).await {
                            Ok(next) => next,
                            Err(e) => {
                                tracing::error!(%id, error = %e, "delivery round failed");
                                Some(now() + 5)
                            }
                        };
                        let _ = done_tx.send((id, next));
                    });
                }
            }
            let wait = self
                .schedule()
                .due
                .first()
                .map_or(Duration::from_secs(1), |(at, _)| {
                    Duration::from_secs(at.saturating_sub(now()).clamp(0, 1))
                });
            tokio::select! {
                Some(id) = new_ids.recv() => self.schedule().insert(id, 0),
                Some((id, next)) = done.recv() => self.round_done(id, next),
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait.max(Duration::from_millis(50))) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// Reschedules a message after its round, or carries out what was asked during it.
    fn round_done(self: &Arc<Self>, id: String, next: Option<u64>) {
        let mut schedule = self.schedule();
        schedule.running.remove(&id);
        if let Some(dsn) = schedule.deleting.remove(&id) {
            schedule.forced.remove(&id);
            drop(schedule);
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.delete_now(&id, dsn).await {
                    tracing::error!(%id, error = %e, "deleting a queued message failed");
                }
            });
        } else if let Some(at) = next {
            let at = if schedule.forced.contains(&id) { 0 } else { at };
            schedule.insert(id, at);
        }
    }

    fn router(&self, policy: &CompiledPolicy) -> Result<Arc<Router>, String> {
        let key = (
            policy.settings.delivery.nameservers.clone(),
            policy.settings.delivery.mx_port,
        );
        let mut cache = self.router.lock().expect("router lock");
        if let Some((k, r)) = cache.as_ref()
            && *k == key
        {
            return Ok(r.clone());
        }
        let router = Arc::new(Router::new(&key.0, key.1)?);
        *cache = Some((key, router.clone()));
        Ok(router)
    }

    fn is_self(&self, addr: SocketAddr) -> bool {
        addr.port() == self.own_smtp.port()
            && (addr.ip() == self.own_smtp.ip()
                || (self.own_smtp.ip().is_unspecified() && addr.ip().is_loopback()))
    }

    /// One delivery round for message `id`; returns when it is next due (`None`: done).
    async fn round(&self, id: &str, policy: &CompiledPolicy) -> Result<Option<u64>, String> {
        let (envelope, message) = match self.spool.read(id) {
            Ok(m) => m,
            // Gone from the spool (removed by an operator): nothing left to do.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let mut state: MessageState = match self.spool.read_state(id).map_err(|e| e.to_string())? {
            Some(s) => s,
            None => MessageState {
                created: now(),
                recipients: envelope
                    .recipients
                    .iter()
                    .map(|r| RcptState::pending(r))
                    .collect(),
            },
        };
        let settings = &policy.settings;
        let round_start = now();
        // An operator's retry or flush makes every deferred recipient due now.
        let forced = self.schedule().forced.remove(id);
        // Group the due recipients by (next hop, level, strength, domain for MX).
        let mut groups: BTreeMap<(String, String, Level, CipherStrength), Vec<usize>> =
            BTreeMap::new();
        let mut bounced_now = Vec::new();
        for (i, r) in state.recipients.iter().enumerate() {
            if !matches!(r.status, RcptStatus::Pending | RcptStatus::Deferred)
                || (r.next_attempt > round_start && !forced)
            {
                continue;
            }
            let domain = r
                .address
                .rsplit_once('@')
                .and_then(|(_, d)| normalize_lookup_domain(d));
            let Some(domain) = domain else {
                bounced_now.push((i, "5.1.3 bad recipient address syntax".to_string(), None));
                continue;
            };
            let hop = match policy.relay_domain(&domain) {
                Some(relay) => relay.next_hop.clone(),
                None => settings
                    .delivery
                    .smart_host
                    .clone()
                    .unwrap_or_else(|| "mx".into()),
            };
            let decision = policy.outbound(&r.address);
            groups
                .entry((hop, domain, decision.level, decision.cipher_strength))
                .or_default()
                .push(i);
        }
        let router = self.router(policy)?;
        let trust = policy.policy.trust.certificates();
        for ((hop, domain, level, strength), members) in groups {
            let recipients: Vec<String> = members
                .iter()
                .map(|i| state.recipients[*i].address.clone())
                .collect();
            let results = self
                .deliver_group(
                    &router,
                    &hop,
                    &domain,
                    level,
                    strength,
                    &envelope,
                    &recipients,
                    &message,
                    &trust,
                    settings.delivery.per_destination_concurrency,
                )
                .await;
            for (i, (reply, leg)) in members.iter().zip(results) {
                let r = &mut state.recipients[*i];
                r.attempts += 1;
                r.host = leg.as_ref().map(display);
                let text = reply.one_line();
                r.last = Some(text.clone());
                r.history.push(AttemptRecord {
                    at: now(),
                    leg: leg.clone(),
                    reply: text.clone(),
                });
                self.track(
                    policy,
                    Event::Attempt(events::Attempt {
                        queue_id: id.to_string(),
                        recipient: r.address.clone(),
                        leg,
                        reply: text.clone(),
                    }),
                );
                if reply.code < 300 {
                    r.status = RcptStatus::Delivered;
                    self.track(
                        policy,
                        Event::Delivered(events::Delivered {
                            queue_id: id.to_string(),
                            recipient: r.address.clone(),
                            reply: text,
                        }),
                    );
                } else if reply.code >= 500 {
                    bounced_now.push((*i, text, r.host.clone()));
                } else {
                    r.status = RcptStatus::Deferred;
                    let backoff = u64::from(settings.queue.first_retry_s)
                        .saturating_mul(1 << (r.attempts - 1).min(20));
                    r.next_attempt = now() + backoff.min(u64::from(settings.queue.max_retry_s));
                    self.track(
                        policy,
                        Event::Deferred(events::Deferred {
                            queue_id: id.to_string(),
                            recipient: r.address.clone(),
                            reason: text,
                            next_attempt_ms: r.next_attempt * 1000,
                        }),
                    );
                }
            }
        }
        // Deferred past the lifetime: final.
        let expired = now() >= state.created + u64::from(settings.queue.lifetime_s);
        if expired {
            for (i, r) in state.recipients.iter().enumerate() {
                if r.status == RcptStatus::Deferred {
                    let last = r.last.clone().unwrap_or_default();
                    bounced_now.push((
                        i,
                        format!("4.4.7 delivery time expired; last: {last}"),
                        r.host.clone(),
                    ));
                }
            }
        }
        for (i, text, _) in &bounced_now {
            state.recipients[*i].status = RcptStatus::Bounced;
            state.recipients[*i].last = Some(text.clone());
        }
        let failed: Vec<(&str, &str, Option<&str>)> = bounced_now
            .iter()
            .map(|(i, text, host)| {
                (
                    state.recipients[*i].address.as_str(),
                    text.as_str(),
                    host.as_deref(),
                )
            })
            .collect();
        let dsn = self.report(id, &envelope, &message, &failed).await?;
        for (recipient, reason, _) in &failed {
            self.track(
                policy,
                Event::Bounced(events::Bounced {
                    queue_id: id.to_string(),
                    recipient: recipient.to_string(),
                    reason: reason.to_string(),
                    dsn: dsn.clone(),
                }),
            );
        }
        if state
            .recipients
            .iter()
            .all(|r| matches!(r.status, RcptStatus::Delivered | RcptStatus::Bounced))
        {
            self.spool.remove(id).await.map_err(|e| e.to_string())?;
            return Ok(None);
        }
        self.spool
            .write_state(id, &state)
            .await
            .map_err(|e| e.to_string())?;
        Ok(state
            .recipients
            .iter()
            .filter(|r| r.status == RcptStatus::Deferred)
            .map(|r| r.next_attempt)
            .min())
    }

    /// Reports `failed` (recipient, reason, remote MTA) to the sender in one DSN. A message
    /// from `<>` (a DSN itself) gets none: it is dropped, and said so.
    pub(super) async fn report(
        &self,
        id: &str,
        envelope: &spool::Envelope,
        message: &[u8],
        failed: &[(&str, &str, Option<&str>)],
    ) -> Result<Option<String>, String> {
        if failed.is_empty() {
            return Ok(None);
        }
        if envelope.sender.is_empty() {
            for (recipient, reason, _) in failed {
                tracing::warn!(%id, %recipient, %reason, "undeliverable delivery status notification dropped");
            }
            return Ok(None);
        }
        let failed: Vec<dsn::Failed<'_>> = failed
            .iter()
            .map(|(recipient, text, host)| dsn::Failed {
                recipient,
                status: dsn::status_of(text, "5.0.0"),
                remote_mta: *host,
                diagnostic: text,
            })
            .collect();
        let report = dsn::build(
            &self.hostname,
            id,
            &envelope.sender,
            &failed,
            message,
            SystemTime::now(),
        );
        self.spool_dsn(envelope, report).await.map(Some)
    }

    pub(super) fn policy_version(&self) -> u64 {
        self.policy.version()
    }

    /// Records a tracking event under `policy`'s version.
    pub(super) fn track(&self, policy: &CompiledPolicy, event: Event) {
        self.outbox.emit(policy.version, event);
    }

    /// Delivers to one group; a reply (and how the attempt that gave it travelled) per recipient.
    #[allow(clippy::too_many_arguments)]
    async fn deliver_group(
        &self,
        router: &Router,
        hop: &str,
        domain: &str,
        level: Level,
        strength: CipherStrength,
        envelope: &spool::Envelope,
        recipients: &[String],
        message: &[u8],
        trust: &[rustls::pki_types::CertificateDer<'static>],
        per_destination: u32,
    ) -> Vec<(Reply, Option<Leg>)> {
        let all = |reply: Reply| recipients.iter().map(|_| (reply.clone(), None)).collect();
        let next_hop = match NextHop::parse(hop) {
            Ok(h) => h,
            Err(e) => return all(Reply::new(451, format!("4.3.5 bad next hop {hop}: {e}"))),
        };
        let hops = match router.hops(&next_hop, domain).await {
            Ok(h) if !h.is_empty() => h,
            Ok(_) => return all(Reply::new(451, format!("4.4.3 no address for {domain}"))),
            Err(reason) => return all(Reply::new(451, reason)),
        };
        if hops.iter().any(|h| self.is_self(h.addr)) {
            return all(Reply::new(
                554,
                format!("5.4.6 mail for {domain} loops back to myself"),
            ));
        }
        // At most `per_destination` connections to one destination (a next hop, or a domain's
        // MX hosts) at a time.
        let destination = if hop.eq_ignore_ascii_case("mx") {
            domain.to_string()
        } else {
            hop.to_string()
        };
        let slots = {
            let mut map = self.destinations.lock().expect("destinations lock");
            map.entry((destination, per_destination))
                .or_insert_with(|| {
                    Arc::new(tokio::sync::Semaphore::new(per_destination.max(1) as usize))
                })
                .clone()
        };
        let Ok(_slot) = slots.acquire_owned().await else {
            return all(Reply::new(451, "4.3.0 delivery stopped"));
        };
        let smtp_envelope = Envelope {
            from: envelope.sender.clone(),
            recipients: recipients.to_vec(),
            size: message.len() as u64,
            eight_bit: envelope.eight_bit,
            smtputf8: envelope.smtputf8,
        };
        let mut last = None;
        for h in &hops {
            let target = Target {
                host: h.host.clone(),
                addr: h.addr,
                level,
                strength,
            };
            let a = attempt(
                &target,
                &self.hostname,
                &smtp_envelope,
                message,
                trust,
                self.attempt_timeout,
            )
            .await;
            let deferred_all = a
                .outcome
                .recipients
                .iter()
                .all(|(_, r)| (400..500).contains(&r.code));
            let leg = leg_of(&a);
            let results: Vec<(Reply, Option<Leg>)> = a
                .outcome
                .recipients
                .into_iter()
                .map(|(_, r)| (r, Some(leg.clone())))
                .collect();
            // The next address is tried before deferring (PRODUCT.md 2.3).
            if !deferred_all {
                return results;
            }
            last = Some(results);
        }
        last.unwrap_or_else(|| all(Reply::new(451, "4.4.0 no delivery attempt")))
    }

    /// Queues a bounce to the original sender, with the null envelope sender.
    async fn spool_dsn(
        &self,
        original: &spool::Envelope,
        report: Vec<u8>,
    ) -> Result<String, String> {
        let id = ulid::Ulid::new().to_string();
        let envelope = spool::Envelope {
            id: id.clone(),
            sender: String::new(),
            recipients: vec![original.sender.clone()],
            received_at: crate::inbound::rfc3339(SystemTime::now()),
            client_ip: "127.0.0.1".into(),
            helo: self.hostname.clone(),
            tls: None,
            policy_version: original.policy_version,
            smtputf8: false,
            eight_bit: false,
        };
        let received = events::Received {
            queue_id: id.clone(),
            session: String::new(),
            source: events::Source {
                ip: envelope.client_ip.clone(),
                helo: envelope.helo.clone(),
                tls: None,
            },
            sender: String::new(),
            recipients: envelope.recipients.clone(),
            size: report.len() as u64,
            subject: Some(dsn::SUBJECT.into()),
            message_id: Some(format!("{}.dsn@{}", original.id, self.hostname)),
        };
        let spool = self.spool.clone();
        let incoming = tokio::task::spawn_blocking(move || {
            let mut incoming = spool.begin(&envelope, b"");
            incoming.write(&report);
            incoming
        })
        .await
        .map_err(|e| e.to_string())?;
        self.spool
            .commit(incoming)
            .await
            .map_err(|e| e.to_string())?;
        self.outbox
            .emit(self.policy_version(), Event::Received(received));
        let _ = self.queued.send(id.clone());
        tracing::info!(%id, original = %original.id, "queued a delivery status notification");
        Ok(id)
    }
}
