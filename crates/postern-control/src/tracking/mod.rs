//! The tracking store (PRODUCT.md 5, 6): workers' events folded into one record per message and
//! per connection, in a sled database of its own (`<data-dir>/tracking`), with an index for
//! every search: time, sender, recipient, Message-ID (messages) and time, IP (connections).
//! Index keys end with the inverted time and the id, so a prefix scan is newest first.
//!
//! Ingest is idempotent: each message remembers the (epoch, seq) of the events folded into it,
//! and each worker epoch the highest sequence stored, so a replay after a crash or a reconnect
//! changes nothing. A batch is acknowledged only after a flush.

mod keys;
pub mod model;
pub mod query;
mod retention;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use postern_events::{Event, Record};

use model::{ConnectionView, Stored};

pub use retention::run as run_retention;

#[derive(Debug, thiserror::Error)]
pub enum TrackingError {
    #[error("tracking store: {0}")]
    Sled(#[from] sled::Error),
    #[error("tracking store: a stored record is unreadable: {0}")]
    Corrupt(String),
}

pub struct Tracking {
    db: sled::Db,
    messages: sled::Tree,
    by_time: sled::Tree,
    by_sender: sled::Tree,
    by_rcpt: sled::Tree,
    by_msgid: sled::Tree,
    connections: sled::Tree,
    conn_by_ip: sled::Tree,
    /// worker \0 epoch -> highest sequence stored (u64 big-endian).
    cursors: sled::Tree,
    /// worker \0 epoch \0 first seq -> last seq (big-endian): events a worker's outbox lost.
    gaps: sled::Tree,
    /// Counts, for metrics and benchmarks.
    pub events: AtomicU64,
    pub lost: AtomicU64,
    /// Messages stored (kept in step with `messages`, counted once at start).
    pub count: AtomicU64,
}

fn corrupt(e: impl std::fmt::Display) -> TrackingError {
    TrackingError::Corrupt(e.to_string())
}

impl Tracking {
    pub fn open(path: &Path) -> Result<Tracking, TrackingError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(256 * 1024 * 1024)
            .open()?;
        let tree = |name: &str| db.open_tree(name);
        let t = Tracking {
            messages: tree("messages")?,
            by_time: tree("messages/by_time")?,
            by_sender: tree("messages/by_sender")?,
            by_rcpt: tree("messages/by_rcpt")?,
            by_msgid: tree("messages/by_message_id")?,
            connections: tree("connections")?,
            conn_by_ip: tree("connections/by_ip")?,
            cursors: tree("cursors")?,
            gaps: tree("gaps")?,
            events: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            count: AtomicU64::new(0),
            db,
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

    /// Stores a batch of `worker`'s events of `epoch` (in sequence order, the batch ending at
    /// `last_seq` even if an unreadable event was left out) and makes it durable; returns the
    /// highest sequence stored.
    pub async fn ingest(
        self: &Arc<Self>,
        worker: &str,
        epoch: &str,
        records: Vec<Record>,
        last_seq: u64,
    ) -> Result<u64, TrackingError> {
        // sled calls block: a batch of a thousand events is tens of milliseconds of them.
        let (this, worker, epoch) = (self.clone(), worker.to_string(), epoch.to_string());
        let stored = tokio::task::spawn_blocking(move || {
            let mut stored = this.stored_seq(&worker, &epoch)?;
            for record in records {
                // The worker sends in order; anything at or below the cursor is a replay.
                if record.seq <= stored {
                    continue;
                }
                this.apply(&worker, &epoch, &record)?;
                stored = record.seq;
                this.events.fetch_add(1, Relaxed);
            }
            let stored = stored.max(last_seq);
            this.cursors
                .insert(keys::cursor(&worker, &epoch), &stored.to_be_bytes())?;
            Ok::<u64, TrackingError>(stored)
        })
        .await
        .map_err(|e| TrackingError::Corrupt(e.to_string()))??;
        self.db.flush_async().await?;
        Ok(stored)
    }

    fn apply(&self, worker: &str, epoch: &str, record: &Record) -> Result<(), TrackingError> {
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
                self.lost.fetch_add(g.last_seq - g.first_seq + 1, Relaxed);
                self.gaps.insert(
                    keys::gap(worker, epoch, g.first_seq),
                    &g.last_seq.to_be_bytes(),
                )?;
            }
            Event::StartTlsLeftovers(l) => {
                tracing::info!(%worker, ip = %l.ip, bytes = l.bytes, "a client sent data after STARTTLS (discarded)");
            }
            event => {
                let id = event.queue_id().unwrap_or_default();
                if id.is_empty() {
                    return Ok(());
                }
                let mut stored = match self.messages.get(id)? {
                    Some(bytes) => serde_json::from_slice::<Stored>(&bytes).map_err(corrupt)?,
                    None => {
                        self.count.fetch_add(1, Relaxed);
                        Stored::new(id, worker, record.at_ms)
                    }
                };
                if !stored.apply(worker, epoch, record) {
                    return Ok(());
                }
                self.index(&stored)?;
                self.messages
                    .insert(id, serde_json::to_vec(&stored).expect("records serialise"))?;
            }
        }
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

    pub fn message(&self, id: &str) -> Result<Option<Stored>, TrackingError> {
        self.messages
            .get(id)?
            .map(|b| serde_json::from_slice(&b).map_err(corrupt))
            .transpose()
    }

    pub fn flush(&self) -> Result<(), TrackingError> {
        self.db.flush()?;
        Ok(())
    }

    /// Bytes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}
