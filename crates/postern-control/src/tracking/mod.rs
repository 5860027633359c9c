//! Tracking (docs/src/tracking.md, interfaces.md): workers' events, stored in SQL (`sql/`):
//! SQLite in the data directory by default, PostgreSQL with `--database-url`. Message events
//! fold into one record per message, connections into one per session; TLS-RPT sessions,
//! received reports and MTA-STS knowledge are kept beside them, in the same database.
//!
//! Ingest is exactly once: each worker epoch has a cursor (the highest sequence stored), read
//! and moved in the same transaction as the batch it acknowledges, so a replay after a crash,
//! a reconnect or a second control plane changes nothing, and a batch is acknowledged only
//! once its transaction committed.

pub mod fold;
pub mod import;
pub mod query;
pub mod record;
mod retention;
pub mod sql;
pub mod sts;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use postern_events::{Event, Record};
use postern_sts::tlsrpt::Aggregate;

pub use retention::{run as run_retention, run_health};
pub use sql::Location;
pub use sql::tlsrpt::day_of;

use crate::reports::received::ReceivedReport;
use query::{ConnectionFilter, MessageFilter};
use record::{ConnectionRecord, MessageRecord, SummaryRecord};
use sql::received::Kept;
use sql::{Db, Engine, cursors, messages, received, tlsrpt};

#[derive(Debug, thiserror::Error)]
pub enum TrackingError {
    #[error("tracking database (SQLite): {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("tracking database (PostgreSQL): {0}")]
    Postgres(#[from] postgres::Error),
    #[error("tracking store (sled, being imported): {0}")]
    Sled(#[from] sled::Error),
    #[error("tracking database unavailable: {0}")]
    Unavailable(String),
    #[error(
        "the tracking database has schema version {found}, newer than this postern's {known}: run a postern at least as new as the one that wrote it"
    )]
    Newer { found: u32, known: u32 },
    #[error("tracking store: a stored record is unreadable: {0}")]
    Corrupt(String),
}

impl TrackingError {
    /// Whether the database could not be reached or used at all (as opposed to one statement
    /// failing): `/readyz` says so while it lasts.
    pub fn is_unavailable(&self) -> bool {
        match self {
            TrackingError::Unavailable(_) => true,
            TrackingError::Postgres(e) => {
                e.is_closed()
                    || e.as_db_error().is_none_or(|d| {
                        let code = d.code().code();
                        // connection_exception, operator_intervention (shutdown),
                        // insufficient_resources (disk full), system_error
                        ["08", "57", "53", "58"].iter().any(|c| code.starts_with(c))
                    })
            }
            TrackingError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DiskFull
                    | rusqlite::ErrorCode::SystemIoFailure
                    | rusqlite::ErrorCode::CannotOpen
                    | rusqlite::ErrorCode::ReadOnly
            ),
            _ => false,
        }
    }

    /// A new row's key was taken: the batch is tried again with other keys.
    fn is_key_clash(&self) -> bool {
        match self {
            TrackingError::Postgres(e) => {
                e.as_db_error().is_some_and(|d| d.code().code() == "23505")
            }
            TrackingError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            }
            _ => false,
        }
    }
}

fn corrupt(e: impl std::fmt::Display) -> TrackingError {
    TrackingError::Corrupt(e.to_string())
}

/// A page of records and the cursor of the next page.
pub type Page<T> = (Vec<T>, Option<String>);

/// What folding a batch did, for the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Folded {
    /// Events refused because their message belongs to another worker.
    pub foreign: u64,
    /// Messages stored for the first time.
    pub added: u64,
}

/// A batch's events after its cursor, in order, and the cursor they bring it to.
struct Accepted {
    records: Vec<Record>,
    stored: u64,
}

pub struct Tracking {
    pub(crate) db: Db,
    keys: messages::Keys,
    pub(crate) ids: received::Ids,
    /// PostgreSQL's day partitions made (or found made) by this process.
    days: Mutex<HashSet<u64>>,
    /// Messages stored, and bytes on disk of message tracking: counted at open and by each
    /// retention pass (the metrics read them without a query).
    pub(crate) count: AtomicU64,
    bytes: AtomicU64,
    /// `settings.reports.received_max_bytes`, kept here by retention.
    pub received_budget: AtomicU64,
    /// Counts, for metrics and benchmarks.
    pub events: AtomicU64,
    pub lost: AtomicU64,
    /// Events refused because their message belongs to another worker.
    pub foreign: AtomicU64,
    /// Seconds from an event's creation on its worker to its storage here.
    pub lag: prometheus_client::metrics::histogram::Histogram,
}

impl Tracking {
    /// Tracking in the SQLite database `path` (created if missing).
    pub fn open(path: &Path) -> Result<Tracking, TrackingError> {
        Self::connect(&Location::Sqlite(path.to_path_buf()))
    }

    /// Tracking at `location`, its schema brought up to date.
    pub fn connect(location: &Location) -> Result<Tracking, TrackingError> {
        Self::over(Db::open(location)?)
    }

    /// Tracking over an open database.
    pub fn over(db: Db) -> Result<Tracking, TrackingError> {
        let t = Tracking {
            db,
            keys: messages::Keys::new(),
            ids: received::Ids::default(),
            days: Mutex::default(),
            count: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            received_budget: AtomicU64::new(1 << 30),
            events: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            lag: prometheus_client::metrics::histogram::Histogram::new(
                crate::metrics::INGEST_BUCKETS,
            ),
        };
        t.measure()?;
        Ok(t)
    }

    pub fn engine(&self) -> Engine {
        self.db.engine
    }

    /// Where tracking lives, as logs may show it (no password).
    pub fn describe(&self) -> String {
        self.db.location.describe()
    }

    /// Counts messages and measures the disk they take (at open and after retention).
    fn measure(&self) -> Result<(), TrackingError> {
        let (count, (bytes, _)) = self.db.read(|c| {
            let n = c
                .one_int("SELECT count(*) FROM messages", &[])?
                .unwrap_or(0);
            Ok((n as u64, sql::retention::sizes(c)?))
        })?;
        self.count.store(count, Relaxed);
        self.bytes.store(bytes, Relaxed);
        Ok(())
    }

    /// Messages stored.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Bytes on disk of message tracking (what `tracking.max_bytes` limits), as last measured.
    pub fn size_on_disk(&self) -> u64 {
        self.bytes.load(Relaxed)
    }

    /// Bytes on disk of the whole tracking database, measured now: SQLite's file and its
    /// write-ahead log, or PostgreSQL's database.
    pub fn disk_bytes(&self) -> Result<u64, TrackingError> {
        match &self.db.location {
            Location::Sqlite(path) => {
                let mut wal = path.as_os_str().to_owned();
                wal.push("-wal");
                let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
                Ok(size(path) + size(Path::new(&wal)))
            }
            Location::Postgres(_) => Ok(self
                .db
                .read(|c| {
                    c.one_int(
                        "SELECT CAST(pg_database_size(current_database()) AS BIGINT)",
                        &[],
                    )
                })?
                .unwrap_or(0) as u64),
        }
    }

    /// Compacts PostgreSQL's partitions of the days before `before_day` (days since 1970) not
    /// compacted yet (retention does it for every day that is over); how many days.
    pub fn compact(&self, before_day: u64) -> Result<u64, TrackingError> {
        let n = sql::retention::compact(&self.db, before_day)?;
        if n > 0 {
            self.measure()?;
        }
        Ok(n)
    }

    /// Why the database cannot be used, while it cannot.
    pub fn down(&self) -> Option<String> {
        self.db.down()
    }

    /// The highest sequence of `epoch` stored for `worker`.
    pub fn stored_seq(&self, worker: &str, epoch: &str) -> Result<u64, TrackingError> {
        Ok(self.db.read(|c| cursors::get(c, worker, epoch))?.0)
    }

    /// Stores a batch of `worker`'s events of `epoch` (in sequence order; `Err(seq)` for an
    /// event that could not be read, whose sequence still counts) in one transaction; returns
    /// the highest sequence stored with none missing before it. A batch that skips a sequence
    /// is stored up to the hole only, unless a gap event stands for the hole.
    pub async fn ingest(
        self: &Arc<Self>,
        worker: &str,
        epoch: &str,
        records: Vec<Result<Record, u64>>,
    ) -> Result<u64, TrackingError> {
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
        self.partitions_for(records.iter().flatten().flat_map(|r| match &r.event {
            Event::Connection(c) => [r.at_ms, c.started_ms],
            _ => [r.at_ms, r.at_ms],
        }))?;
        let mut tries = 0;
        loop {
            let result = self.db.write(|c| {
                if c.engine() == Engine::Postgres {
                    // One worker's batches, through whichever control plane, one at a time.
                    c.execute(
                        "SELECT pg_advisory_xact_lock(hashtext($1))",
                        &[sql::P::from(worker)],
                    )?;
                }
                let (stored, reported) = cursors::get(c, worker, epoch)?;
                let accepted = accept(worker, stored, &records);
                let (folded, lost, reported) = self.route(c, worker, epoch, reported, &accepted)?;
                cursors::set(c, worker, epoch, accepted.stored, reported)?;
                Ok((accepted, folded, lost))
            });
            match result {
                Ok((accepted, folded, lost)) => {
                    self.count.fetch_add(folded.added, Relaxed);
                    self.foreign.fetch_add(folded.foreign, Relaxed);
                    self.lost.fetch_add(lost, Relaxed);
                    self.events
                        .fetch_add(accepted.records.len() as u64, Relaxed);
                    let now = postern_time::now_ms();
                    for r in &accepted.records {
                        self.lag
                            .observe(now.saturating_sub(r.at_ms) as f64 / 1000.0);
                    }
                    return Ok(accepted.stored);
                }
                Err(e) if e.is_key_clash() && tries < 3 => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Makes sure rows of these times (unix ms) have somewhere to go (PostgreSQL's partitions).
    pub(crate) fn partitions_for(
        &self,
        times: impl IntoIterator<Item = u64>,
    ) -> Result<(), TrackingError> {
        let mut days: Vec<u64> = times.into_iter().map(|ms| ms / 86_400_000).collect();
        days.sort_unstable();
        days.dedup();
        sql::retention::ensure_days(&self.db, &mut self.days.lock().expect("days lock"), &days)
    }

    /// Hands each event to what keeps its kind, in the batch's transaction; returns what the
    /// fold did, the events newly reported lost, and the cursor's new gap mark.
    fn route(
        &self,
        c: &mut sql::Conn,
        worker: &str,
        epoch: &str,
        mut reported: u64,
        accepted: &Accepted,
    ) -> Result<(Folded, u64, u64), TrackingError> {
        let mut lost = 0;
        let mut message_events = Vec::new();
        for record in &accepted.records {
            match &record.event {
                Event::OutboxGap(g) => {
                    tracing::warn!(%worker, first = g.first_seq, last = g.last_seq, "a worker's outbox lost events");
                    // Gaps may overlap (each runs from the worker's last acknowledged event):
                    // only sequences no earlier gap of the epoch reported count.
                    if g.last_seq > reported {
                        lost += g.last_seq - g.first_seq.max(reported + 1) + 1;
                        reported = g.last_seq;
                    }
                }
                Event::StartTlsLeftovers(l) => {
                    tracing::info!(%worker, ip = %l.ip, bytes = l.bytes, "a client sent data after STARTTLS (discarded)");
                }
                Event::StsPolicy(p) => sql::sts::record(c, worker, p)?,
                Event::TlsSession(t) => tlsrpt::put_session(c, worker, epoch, record.seq, t)?,
                Event::TlsReportReceived(r) => {
                    let budget = self.received_budget.load(Relaxed);
                    crate::reports::received::take_mailed(worker, r, |report| {
                        received::put(c, &self.ids, report, budget)
                    })?;
                }
                _ => message_events.push(record),
            }
        }
        let folded = messages::fold(c, &self.keys, worker, epoch, &message_events)?;
        Ok((folded, lost, reported))
    }

    /// A message with its newest timeline entries.
    pub fn message(&self, id: &str) -> Result<Option<MessageRecord>, TrackingError> {
        self.db.read(|c| messages::message(c, id))
    }

    pub fn search_messages(
        &self,
        f: &MessageFilter,
        limit: usize,
        cursor: Option<&[u8]>,
    ) -> Result<Page<SummaryRecord>, TrackingError> {
        self.db
            .read(|c| messages::search_messages(c, f, limit, cursor))
    }

    pub fn search_connections(
        &self,
        f: &ConnectionFilter,
        limit: usize,
        cursor: Option<&[u8]>,
    ) -> Result<Page<ConnectionRecord>, TrackingError> {
        self.db
            .read(|c| messages::search_connections(c, f, limit, cursor))
    }

    /// The newest MTA-STS policy a worker fetched for `domain` (kept until retention finds it
    /// expired).
    pub fn sts_policy(&self, domain: &str) -> Result<Option<sts::KnownSts>, TrackingError> {
        self.db.read(|c| sql::sts::get(c, domain))
    }

    /// The TLS-RPT sessions of `day` (`YYYY-MM-DD`), one domain's aggregate at a time.
    pub fn sessions_by_domain(
        &self,
        day: &str,
        each: &mut dyn FnMut(String, Aggregate),
    ) -> Result<(), TrackingError> {
        self.db.read(|c| tlsrpt::sessions_by_domain(c, day, each))
    }

    /// Stores built TLS-RPT reports, (domain, JSON) each, replacing that day's earlier ones.
    pub fn put_reports(
        &self,
        date: &str,
        reports: &[(String, Vec<u8>)],
    ) -> Result<(), TrackingError> {
        self.db.write(|c| tlsrpt::put_reports(c, date, reports))
    }

    /// Built TLS-RPT reports, newest day first, optionally of one day or one domain.
    pub fn reports(
        &self,
        date: Option<&str>,
        domain: Option<&str>,
    ) -> Result<Vec<Vec<u8>>, TrackingError> {
        self.db.read(|c| tlsrpt::reports(c, date, domain))
    }

    /// Keeps a received report within `budget` bytes (a duplicate is kept once).
    pub fn put_received(&self, report: ReceivedReport, budget: u64) -> Result<Kept, TrackingError> {
        self.db
            .write(|c| received::put(c, &self.ids, report.clone(), budget))
    }

    /// Received reports, newest first, of `organization` if given, after `cursor`.
    pub fn received(
        &self,
        organization: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<ReceivedReport>, TrackingError> {
        self.db
            .read(|c| received::page(c, organization, limit, cursor))
    }

    /// `enforce_apart` with one budget for messages and connections.
    pub fn enforce(
        &self,
        retention_days: u32,
        max_bytes: u64,
        now: u64,
    ) -> Result<(u64, u64), TrackingError> {
        self.enforce_apart(retention_days, max_bytes, max_bytes, now)
    }

    /// One retention pass over everything at `now` (unix ms): (messages, connections) removed.
    pub fn enforce_apart(
        &self,
        retention_days: u32,
        max_bytes: u64,
        connections_max_bytes: u64,
        now: u64,
    ) -> Result<(u64, u64), TrackingError> {
        let cutoff = now.saturating_sub(u64::from(retention_days) * 86_400_000);
        let removed = sql::retention::enforce(
            &self.db,
            cutoff,
            max_bytes,
            connections_max_bytes,
            self.count(),
        )?;
        // Partitions may have gone: they are made again if late events need them.
        self.days.lock().expect("days lock").clear();
        self.compact(now / 86_400_000)?;
        self.db.write(|c| {
            tlsrpt::prune(c, &day_of(cutoff))?;
            received::prune(c, cutoff)?;
            sql::sts::prune(c, now)
        })?;
        self.measure()?;
        Ok(removed)
    }
}

/// The events of a batch after `stored`, in order, up to the first hole (an unreadable event's
/// sequence counts; a gap event stands for the hole it reports).
fn accept(worker: &str, mut stored: u64, records: &[Result<Record, u64>]) -> Accepted {
    let mut kept = Vec::with_capacity(records.len());
    for item in records {
        let seq = item.as_ref().map_or_else(|seq| *seq, |r| r.seq);
        // The worker sends in order; anything at or below the cursor is a replay.
        if seq <= stored {
            continue;
        }
        let stands_for_hole = matches!(item,
            Ok(Record { event: Event::OutboxGap(g), .. })
                if g.first_seq <= stored + 1 && g.last_seq == seq);
        if seq != stored + 1 && !stands_for_hole {
            tracing::warn!(%worker, stored, seq, "a worker's events skip a sequence; stored up to the hole");
            break;
        }
        if let Ok(record) = item {
            kept.push(record.clone());
        }
        stored = seq;
    }
    Accepted {
        records: kept,
        stored,
    }
}
#[cfg(test)]
mod tests;
