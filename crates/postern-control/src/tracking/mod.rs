//! The tracking store (PRODUCT.md 5, 6): workers' events folded into one record per message and
//! per connection, in a sled database of its own (`<data-dir>/tracking`), with an index for
//! every search: time, sender, recipient, Message-ID, status, worker and marks (messages), and
//! time and IP (connections). Subjects are matched within a time range.
//! Index keys end with the inverted time and the id, so a prefix scan is newest first.
//!
//! Ingest is idempotent: each message remembers the (epoch, seq) of the events folded into it,
//! and each worker epoch the highest sequence stored, so a replay after a crash or a reconnect
//! changes nothing. A batch is acknowledged only after a flush.

pub mod fold;
mod keys;
pub mod query;
mod retention;
pub mod sts;
pub mod tlsrpt;
pub mod view;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use postern_events::{Event, Record};

use fold::{Fold, Stored};
use view::{ConnectionView, Listed};

pub use retention::run as run_retention;

#[derive(Debug, thiserror::Error)]
pub enum TrackingError {
    #[error("tracking store: {0}")]
    Sled(#[from] sled::Error),
    #[error("tracking store: a stored record is unreadable: {0}")]
    Corrupt(String),
}

/// A message changed by an ingest batch, and the facets it had before.
struct Touched {
    facets_before: Vec<String>,
    now: Stored,
}

/// Moves tree `name` of `from` (where stores before issue 23 kept it) into `to`.
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

pub struct Tracking {
    db: sled::Db,
    /// Connection records (`connections`, `conn_by_ip`), apart from messages.
    conn_db: sled::Db,
    messages: sled::Tree,
    /// id ++ 0 ++ n (big-endian) -> the message's timeline entry `n`, the newest
    /// `fold::MAX_TIMELINE` kept: a record is rewritten by each fold, its timeline never.
    timeline: sled::Tree,
    /// id -> `Listed`: what lists show and filter on, small, so scans are quick.
    summaries: sled::Tree,
    by_time: sled::Tree,
    by_sender: sled::Tree,
    by_rcpt: sled::Tree,
    by_msgid: sled::Tree,
    /// `status=…`, `worker=…`, `mark=…` ++ 0 ++ inverted time ++ id.
    by_facet: sled::Tree,
    connections: sled::Tree,
    conn_by_ip: sled::Tree,
    /// worker \0 epoch -> highest sequence stored (u64 big-endian).
    cursors: sled::Tree,
    /// worker \0 epoch -> the last sequence a gap event reported lost (big-endian).
    gaps: sled::Tree,
    /// recipient domain -> its newest MTA-STS policy (`sts::StoredSts`).
    sts_policies: sled::Tree,
    /// TLS-RPT: sessions by day and domain, and the reports built (`tlsrpt`).
    tls_sessions: sled::Tree,
    /// The MTA-STS policies the sessions name, once per day, domain and id.
    tls_policies: sled::Tree,
    tls_reports: sled::Tree,
    /// TLS-RPT reports others sent about our domains: a store of their own, on its own budget
    /// (`settings.reports.received_max_bytes`, kept in `received_budget`).
    pub received: crate::reports::store::ReceivedStore,
    pub received_budget: AtomicU64,
    /// Counts, for metrics and benchmarks.
    pub events: AtomicU64,
    pub lost: AtomicU64,
    /// Events refused because their message belongs to another worker.
    pub foreign: AtomicU64,
    /// Messages stored (kept in step with `messages`, counted once at start).
    pub count: AtomicU64,
    /// Seconds from an event's creation on its worker to its storage here.
    pub lag: prometheus_client::metrics::histogram::Histogram,
    /// Retention passes exclude ingest (both read, change and write whole records and their
    /// index entries); ingest batches of different workers touch different messages and run
    /// side by side, those of one worker (an old and a new stream) one after the other.
    writing: std::sync::RwLock<()>,
    per_worker: std::sync::Mutex<HashMap<String, Arc<std::sync::Mutex<()>>>>,
}

fn corrupt(e: impl std::fmt::Display) -> TrackingError {
    TrackingError::Corrupt(e.to_string())
}

/// A stored record. One written before timelines were kept apart holds its timeline inline:
/// those entries count as not yet written, so the next `put` moves them out.
fn record_of(bytes: &[u8]) -> Result<Stored, TrackingError> {
    let mut s: Stored = serde_json::from_slice(bytes).map_err(corrupt)?;
    let inline = s.view.timeline.len() as u64;
    s.timeline_total = s.timeline_total.max(inline + s.view.timeline_dropped);
    Ok(s)
}

impl Tracking {
    pub fn open(path: &Path) -> Result<Tracking, TrackingError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(256 * 1024 * 1024)
            .open()?;
        let tree = |name: &str| db.open_tree(name);
        // Connection records in a database of their own, under a size limit of their own.
        let conn_db = sled::Config::new()
            .path(path.join("connections"))
            .cache_capacity(64 * 1024 * 1024)
            .open()?;
        for name in ["connections", "connections/by_ip"] {
            migrate(&db, &conn_db, name)?;
        }
        let t = Tracking {
            messages: tree("messages")?,
            timeline: tree("messages/timeline")?,
            summaries: tree("messages/summaries")?,
            by_time: tree("messages/by_time")?,
            by_sender: tree("messages/by_sender")?,
            by_rcpt: tree("messages/by_rcpt")?,
            by_msgid: tree("messages/by_message_id")?,
            by_facet: tree("messages/by_facet")?,
            connections: conn_db.open_tree("connections")?,
            conn_by_ip: conn_db.open_tree("connections/by_ip")?,
            cursors: tree("cursors")?,
            gaps: tree("gaps")?,
            sts_policies: tree("sts_policies")?,
            tls_sessions: tree("tlsrpt/sessions")?,
            tls_policies: tree("tlsrpt/policies")?,
            tls_reports: tree("tlsrpt/reports")?,
            received: crate::reports::store::ReceivedStore::open(&path.join("received"))?,
            received_budget: AtomicU64::new(1 << 30),
            events: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            count: AtomicU64::new(0),
            lag: prometheus_client::metrics::histogram::Histogram::new(
                crate::metrics::INGEST_BUCKETS,
            ),
            writing: std::sync::RwLock::new(()),
            per_worker: std::sync::Mutex::default(),
            db,
            conn_db,
        };
        t.count.store(t.by_time.len() as u64, Relaxed);
        Ok(t)
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
        // sled calls block: a batch of a thousand events is tens of milliseconds of them.
        let (this, worker, epoch) = (self.clone(), worker.to_string(), epoch.to_string());
        let stored = tokio::task::spawn_blocking(move || {
            let worker_turn = this
                .per_worker
                .lock()
                .expect("tracking worker locks")
                .entry(worker.clone())
                .or_default()
                .clone();
            let _worker = worker_turn.lock().expect("tracking worker lock");
            let _turn = this.writing.read().expect("tracking write lock");
            let mut stored = this.stored_seq(&worker, &epoch)?;
            // A message's events usually come in one batch (received, attempt, delivered):
            // each message is read and written once per batch.
            let mut touched: HashMap<String, Touched> = HashMap::new();
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
                    this.apply(&worker, &epoch, &record, &mut touched)?;
                    this.events.fetch_add(1, Relaxed);
                    let age_ms = postern_time::now_ms().saturating_sub(record.at_ms);
                    this.lag.observe(age_ms as f64 / 1000.0);
                }
                stored = seq;
            }
            for message in touched.values_mut() {
                this.put(&message.facets_before, &mut message.now)?;
            }
            this.cursors
                .insert(keys::cursor(&worker, &epoch), &stored.to_be_bytes())?;
            Ok::<u64, TrackingError>(stored)
        })
        .await
        .map_err(|e| TrackingError::Corrupt(e.to_string()))??;
        // Reports and connections are durable before the cursor that acknowledges them.
        self.received.flush_async().await?;
        self.conn_db.flush_async().await?;
        self.db.flush_async().await?;
        Ok(stored)
    }

    fn apply(
        &self,
        worker: &str,
        epoch: &str,
        record: &Record,
        touched: &mut HashMap<String, Touched>,
    ) -> Result<(), TrackingError> {
        match &record.event {
            Event::Connection(c) => {
                let view = ConnectionView::new(worker, record.policy_version, c);
                let key = keys::timed(c.started_ms, &c.session);
                self.connections
                    .insert(&key, serde_json::to_vec(&view).expect("views serialise"))?;
                self.conn_by_ip
                    .insert(keys::indexed(&c.ip, c.started_ms, &c.session), &[])?;
            }
            Event::OutboxGap(g) => {
                tracing::warn!(%worker, first = g.first_seq, last = g.last_seq, "a worker's outbox lost events");
                // Gaps may overlap (each runs from the worker's last acknowledged event):
                // count only sequences no earlier gap of the epoch reported.
                let key = keys::cursor(worker, epoch);
                let reported = self.gaps.get(&key)?.map_or(0, |v| keys::u64_of(&v));
                if g.last_seq > reported {
                    let first = g.first_seq.max(reported + 1);
                    self.lost.fetch_add(g.last_seq - first + 1, Relaxed);
                    self.gaps.insert(key, &g.last_seq.to_be_bytes())?;
                }
            }
            Event::StartTlsLeftovers(l) => {
                tracing::info!(%worker, ip = %l.ip, bytes = l.bytes, "a client sent data after STARTTLS (discarded)");
            }
            Event::StsPolicy(p) => {
                // The newest fetch wins, whichever worker made it.
                let newer = match self.sts_policy(&p.domain)? {
                    Some(known) => known.fetched_ms < p.fetched_ms,
                    None => true,
                };
                if newer {
                    let known = sts::KnownSts::new(worker, p);
                    self.sts_policies.insert(
                        p.domain.as_bytes(),
                        serde_json::to_vec(&known).expect("views serialise"),
                    )?;
                }
            }
            Event::TlsSession(t) => self.store_session(worker, epoch, record.seq, t)?,
            Event::TlsReportReceived(r) => {
                // The operator chose the address: any valid report is kept.
                match crate::reports::received::read(r.report.as_bytes(), "mail", &r.sender, |_| {
                    true
                }) {
                    Ok(report) => {
                        let budget = self.received_budget.load(Relaxed);
                        if self.received.put(report, budget)? == crate::reports::store::Kept::Full {
                            tracing::warn!(%worker, queue_id = %r.queue_id, sender = %r.sender, "a mailed TLS-RPT report was not stored: the received reports are at their byte budget");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%worker, queue_id = %r.queue_id, sender = %r.sender, error = %e, "a mailed TLS-RPT report was not stored");
                    }
                }
            }
            event => {
                let Some(id) = event.queue_id().filter(|id| !id.is_empty()) else {
                    return Ok(());
                };
                if !touched.contains_key(id) {
                    let loaded = match self.messages.get(id)? {
                        Some(bytes) => record_of(&bytes)?,
                        None => {
                            self.count.fetch_add(1, Relaxed);
                            Stored::new(id, worker, record.at_ms)
                        }
                    };
                    let facets_before = keys::facets(&loaded.summary());
                    touched.insert(
                        id.to_string(),
                        Touched {
                            facets_before,
                            now: loaded,
                        },
                    );
                }
                if let Some(message) = touched.get_mut(id)
                    && message.now.apply(worker, epoch, record) == Fold::Foreign
                {
                    self.foreign.fetch_add(1, Relaxed);
                    tracing::warn!(%worker, owner = %message.now.view.worker, queue_id = %id, "a tracking event for another worker's message refused");
                }
            }
        }
        Ok(())
    }

    /// Writes a message, its new timeline entries, its list entry and its index entries. The
    /// record is stored without its timeline (`s.view.timeline` holds only what this batch
    /// added, and is taken).
    fn put(&self, facets_before: &[String], s: &mut Stored) -> Result<(), TrackingError> {
        let added = std::mem::take(&mut s.view.timeline);
        let first = s.timeline_total - added.len() as u64;
        for (n, entry) in (first..).zip(&added) {
            let entry = serde_json::to_vec(entry).expect("records serialise");
            self.timeline.insert(keys::numbered(&s.view.id, n), entry)?;
            if let Some(old) = n.checked_sub(fold::MAX_TIMELINE as u64) {
                self.timeline.remove(keys::numbered(&s.view.id, old))?;
            }
        }
        self.index(s)?;
        let listed = Listed {
            first_ms: s.first_ms,
            summary: s.summary(),
        };
        // Status and marks change as events come: their index entries move with them.
        let facets = keys::facets(&listed.summary);
        for gone in facets_before.iter().filter(|f| !facets.contains(f)) {
            self.by_facet
                .remove(keys::indexed(gone, s.first_ms, &s.view.id))?;
        }
        for facet in &facets {
            self.by_facet
                .insert(keys::indexed(facet, s.first_ms, &s.view.id), &[])?;
        }
        self.summaries.insert(
            &s.view.id,
            serde_json::to_vec(&listed).expect("records serialise"),
        )?;
        self.messages.insert(
            &s.view.id,
            serde_json::to_vec(s).expect("records serialise"),
        )?;
        Ok(())
    }

    /// Index entries are a set: inserting them again changes nothing.
    fn index(&self, s: &Stored) -> Result<(), TrackingError> {
        let (at, id, v) = (s.first_ms, s.view.id.as_str(), &s.view);
        self.by_time.insert(keys::timed(at, id), &[])?;
        if !v.sender.is_empty() {
            self.by_sender
                .insert(keys::indexed(&v.sender.to_lowercase(), at, id), &[])?;
        }
        for r in &v.recipients {
            self.by_rcpt
                .insert(keys::indexed(&r.to_lowercase(), at, id), &[])?;
        }
        if let Some(m) = &v.message_id {
            self.by_msgid.insert(keys::indexed(m, at, id), &[])?;
        }
        Ok(())
    }

    /// The newest MTA-STS policy a worker fetched for `domain` (kept until retention finds it
    /// expired).
    pub fn sts_policy(&self, domain: &str) -> Result<Option<sts::KnownSts>, TrackingError> {
        self.sts_policies
            .get(domain.as_bytes())?
            .map(|v| serde_json::from_slice(&v).map_err(|e| TrackingError::Corrupt(e.to_string())))
            .transpose()
    }

    /// Forgets the known MTA-STS policies expired at `now_ms` (every domain a worker ever
    /// fetched one for must not stay for ever); how many went.
    pub(super) fn prune_known_sts(&self, now_ms: u64) -> Result<u64, TrackingError> {
        let mut removed = 0;
        for entry in self.sts_policies.iter() {
            let (key, value) = entry?;
            let expired = serde_json::from_slice::<sts::KnownSts>(&value)
                .map_or(true, |k| !k.valid_at_ms(now_ms));
            if expired {
                self.sts_policies.remove(key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// A message with its timeline.
    pub fn message(&self, id: &str) -> Result<Option<Stored>, TrackingError> {
        let Some(bytes) = self.messages.get(id)? else {
            return Ok(None);
        };
        let mut s = record_of(&bytes)?;
        let mut entries = std::collections::VecDeque::new();
        for entry in self.timeline.scan_prefix(keys::prefix(id)) {
            let (_, value) = entry?;
            entries.push_back(serde_json::from_slice(&value).map_err(corrupt)?);
        }
        // A record written before timelines were kept apart still holds its own.
        if s.view.timeline.is_empty() {
            s.view.timeline = entries;
        }
        s.view.timeline_dropped = s.timeline_total - s.view.timeline.len() as u64;
        Ok(Some(s))
    }

    /// Removes a message's timeline entries.
    fn remove_timeline(&self, id: &str) -> Result<(), TrackingError> {
        for entry in self.timeline.scan_prefix(keys::prefix(id)).keys() {
            self.timeline.remove(entry?)?;
        }
        Ok(())
    }

    pub fn flush(&self) -> Result<(), TrackingError> {
        self.received.flush()?;
        self.conn_db.flush()?;
        self.db.flush()?;
        Ok(())
    }

    /// `flush` without blocking the runtime.
    pub async fn flush_async(&self) -> Result<(), TrackingError> {
        self.received.flush_async().await?;
        self.conn_db.flush_async().await?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// Bytes on disk of message tracking (what `tracking.max_bytes` limits).
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// Bytes on disk of connection records (`tracking.connections_max_bytes`).
    pub fn connections_size_on_disk(&self) -> u64 {
        self.conn_db.size_on_disk().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::fold::tests::{received, record};
    use super::query::{ConnectionFilter, MessageFilter};
    use super::view::Status;
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
        assert!(t.message("Q005").unwrap().is_none());
        // An unreadable event's sequence counts; a gap standing for 5..=7 fills the hole.
        let batch = vec![Err(4), r(5), gap(7, 6, 7), r(8)];
        assert_eq!(t.ingest("w", "E", batch).await.unwrap(), 8);
        assert!(t.message("Q005").unwrap().is_some() && t.message("Q008").unwrap().is_some());
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
        let before = t.size_on_disk();
        let json = |i: usize| {
            format!(
                r#"{{"organization-name":"O{i}","date-range":{{"start-datetime":"2026-12-06T00:00:00Z","end-datetime":"2026-12-06T23:59:59Z"}},"contact-info":"{}","report-id":"r{i}","policies":[{{"policy":{{"policy-type":"no-policy-found","policy-domain":"ours.test"}},"summary":{{"total-successful-session-count":1,"total-failure-session-count":0}}}}]}}"#,
                "c".repeat(100_000)
            )
        };
        for i in 0..40 {
            let r = crate::reports::received::read(json(i).as_bytes(), "https", "t", |_| true);
            let r = r.unwrap_or_else(|e| panic!("{e}"));
            t.received.put(r, u64::MAX).unwrap();
        }
        t.flush().unwrap();
        assert!(t.received.bytes() > 4_000_000);
        assert!(
            t.size_on_disk() < before + 1_000_000,
            "{} vs {before}",
            t.size_on_disk()
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

    /// A session's policy is stored once per (day, domain, id), and a day's reports are built
    /// one domain at a time from what is stored.
    #[tokio::test]
    async fn tls_sessions_store_their_policy_once() {
        let dir = tempfile::tempdir().unwrap();
        let t = Arc::new(Tracking::open(dir.path()).unwrap());
        let session = |seq: u64, domain: &str, result: Option<&str>| {
            Ok(record(
                seq,
                Event::TlsSession(postern_events::TlsSession {
                    domain: domain.into(),
                    sts: Some(postern_events::SessionPolicy {
                        id: "20261207".into(),
                        lines: (0..20).map(|i| format!("mx: mx{i}.{domain}")).collect(),
                        mx: vec![postern_events::MxPattern::parse(&format!("*.{domain}")).unwrap()],
                    }),
                    result: result.map(|r| postern_events::ResultType::parse(r).unwrap()),
                    sending_ip: Some("192.0.2.1".into()),
                    receiving_mx: Some(format!("mx.{domain}")),
                    receiving_ip: Some("198.51.100.7".into()),
                    at_ms: 86_400_000 * 20_000 + seq,
                }),
            ))
        };
        let mut batch = Vec::new();
        for seq in 1..=300 {
            let domain = if seq % 3 == 0 {
                "b.example"
            } else {
                "a.example"
            };
            let result = (seq % 10 == 0).then_some("certificate-expired");
            batch.push(session(seq, domain, result));
        }
        t.ingest("w", "E", batch).await.unwrap();
        assert_eq!(t.tls_policies.len(), 2, "one policy per domain and id");
        let day = tlsrpt::day_of(86_400_000 * 20_000);
        let mut reports = Vec::new();
        t.tls_sessions_by_domain(&day, |domain, aggregate| {
            let header = postern_sts::tlsrpt::ReportHeader {
                organization_name: "o".into(),
                contact_info: "c@o".into(),
                report_id: domain.clone(),
                start_datetime: String::new(),
                end_datetime: String::new(),
            };
            reports.push(aggregate.report(header, &domain));
        })
        .unwrap();
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[0].session_counts(), (180, 20), "a.example");
        assert_eq!(reports[1].session_counts(), (90, 10), "b.example");
        assert_eq!(reports[0].policies[0].policy.policy_string.len(), 20);
        assert_eq!(reports[0].policies[0].policy.mx_host, ["*.a.example"]);
    }

    #[test]
    fn connections_kept_by_an_older_store_move_to_their_own() {
        let dir = tempfile::tempdir().unwrap();
        {
            let old = sled::open(dir.path()).unwrap();
            old.open_tree("connections")
                .unwrap()
                .insert(b"k", b"v")
                .unwrap();
            old.flush().unwrap();
        }
        let t = Tracking::open(dir.path()).unwrap();
        assert_eq!(t.connections.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
        assert!(
            !t.db
                .tree_names()
                .iter()
                .any(|n| n.as_ref() == b"connections")
        );
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
        assert_eq!(t.count.load(Relaxed), 30);
        assert_eq!(t.message("Q007").unwrap().unwrap().view.timeline.len(), 1);
        // A new epoch of the same worker starts its own sequence.
        assert_eq!(t.stored_seq("w", "F").unwrap(), 0);

        let mut pages = Vec::new();
        let mut cursor = None;
        loop {
            let f = MessageFilter {
                recipient: Some("B@Y.example".into()),
                ..Default::default()
            };
            let (items, next) = t.search_messages(&f, 7, cursor.as_deref()).unwrap();
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
        let (items, _) = t.search_messages(&tls, 50, None).unwrap();
        let ids: Vec<&str> = items.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["Q020", "Q018", "Q016", "Q014", "Q012", "Q010"]);
        let (none, _) = t
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
            .search_messages(&by_status(Status::Delivered), 50, None)
            .unwrap();
        assert_eq!(
            items.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            ["Q020"]
        );
        let (items, _) = t
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
        assert!(t.message("Q149").unwrap().is_none());
        assert!(t.message("Q150").unwrap().is_some());
        let f = MessageFilter {
            recipient: Some("b@y.example".into()),
            ..Default::default()
        };
        let (items, _) = t.search_messages(&f, 500, None).unwrap();
        assert_eq!(items.len(), 151, "index entries went with the messages");
        // Over the size limit: the oldest go, at least a hundred per pass.
        let (removed, _) = t.enforce(3650, 1, 1_300).unwrap();
        assert_eq!(removed, 100);
        assert!(t.message("Q249").unwrap().is_none());
        assert!(t.message("Q250").unwrap().is_some());
        assert_eq!(t.count.load(Relaxed), 51);
    }

    #[tokio::test]
    async fn a_long_history_keeps_the_record_small_and_the_newest_timeline() {
        let dir = tempfile::tempdir().unwrap();
        let t = Arc::new(Tracking::open(dir.path()).unwrap());
        let deferral = |seq: u64| {
            record(
                seq,
                Event::Deferred(postern_events::Deferred {
                    queue_id: "Q".into(),
                    recipient: "b@y".into(),
                    reason: "451 4.3.0 later".into(),
                    next_attempt_ms: seq,
                    violation: None,
                }),
            )
        };
        t.ingest("w", "E", vec![Ok(record(1, received("Q", true, &["b@y"])))])
            .await
            .unwrap();
        let record_size = || t.messages.get("Q").unwrap().unwrap().len();
        let small = record_size();
        // One event per batch, as a message retried for days sends them.
        for seq in 2..=1_200 {
            t.ingest("w", "E", vec![Ok(deferral(seq))]).await.unwrap();
        }
        assert!(record_size() < small + 1024, "{} vs {small}", record_size());
        let m = t.message("Q").unwrap().unwrap();
        assert_eq!(m.view.timeline.len(), fold::MAX_TIMELINE);
        assert_eq!(m.view.timeline_dropped, 1_200 - fold::MAX_TIMELINE as u64);
        assert_eq!(
            m.view.timeline.back().unwrap().detail.split(';').next(),
            Some("<b@y>: 451 4.3.0 later")
        );
        assert!(m.view.timeline.front().unwrap().at < m.view.timeline.back().unwrap().at);
        assert_eq!(
            t.timeline.scan_prefix(keys::prefix("Q")).count(),
            fold::MAX_TIMELINE
        );
        // Retention takes the timeline with the record.
        t.remove_message(&keys::timed(m.first_ms, "Q"), "Q")
            .unwrap();
        assert_eq!(t.timeline.scan_prefix(keys::prefix("Q")).count(), 0);
    }
}
