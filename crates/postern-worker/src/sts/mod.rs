//! MTA-STS on the worker (RFC 8461): the DNS and HTTPS around `postern-sts`'s pure logic. One
//! `StsCache` per worker (the MTA-STS resolver, with its own handle on the worker's DNS) keeps
//! each domain's policy in memory and on disk (`store`), asks
//! `postern_sts::next_step` whether to fetch, fetches (`fetch`) one domain at a time and
//! remembers failures so that they are retried no sooner than the back-off.

pub mod fetch;
pub mod store;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postern_policy::CompiledPolicy;
use postern_sts::{Cached, ResultType, Step, Txt, next_step, sts_record};
use rustls::pki_types::CertificateDer;

use crate::outbound::dns::Dns;
use crate::outbound::route::Router;

/// How long a policy fetch may take, from connect to the last byte.
const FETCH_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Default, Clone)]
struct Entry {
    cached: Option<Cached>,
    /// When the last fetch failed (unix seconds), and how.
    last_failure: Option<(u64, ResultType)>,
}

/// The policy a delivery follows.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    /// A valid policy (fetched now or cached), whatever its mode.
    pub policy: Option<Cached>,
    /// `policy` was fetched just now (tracking is told, for the control plane's view).
    pub fetched: bool,
    /// The domain publishes a policy that could not be fetched (now or within the back-off)
    /// and none is cached: why (`sts-policy-fetch-error`, ...).
    pub failure: Option<ResultType>,
}

/// Entries kept before the first prune; then twice what the last prune left.
const PRUNE_AT: usize = 1024;

impl Entry {
    /// Whether the entry still decides anything at `now`: a policy not yet expired, or a
    /// failure within its back-off. Others are forgotten (a domain we mailed once must not
    /// hold memory for ever); the next delivery to it looks again.
    fn live(&self, now: u64) -> bool {
        self.cached.as_ref().is_some_and(|c| c.valid_at(now))
            || self
                .last_failure
                .as_ref()
                .is_some_and(|(at, _)| now < at + postern_sts::FAILURE_BACKOFF_S)
    }
}

/// Domains' entries, pruned of dead ones as they grow.
#[derive(Default)]
struct Entries {
    map: HashMap<String, Entry>,
    prune_at: usize,
}

impl Entries {
    fn insert(&mut self, domain: String, entry: Entry, now: u64) -> Vec<String> {
        self.map.insert(domain, entry);
        if self.map.len() < self.prune_at.max(PRUNE_AT) {
            return Vec::new();
        }
        let dead: Vec<String> = self
            .map
            .iter()
            .filter(|(_, e)| !e.live(now))
            .map(|(d, _)| d.clone())
            .collect();
        for d in &dead {
            self.map.remove(d);
        }
        self.prune_at = 2 * self.map.len();
        dead
    }
}

pub struct StsCache {
    dns: Arc<Dns>,
    dir: PathBuf,
    entries: Mutex<Entries>,
    /// Fetches for one domain are never concurrent: the second waits and uses the first's.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl StsCache {
    /// The cache kept under `spool` (loaded now: call from a blocking context or at start).
    pub fn open(spool: &Path, dns: Arc<Dns>) -> StsCache {
        let dir = store::dir(spool);
        let entries = store::load(&dir, postern_time::now_s())
            .into_iter()
            .map(|(d, c)| {
                (
                    d,
                    Entry {
                        cached: Some(c),
                        last_failure: None,
                    },
                )
            })
            .collect();
        StsCache {
            dns,
            dir,
            entries: Mutex::new(Entries {
                map: entries,
                prune_at: 0,
            }),
            fetching: Mutex::default(),
        }
    }

    fn entry(&self, domain: &str) -> Entry {
        self.entries
            .lock()
            .expect("sts lock")
            .map
            .get(domain)
            .cloned()
            .unwrap_or_default()
    }

    /// Records `entry` for `domain`; the policies of domains pruned meanwhile leave the disk.
    fn set(&self, domain: &str, entry: Entry, now: u64) {
        let dead = self
            .entries
            .lock()
            .expect("sts lock")
            .insert(domain.to_string(), entry, now);
        if !dead.is_empty() {
            let dir = self.dir.clone();
            tokio::task::spawn_blocking(move || {
                for d in dead {
                    store::remove(&dir, &d);
                }
            });
        }
    }

    /// The policy for mail to `domain` at `now` (unix seconds): TXT `_mta-sts.<domain>`, then
    /// the cache or a fetch from `delivery.mta_sts_port` of `mta-sts.<domain>`, its
    /// certificate checked against webpki's roots and `policy`'s trusted CAs.
    pub async fn lookup(&self, domain: &str, policy: &CompiledPolicy, now: u64) -> Lookup {
        let router = match self.dns.router(policy) {
            Ok(r) => r,
            // No resolver: as a failed TXT lookup (a cached policy still applies).
            Err(_) => return self.cached(domain, now, false),
        };
        let (port, extra_roots) = (
            policy.settings.delivery.mta_sts_port,
            policy.policy.trust.certificates(),
        );
        let (router, extra_roots) = (&*router, &extra_roots[..]);
        let txt = match router.txt(&format!("_mta-sts.{domain}")).await {
            Ok(records) => match sts_record(&records) {
                Ok(r) => Txt::Record(r.id),
                Err(_) => Txt::Absent,
            },
            Err(_) => Txt::Failed,
        };
        // Most deliveries use the cache, decided without waiting for anyone.
        let Txt::Record(id) = &txt else {
            return self.cached(domain, now, false);
        };
        if self.step(domain, &txt, now) != Step::Fetch {
            return self.cached(domain, now, true);
        }
        // One fetch per domain at a time; a delivery that waited here finds the first one's
        // result (or its failure, within the back-off) and does not fetch again.
        let gate = self
            .fetching
            .lock()
            .expect("sts lock")
            .entry(domain.to_string())
            .or_default()
            .clone();
        let guard = gate.lock().await;
        let found = if self.step(domain, &txt, now) == Step::Fetch {
            self.fetch_now(domain, id, router, port, extra_roots, now)
                .await
        } else {
            self.cached(domain, now, true)
        };
        drop(guard);
        // Forget the gate when nobody else holds it (new arrivals clone it under this lock).
        let mut gates = self.fetching.lock().expect("sts lock");
        if Arc::strong_count(&gate) == 2 {
            gates.remove(domain);
        }
        found
    }

    fn step(&self, domain: &str, txt: &Txt, now: u64) -> Step {
        let entry = self.entry(domain);
        next_step(
            now,
            entry.cached.as_ref(),
            txt,
            entry.last_failure.as_ref().map(|f| f.0),
        )
    }

    /// Without a fetch, the cached policy applies while it is valid (`next_step` answers
    /// `UseCached` exactly then); `published`: the domain has an `_mta-sts` record, so a
    /// recent failed fetch is what left it without a policy.
    fn cached(&self, domain: &str, now: u64, published: bool) -> Lookup {
        let entry = self.entry(domain);
        let policy = entry.cached.filter(|c| c.valid_at(now));
        let failure = match (&policy, entry.last_failure) {
            (None, Some((_, kind))) if published => Some(kind),
            _ => None,
        };
        Lookup {
            policy,
            fetched: false,
            failure,
        }
    }

    async fn fetch_now(
        &self,
        domain: &str,
        id: &str,
        router: &Router,
        port: u16,
        extra_roots: &[CertificateDer<'static>],
        now: u64,
    ) -> Lookup {
        match self.fetch(domain, router, port, extra_roots).await {
            Ok((text, policy)) => {
                let cached = Cached {
                    id: id.to_string(),
                    policy,
                    text,
                    fetched_at: now,
                };
                self.keep(domain, cached.clone(), now).await;
                tracing::info!(%domain, id = %cached.id, mode = cached.policy.mode.as_str(), max_age = cached.policy.max_age, "MTA-STS policy fetched");
                Lookup {
                    policy: Some(cached),
                    fetched: true,
                    failure: None,
                }
            }
            Err(e) => {
                let mut entry = self.entry(domain);
                let valid = entry.cached.clone().filter(|c| c.valid_at(now));
                tracing::warn!(%domain, error = %e, result = %e.result_type(), cached = valid.is_some(), "MTA-STS policy fetch failed");
                entry.last_failure = Some((now, e.result_type()));
                self.set(domain, entry, now);
                Lookup {
                    failure: valid.is_none().then(|| e.result_type()),
                    policy: valid,
                    fetched: false,
                }
            }
        }
    }

    async fn fetch(
        &self,
        domain: &str,
        router: &Router,
        port: u16,
        extra_roots: &[CertificateDer<'static>],
    ) -> Result<(String, postern_sts::Policy), fetch::FetchError> {
        let host = format!("mta-sts.{domain}");
        let ips = router
            .ips(&host)
            .await
            .map_err(|e| fetch::FetchError::Fetch(format!("{host}: {e}")))?;
        fetch::fetch(domain, &ips, port, extra_roots, FETCH_LIMIT).await
    }

    /// Replaces the domain's policy, in memory at once and on disk (a failed write is logged:
    /// the policy still applies until the process ends).
    async fn keep(&self, domain: &str, cached: Cached, now: u64) {
        let entry = Entry {
            cached: Some(cached.clone()),
            last_failure: None,
        };
        self.set(domain, entry, now);
        let (dir, name) = (self.dir.clone(), domain.to_string());
        let saved = tokio::task::spawn_blocking(move || store::save(&dir, &name, &cached)).await;
        if !matches!(saved, Ok(Ok(()))) {
            tracing::error!(%domain, "could not save the MTA-STS policy to the spool; it stays in memory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_entries_stay() {
        let mut entries = Entries::default();
        let failed = Entry {
            cached: None,
            last_failure: Some((1_000, ResultType::StsPolicyFetchError)),
        };
        for i in 0..PRUNE_AT {
            assert!(
                entries
                    .insert(format!("d{i}.example"), failed.clone(), 1_100)
                    .is_empty()
            );
        }
        assert_eq!(
            entries.map.len(),
            PRUNE_AT,
            "within the back-off each still decides"
        );
    }

    #[test]
    fn dead_entries_are_forgotten_as_new_ones_come() {
        let mut entries = Entries::default();
        let failed = |at| Entry {
            cached: None,
            last_failure: Some((at, ResultType::StsPolicyFetchError)),
        };
        for i in 0..PRUNE_AT - 1 {
            assert!(
                entries
                    .insert(format!("d{i}.example"), failed(1_000), 1_000)
                    .is_empty()
            );
        }
        // Past their back-off, the insertion that reaches the threshold forgets them all.
        let dead = entries.insert("y.example".into(), failed(2_000), 2_000);
        assert_eq!(dead.len(), PRUNE_AT - 1);
        assert_eq!(entries.map.len(), 1);
        assert!(entries.map.contains_key("y.example"));
    }
}
