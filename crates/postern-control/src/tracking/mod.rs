//! Tracking (docs/src/tracking.md, interfaces.md): workers' events, routed to the store that keeps
//! their kind
//! (`stores.rs`): message tracking (`messages`), TLS-RPT (`tlsrpt`) and MTA-STS knowledge
//! (`sts`). `Tracking` itself keeps only the ingest log: per worker epoch, the highest sequence
//! stored (the cursor a batch is acknowledged with) and the events its outbox reported lost.
//!
//! Ingest is idempotent: each message remembers the (epoch, seq) of the events folded into it,
//! TLS-RPT sessions are keyed by them, and each worker epoch's cursor skips what was stored, so
//! a replay after a crash or a reconnect changes nothing. A batch is acknowledged only after
//! every store it touched is durable.

mod keys;
pub mod messages;
mod retention;
pub mod stores;
pub mod sts;
pub mod tlsrpt;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use postern_events::{Event, Record};

pub use messages::{fold, query, record};
pub use retention::run as run_retention;
use stores::{MessageStore, StsKnowledge, TlsRptStore};

#[derive(Debug, thiserror::Error)]
pub enum TrackingError {
    #[error("tracking store: {0}")]
    Sled(#[from] sled::Error),
    #[error("tracking store: a stored record is unreadable: {0}")]
    Corrupt(String),
}

/// Moves tree `name` of `from` (where an older store kept it) into `to`.
fn migrate(from: &sled::Db, to: &sled::Db, name: &str) -> Result<(), TrackingError> {
    if !from
        .tree_names()
        .iter()
        .any(|n| n.as_ref() == name.as_bytes())
    {
        return Ok(());
    }
    let (old, new) = (from.open_tree(name)?, to.open_tree(name)?);
    for entry in old.iter() {
        let (k, v) = entry?;
        new.insert(k, v)?;
    }
    to.flush()?;
    from.drop_tree(name)?;
    Ok(())
}

fn corrupt(e: impl std::fmt::Display) -> TrackingError {
    TrackingError::Corrupt(e.to_string())
}

/// The stores a batch touched, to be made durable before its cursor.
#[derive(Default)]
struct Dirty {
    tlsrpt: bool,
    sts: bool,
}

pub struct Tracking {
    /// worker \0 epoch -> highest sequence stored (u64 big-endian).
    cursors: sled::Tree,
    /// worker \0 epoch -> the last sequence a gap event reported lost (big-endian).
    gaps: sled::Tree,
    pub messages: Box<dyn MessageStore>,
    pub tlsrpt: Box<dyn TlsRptStore>,
    pub sts: Box<dyn StsKnowledge>,
    /// `settings.reports.received_max_bytes`, kept here by retention.
    pub received_budget: AtomicU64,
    /// Counts, for metrics and benchmarks.
    pub events: AtomicU64,
    pub lost: AtomicU64,
    /// Events refused because their message belongs to another worker.
    pub foreign: AtomicU64,
    /// Seconds from an event's creation on its worker to its storage here.
    pub lag: prometheus_client::metrics::histogram::Histogram,
    /// Retention passes exclude ingest (both read, change and write whole records and their
    /// index entries); ingest batches of different workers touch different messages and run
    /// side by side, those of one worker (an old and a new stream) one after the other.
    writing: std::sync::RwLock<()>,
    per_worker: std::sync::Mutex<HashMap<String, Arc<std::sync::Mutex<()>>>>,
}

impl Tracking {
    /// The sled stores under `path`: messages in `path`, connections, TLS-RPT, received reports
    /// and MTA-STS knowledge each in a database of their own below it.
    pub fn open(path: &Path) -> Result<Tracking, TrackingError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(256 * 1024 * 1024)
            .open()?;
        let conn_db = sled::Config::new()
            .path(path.join("connections"))
            .cache_capacity(64 * 1024 * 1024)
            .open()?;
        Ok(Tracking {
            cursors: db.open_tree("cursors")?,
            gaps: db.open_tree("gaps")?,
            tlsrpt: Box::new(tlsrpt::SledTlsRpt::open(path, &db)?),
            sts: Box::new(sts::SledSts::open(&path.join("sts"), &db)?),
            messages: Box::new(messages::SledMessages::open(db.clone(), conn_db)?),
            received_budget: AtomicU64::new(1 << 30),
            events: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            lag: prometheus_client::metrics::histogram::Histogram::new(
                crate::metrics::INGEST_BUCKETS,
            ),
            writing: std::sync::RwLock::new(()),
            per_worker: std::sync::Mutex::default(),
        })
    }

    /// The highest sequence of `epoch` stored for `worker`.
    pub fn stored_seq(&self, worker: &str, epoch: &str) -> Result<u64, TrackingError> {
        Ok(self
            .cursors
            .get(keys::cursor(worker, epoch))?
            .map_or(0, |v| keys::u64_of(&v)))
    }

    /// Stores a batch of `worker`'s events of `epoch` (in sequence order; `Err(seq)` for an
    /// event that could not be read, whose sequence still counts) and makes it durable;
    /// returns the highest sequence stored with none missing before it. A batch that skips a
    /// sequence is stored up to the hole only, unless a gap event stands for the hole.
    pub async fn ingest(
        self: &Arc<Self>,
        worker: &str,
        epoch: &str,
        records: Vec<Result<Record, u64>>,
    ) -> Result<u64, TrackingError> {
        // The stores block: a batch of a thousand events is tens of milliseconds of them.
        let (this, worker, epoch) = (self.clone(), worker.to_string(), epoch.to_string());
        tokio::task::spawn_blocking(move || this.ingest_blocking(&worker, &epoch, records))
            .await
            .map_err(|e| TrackingError::Corrupt(e.to_string()))?
    }

    fn ingest_blocking(
        &self,
        worker: &str,
        epoch: &str,
        records: Vec<Result<Record, u64>>,
    ) -> Result<u64, TrackingError> {
        let worker_turn = self
            .per_worker
            .lock()
            .expect("tracking worker locks")
            .entry(worker.to_string())
            .or_default()
            .clone();
        let _worker = worker_turn.lock().expect("tracking worker lock");
        let _turn = self.writing.read().expect("tracking write lock");
        let mut stored = self.stored_seq(worker, epoch)?;
        let mut kept = Vec::with_capacity(records.len());
        for item in records {
            let seq = item.as_ref().map_or_else(|seq| *seq, |r| r.seq);
            // The worker sends in order; anything at or below the cursor is a replay.
            if seq <= stored {
                continue;
            }
            let stands_for_hole = matches!(&item,
                Ok(Record { event: Event::OutboxGap(g), .. })
                    if g.first_seq <= stored + 1 && g.last_seq == seq);
            if seq != stored + 1 && !stands_for_hole {
                tracing::warn!(%worker, stored, seq, "a worker's events skip a sequence; stored up to the hole");
                break;
            }
            if let Ok(record) = item {
                kept.push(record);
            }
            stored = seq;
        }
        let touched = self.route(worker, epoch, &kept)?;
        // Every store the batch touched is durable before the cursor that acknowledges it
        // (message tracking keeps its trees in the cursor's database: its flush, last, makes
        // both durable).
        if touched.tlsrpt {
            self.tlsrpt.flush()?;
        }
        if touched.sts {
            self.sts.flush()?;
        }
        self.cursors
            .insert(keys::cursor(worker, epoch), &stored.to_be_bytes())?;
        self.messages.flush()?;
        Ok(stored)
    }

    /// Hands each event to the store of its kind.
    fn route(&self, worker: &str, epoch: &str, records: &[Record]) -> Result<Dirty, TrackingError> {
        let mut touched = Dirty::default();
        let mut messages = Vec::new();
        for record in records {
            match &record.event {
                Event::OutboxGap(g) => self.gap(worker, epoch, g)?,
                Event::StartTlsLeftovers(l) => {
                    tracing::info!(%worker, ip = %l.ip, bytes = l.bytes, "a client sent data after STARTTLS (discarded)");
                }
                Event::StsPolicy(p) => {
                    self.sts.record(worker, p)?;
                    touched.sts = true;
                }
                Event::TlsSession(t) => {
                    self.tlsrpt.put_session(worker, epoch, record.seq, t)?;
                    touched.tlsrpt = true;
                }
                Event::TlsReportReceived(r) => {
                    let budget = self.received_budget.load(Relaxed);
                    crate::reports::received::take_mailed(&*self.tlsrpt, worker, r, budget)?;
                    touched.tlsrpt = true;
                }
                _ => messages.push(record),
            }
            self.events.fetch_add(1, Relaxed);
            let age_ms = postern_time::now_ms().saturating_sub(record.at_ms);
            self.lag.observe(age_ms as f64 / 1000.0);
        }
        let folded = self.messages.fold(worker, epoch, &messages)?;
        self.foreign.fetch_add(folded.foreign, Relaxed);
        Ok(touched)
    }

    /// Counts what a worker's outbox lost. Gaps may overlap (each runs from the worker's last
    /// acknowledged event): only sequences no earlier gap of the epoch reported count.
    fn gap(
        &self,
        worker: &str,
        epoch: &str,
        g: &postern_events::OutboxGap,
    ) -> Result<(), TrackingError> {
        tracing::warn!(%worker, first = g.first_seq, last = g.last_seq, "a worker's outbox lost events");
        let key = keys::cursor(worker, epoch);
        let reported = self.gaps.get(&key)?.map_or(0, |v| keys::u64_of(&v));
        if g.last_seq > reported {
            let first = g.first_seq.max(reported + 1);
            self.lost.fetch_add(g.last_seq - first + 1, Relaxed);
            self.gaps.insert(key, &g.last_seq.to_be_bytes())?;
        }
        Ok(())
    }

    /// The newest MTA-STS policy a worker fetched for `domain` (kept until retention finds it
    /// expired).
    pub fn sts_policy(&self, domain: &str) -> Result<Option<sts::KnownSts>, TrackingError> {
        self.sts.get(domain)
    }

    /// Makes everything stored durable.
    pub fn flush(&self) -> Result<(), TrackingError> {
        self.tlsrpt.flush()?;
        self.sts.flush()?;
        self.messages.flush()?;
        Ok(())
    }

    /// `flush` without blocking the runtime.
    pub async fn flush_async(self: &Arc<Self>) -> Result<(), TrackingError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.flush())
            .await
            .map_err(|e| TrackingError::Corrupt(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::fold::tests::{received, record};
    use super::query::{ConnectionFilter, MessageFilter};
    use super::record::Status;
    use super::*;

    fn ok(records: &[Record]) -> Vec<Result<Record, u64>> {
        records.iter().cloned().map(Ok).collect()
    }

    #[tokio::test]
    async fn only_the_contiguous_sequence_is_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let t = Arc::new(Tracking::open(dir.path()).unwrap());
        let r = |i: u64| Ok(record(i, received(&format!("Q{i:03}"), false, &["b@y"])));
        let gap = |seq, first_seq, last_seq| {
            Ok(record(
                seq,
                Event::OutboxGap(postern_events::OutboxGap {
                    first_seq,
                    last_seq,
                }),
            ))
        };
        // 4 is missing: stored up to 3 only, and 5 is not stored.
        assert_eq!(
            t.ingest("w", "E", vec![r(1), r(2), r(3), r(5)])
                .await
                .unwrap(),
            3
        );
        assert!(t.messages.message("Q005").unwrap().is_none());
        // An unreadable event's sequence counts; a gap standing for 5..=7 fills the hole.
        let batch = vec![Err(4), r(5), gap(7, 6, 7), r(8)];
        assert_eq!(t.ingest("w", "E", batch).await.unwrap(), 8);
        assert!(
            t.messages.message("Q005").unwrap().is_some()
                && t.messages.message("Q008").unwrap().is_some()
        );
        // A gap that does not reach its own sequence is a hole like any other.
        assert_eq!(
            t.ingest("w", "E", vec![gap(12, 9, 10), r(13)])
                .await
                .unwrap(),
            8
        );
        assert_eq!(
            t.lost.load(Relaxed),
            2,
            "only the gap that was stored counts"
        );
    }

    /// Received reports are stored apart: however much they take, the size retention of
    /// message tracking never counts them.
    #[tokio::test]
    async fn reports_never_push_messages_out() {
        let dir = tempfile::tempdir().unwrap();
        let t = Arc::new(Tracking::open(dir.path()).unwrap());
        let batch: Vec<Record> = (1..=50)
            .map(|i| record(i, received(&format!("Q{i:03}"), false, &["b@y"])))
            .collect();
        t.ingest("w", "E", ok(&batch)).await.unwrap();
        t.flush().unwrap();
        let before = t.messages.size_on_disk();
        let json = |i: usize| {
            format!(
                r#"{{"organization-name":"O{i}","date-range":{{"start-datetime":"2026-12-06T00:00:00Z","end-datetime":"2026-12-06T23:59:59Z"}},"contact-info":"{}","report-id":"r{i}","policies":[{{"policy":{{"policy-type":"no-policy-found","policy-domain":"ours.test"}},"summary":{{"total-successful-session-count":1,"total-failure-session-count":0}}}}]}}"#,
                "c".repeat(100_000)
            )
        };
        for i in 0..40 {
            let r = crate::reports::received::read(
                json(i).as_bytes(),
                crate::reports::received::Via::Https,
                "t",
                |_| true,
            );
            let r = r.unwrap_or_else(|e| panic!("{e}"));
            t.tlsrpt.put_received(r, u64::MAX).unwrap();
        }
        t.flush().unwrap();
        assert_eq!(t.tlsrpt.received(None, 100, None).unwrap().0.len(), 40);
        assert!(
            t.messages.size_on_disk() < before + 1_000_000,
            "{} vs {before}",
            t.messages.size_on_disk()
        );
        let (removed, _) = t.enforce(3650, before + 1_000_000, 2_000).unwrap();
        assert_eq!(removed, 0, "no message went because reports grew");

        // Nor because connections grew: they are measured and trimmed on their own.
        let connections: Vec<Record> = (51..=2_050)
            .map(|i| {
                record(
                    i,
                    Event::Connection(postern_events::Connection {
                        session: format!("S{i}"),
                        ip: "192.0.2.9".into(),
                        started_ms: 1_000 + i,
                        helo: Some("h".repeat(200)),
                        tls: None,
                        tls_failure: None,
                        refused: None,
                        messages: 0,
                        starttls_leftovers: 0,
                        refused_count: 0,
                    }),
                )
            })
            .collect();
        t.ingest("w", "E", ok(&connections)).await.unwrap();
        t.flush().unwrap();
        let (messages, connections) = t.enforce_apart(3650, before + 1_000_000, 1, 2_000).unwrap();
        assert_eq!(messages, 0, "no message went because connections grew");
        assert!(connections >= 100, "{connections}");
    }

    #[tokio::test]
    async fn known_mta_sts_policies_go_when_expired() {
        let dir = tempfile::tempdir().unwrap();
        let t = Arc::new(Tracking::open(dir.path()).unwrap());
        let policy = |seq: u64, domain: &str, max_age: u64| {
            Ok(record(
                seq,
                Event::StsPolicy(postern_events::StsPolicy {
                    domain: domain.into(),
                    id: "1".into(),
                    mode: postern_events::Mode::Enforce,
                    max_age,
                    mx: vec![postern_events::MxPattern::parse("mx.x").unwrap()],
                    fetched_ms: 1_000,
                }),
            ))
        };
        let batch = vec![
            policy(1, "short.example", 60),
            policy(2, "long.example", 86_400),
        ];
        t.ingest("w", "E", batch).await.unwrap();
        t.enforce(3650, u64::MAX, 1_000 + 61_000).unwrap();
        assert!(t.sts_policy("short.example").unwrap().is_none());
        assert!(t.sts_policy("long.example").unwrap().is_some());
    }

    #[tokio::test]
    async fn ingest_is_idempotent_and_searches_page_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let t = Arc::new(Tracking::open(dir.path()).unwrap());
        let batch: Vec<Record> = (1..=30)
            .map(|i| {
                record(
                    i,
                    received(&format!("Q{i:03}"), i % 2 == 0, &["b@y.example"]),
                )
            })
            .collect();
        assert_eq!(t.ingest("w", "E", ok(&batch)).await.unwrap(), 30);
        // The same batch again, and an overlapping one: nothing is stored twice.
        assert_eq!(t.ingest("w", "E", ok(&batch)).await.unwrap(), 30);
        assert_eq!(t.ingest("w", "E", ok(&batch[20..])).await.unwrap(), 30);
        assert_eq!(t.messages.count(), 30);
        assert_eq!(
            t.messages.message("Q007").unwrap().unwrap().timeline.len(),
            1
        );
        // A new epoch of the same worker starts its own sequence.
        assert_eq!(t.stored_seq("w", "F").unwrap(), 0);

        let mut pages = Vec::new();
        let mut cursor = None;
        loop {
            let f = MessageFilter {
                recipient: Some("B@Y.example".into()),
                ..Default::default()
            };
            let (items, next) = t
                .messages
                .search_messages(&f, 7, cursor.as_deref())
                .unwrap();
            pages.extend(items.into_iter().map(|m| m.id));
            match next {
                Some(c) => cursor = Some(query::decode_cursor(&c).unwrap()),
                None => break,
            }
        }
        let expected: Vec<String> = (1..=30).rev().map(|i| format!("Q{i:03}")).collect();
        assert_eq!(pages, expected, "newest first, each once");
        let tls = MessageFilter {
            tls: Some(true),
            status: Some(Status::Queued),
            since: Some(1_010),
            until: Some(1_020),
            ..Default::default()
        };
        let (items, _) = t.messages.search_messages(&tls, 50, None).unwrap();
        let ids: Vec<&str> = items.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["Q020", "Q018", "Q016", "Q014", "Q012", "Q010"]);
        let (none, _) = t
            .messages
            .search_connections(&ConnectionFilter::default(), 10, None)
            .unwrap();
        assert!(none.is_empty());

        // Q020 is delivered: its status entry moves from queued to delivered.
        let delivered = Event::Delivered(postern_events::Delivered {
            queue_id: "Q020".into(),
            recipient: "b@y.example".into(),
            reply: "250 ok".into(),
        });
        t.ingest("w", "E", vec![Ok(record(31, delivered))])
            .await
            .unwrap();
        let by_status = |status| MessageFilter {
            status: Some(status),
            ..Default::default()
        };
        let (items, _) = t
            .messages
            .search_messages(&by_status(Status::Delivered), 50, None)
            .unwrap();
        assert_eq!(
            items.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            ["Q020"]
        );
        let (items, _) = t
            .messages
            .search_messages(&by_status(Status::Queued), 50, None)
            .unwrap();
        assert_eq!(items.len(), 29);
        assert!(items.iter().all(|m| m.id != "Q020"));
    }

    #[tokio::test]
    async fn retention_removes_by_age_then_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let t = Arc::new(Tracking::open(dir.path()).unwrap());
        let batch: Vec<Record> = (1..=300)
            .map(|i| record(i, received(&format!("Q{i:03}"), false, &["b@y.example"])))
            .collect();
        t.ingest("w", "E", ok(&batch)).await.unwrap();
        // Messages are at 1,001..1,300 ms; one day of retention at day 1 plus 1,150 ms.
        let (removed, _) = t.enforce(1, u64::MAX, 86_400_000 + 1_150).unwrap();
        assert_eq!(removed, 149);
        assert!(t.messages.message("Q149").unwrap().is_none());
        assert!(t.messages.message("Q150").unwrap().is_some());
        let f = MessageFilter {
            recipient: Some("b@y.example".into()),
            ..Default::default()
        };
        let (items, _) = t.messages.search_messages(&f, 500, None).unwrap();
        assert_eq!(items.len(), 151, "index entries went with the messages");
        // Over the size limit: the oldest go, at least a hundred per pass.
        let (removed, _) = t.enforce(3650, 1, 1_300).unwrap();
        assert_eq!(removed, 100);
        assert!(t.messages.message("Q249").unwrap().is_none());
        assert!(t.messages.message("Q250").unwrap().is_some());
        assert_eq!(t.messages.count(), 51);
    }

    /// A store before issue 24 kept TLS-RPT and MTA-STS knowledge in the messages' database:
    /// they move to their own at start.
    #[test]
    fn tlsrpt_and_sts_kept_by_an_older_store_move_to_their_own() {
        let dir = tempfile::tempdir().unwrap();
        {
            let old = sled::open(dir.path()).unwrap();
            let reports = old.open_tree("tlsrpt/reports").unwrap();
            reports.insert(b"2026-12-07\0a.example", b"{}").unwrap();
            old.open_tree("sts_policies")
                .unwrap()
                .insert(b"a.example", b"{}")
                .unwrap();
            old.flush().unwrap();
        }
        let t = Tracking::open(dir.path()).unwrap();
        assert_eq!(t.tlsrpt.reports(None, None).unwrap(), [b"{}".to_vec()]);
        drop(t);
        let main = sled::open(dir.path()).unwrap();
        for name in ["tlsrpt/reports", "sts_policies"] {
            assert!(
                !main
                    .tree_names()
                    .iter()
                    .any(|n| n.as_ref() == name.as_bytes())
            );
        }
        let sts = sled::open(dir.path().join("sts")).unwrap();
        assert!(
            sts.open_tree("sts_policies")
                .unwrap()
                .get(b"a.example")
                .unwrap()
                .is_some()
        );
    }
}
