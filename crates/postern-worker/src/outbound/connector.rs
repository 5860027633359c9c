//! The connector: from a next hop to the addresses to try (the DNS handle), the connection
//! slots a delivery holds while it talks to one (per destination, then overall), and the
//! attempt itself over a cached or new connection (the pool). It owns all of that state; a
//! round asks it for hosts, slots and attempts.

use std::sync::{Arc, Mutex};

use postern_policy::{CompiledPolicy, NextHop};
use postern_smtp::{Envelope, Reply};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::deliver::{Attempt, Context, Deadlines, Target, attempt};
use super::destinations::Destinations;
use super::dns::Dns;
use super::own::OwnAddresses;
use super::pool::{Pool, Reuse};
use super::queue::QueueError;
use super::route::Hop;

pub struct Connector {
    pub(super) dns: Arc<Dns>,
    /// The EHLO name.
    hostname: String,
    /// The addresses that reach this worker: a next hop among them loops.
    own: OwnAddresses,
    /// Cached connections to next hops.
    pool: Arc<Pool>,
    /// Connections overall (`delivery.concurrency`), replaced when the limit changes.
    global: Mutex<Option<(u32, Arc<Semaphore>)>>,
    /// Connections per destination (`delivery.per_destination_concurrency`).
    destinations: Destinations,
}

/// The two slots a delivery holds while it talks to a next hop.
pub(super) struct Slots {
    _destination: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

impl Connector {
    pub fn new(dns: Arc<Dns>, hostname: String, own: OwnAddresses) -> Connector {
        Connector {
            dns,
            hostname,
            own,
            pool: Pool::start(),
            global: Mutex::new(None),
            destinations: Destinations::default(),
        }
    }

    /// The addresses to try for `hop` (`mx`, `host:port` or `[ip]:port`) of `domain`, in
    /// order, at most `mx_address_limit`; the recipients' reply when there are none.
    pub(super) async fn hosts(
        &self,
        hop: &str,
        domain: &str,
        policy: &CompiledPolicy,
    ) -> Result<Vec<Hop>, Reply> {
        let next_hop = NextHop::parse(hop)
            .map_err(|e| Reply::new(451, format!("4.3.5 bad next hop {hop}: {e}")))?;
        let router = self.dns.router(policy).map_err(|e| e.reply())?;
        let limit = policy.settings.delivery.mx_address_limit.max(1) as usize;
        router
            .hops_within(&next_hop, domain, &self.own, limit)
            .await
            .map_err(|e| e.reply())
    }

    /// Waits for a connection slot to `destination`, then for one overall: a delivery waiting
    /// behind a slow destination never holds a slot other destinations could use.
    pub(super) async fn slots(
        &self,
        destination: &str,
        policy: &CompiledPolicy,
    ) -> Result<Slots, QueueError> {
        let d = &policy.settings.delivery;
        let per_destination = self
            .destinations
            .semaphore(destination, d.per_destination_concurrency);
        let global = {
            let mut global = self.global.lock().expect("global slots lock");
            match global.as_ref() {
                Some((limit, s)) if *limit == d.concurrency => s.clone(),
                _ => {
                    let s = Arc::new(Semaphore::new(d.concurrency.max(1) as usize));
                    *global = Some((d.concurrency, s.clone()));
                    s
                }
            }
        };
        let destination = per_destination
            .acquire_owned()
            .await
            .map_err(|_| QueueError::Stopped)?;
        let global = global
            .acquire_owned()
            .await
            .map_err(|_| QueueError::Stopped)?;
        Ok(Slots {
            _destination: destination,
            _global: global,
        })
    }

    /// One attempt to `target` under `policy`'s deadlines, trust and reuse bounds.
    pub(super) async fn attempt(
        &self,
        target: &Target,
        envelope: &Envelope,
        message: Arc<[u8]>,
        policy: &CompiledPolicy,
    ) -> Attempt {
        let d = &policy.settings.delivery;
        let trust = policy.policy.trust.certificates();
        let reuse = Reuse::of(d);
        self.pool.configure(reuse);
        let cx = Context {
            helo: &self.hostname,
            trust: &trust,
            deadlines: Deadlines::of(d),
            pool: (reuse.count > 0).then_some(&*self.pool),
            generation: policy.version,
        };
        attempt(target, &cx, envelope, message).await
    }
}
