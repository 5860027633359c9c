//! Message tracking on sled (docs/src/tracking.md, interfaces.md): workers' events folded into one
//! record per
//! message and per connection, in a sled database of its own (`<data-dir>/tracking`, with
//! connections in `<data-dir>/tracking/connections`), with an index for every search: time,
//! sender, recipient, Message-ID, status, worker and marks (messages), and time and IP
//! (connections). Index keys end with the inverted time and the id, so a prefix scan is newest
//! first. Each message remembers the (epoch, seq) of the events folded into it, so a replay
//! changes nothing.

pub mod fold;
pub mod query;
pub mod record;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use postern_events::{Event, Record};

use super::stores::{Folded, MessageStore, Page};
use super::{TrackingError, corrupt, keys};
use fold::{Fold, Stored};
use query::{ConnectionFilter, MessageFilter};
use record::{ConnectionRecord, Listed, MessageRecord, SummaryRecord};

/// A message changed by an ingest batch, and the facets it had before.
struct Touched {
    facets_before: Vec<String>,
    now: Stored,
}

/// A stored record. One written before timelines were kept apart holds its timeline inline:
/// those entries count as not yet written, so the next `put` moves them out.
fn record_of(bytes: &[u8]) -> Result<Stored, TrackingError> {
    let mut s: Stored = serde_json::from_slice(bytes).map_err(corrupt)?;
    let inline = s.message.timeline.len() as u64;
    s.timeline_total = s.timeline_total.max(inline + s.message.timeline_dropped);
    Ok(s)
}

pub struct SledMessages {
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
    /// Messages stored (kept in step with `messages`, counted once at start).
    count: AtomicU64,
}

impl SledMessages {
    /// The store in `db`, its connections in `conn_db` (moved there from `db` when a store
    /// before issue 23 kept them together).
    pub fn open(db: sled::Db, conn_db: sled::Db) -> Result<SledMessages, TrackingError> {
        for name in ["connections", "connections/by_ip"] {
            super::migrate(&db, &conn_db, name)?;
        }
        let tree = |name: &str| db.open_tree(name);
        let m = SledMessages {
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
            count: AtomicU64::new(0),
            db,
            conn_db,
        };
        m.count.store(m.by_time.len() as u64, Relaxed);
        Ok(m)
    }

    fn connection(
        &self,
        worker: &str,
        record: &Record,
        c: &postern_events::Connection,
    ) -> Result<(), TrackingError> {
        let stored = ConnectionRecord::new(worker, record.policy_version, c);
        let key = keys::timed(c.started_ms, &c.session);
        self.connections.insert(
            &key,
            serde_json::to_vec(&stored).expect("records serialise"),
        )?;
        self.conn_by_ip
            .insert(keys::indexed(&c.ip, c.started_ms, &c.session), &[])?;
        Ok(())
    }

    /// Folds a message event into the batch's copy of its record (read once per batch).
    fn fold_message(
        &self,
        worker: &str,
        epoch: &str,
        record: &Record,
        touched: &mut HashMap<String, Touched>,
    ) -> Result<Fold, TrackingError> {
        let Some(id) = record.event.queue_id().filter(|id| !id.is_empty()) else {
            return Ok(Fold::Replay);
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
        let message = touched.get_mut(id).expect("just inserted");
        let fold = message.now.apply(worker, epoch, record);
        if fold == Fold::Foreign {
            tracing::warn!(%worker, owner = %message.now.message.worker, queue_id = %id, "a tracking event for another worker's message refused");
        }
        Ok(fold)
    }

    /// Writes a message, its new timeline entries, its list entry and its index entries. The
    /// record is stored without its timeline (`s.message.timeline` holds only what this batch
    /// added, and is taken).
    fn put(&self, facets_before: &[String], s: &mut Stored) -> Result<(), TrackingError> {
        let added = std::mem::take(&mut s.message.timeline);
        let first = s.timeline_total - added.len() as u64;
        for (n, entry) in (first..).zip(&added) {
            let entry = serde_json::to_vec(entry).expect("records serialise");
            self.timeline
                .insert(keys::numbered(&s.message.id, n), entry)?;
            if let Some(old) = n.checked_sub(fold::MAX_TIMELINE as u64) {
                self.timeline.remove(keys::numbered(&s.message.id, old))?;
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
                .remove(keys::indexed(gone, s.first_ms, &s.message.id))?;
        }
        for facet in &facets {
            self.by_facet
                .insert(keys::indexed(facet, s.first_ms, &s.message.id), &[])?;
        }
        self.summaries.insert(
            &s.message.id,
            serde_json::to_vec(&listed).expect("records serialise"),
        )?;
        self.messages.insert(
            &s.message.id,
            serde_json::to_vec(s).expect("records serialise"),
        )?;
        Ok(())
    }

    /// Index entries are a set: inserting them again changes nothing.
    fn index(&self, s: &Stored) -> Result<(), TrackingError> {
        let (at, id, v) = (s.first_ms, s.message.id.as_str(), &s.message);
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

    /// A message with its timeline, and the fold's bookkeeping.
    pub fn stored(&self, id: &str) -> Result<Option<Stored>, TrackingError> {
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
        if s.message.timeline.is_empty() {
            s.message.timeline = entries;
        }
        s.message.timeline_dropped = s.timeline_total - s.message.timeline.len() as u64;
        Ok(Some(s))
    }

    /// Removes a message's timeline entries.
    fn remove_timeline(&self, id: &str) -> Result<(), TrackingError> {
        for entry in self.timeline.scan_prefix(keys::prefix(id)).keys() {
            self.timeline.remove(entry?)?;
        }
        Ok(())
    }

    fn remove_message(&self, time_key: &[u8], id: &str) -> Result<(), TrackingError> {
        if let Some(bytes) = self.messages.remove(id)? {
            let s: Stored = record_of(&bytes)?;
            let at = s.first_ms;
            let v = &s.message;
            self.by_sender
                .remove(keys::indexed(&v.sender.to_lowercase(), at, id))?;
            for r in &v.recipients {
                self.by_rcpt
                    .remove(keys::indexed(&r.to_lowercase(), at, id))?;
            }
            if let Some(m) = &v.message_id {
                self.by_msgid.remove(keys::indexed(m, at, id))?;
            }
            self.summaries.remove(id)?;
            self.remove_timeline(id)?;
            for facet in keys::facets(&s.summary()) {
                self.by_facet.remove(keys::indexed(&facet, at, id))?;
            }
            self.count.fetch_sub(1, Relaxed);
        }
        self.by_time.remove(time_key)?;
        Ok(())
    }

    /// The oldest entries of `tree` (keys: inverted time first) past `cutoff_ms`, then more
    /// while `over` (1% of `len`, at least 100): each is handed to `remove`; how many went.
    fn expire(
        tree: &sled::Tree,
        cutoff_ms: u64,
        over: bool,
        len: u64,
        mut remove: impl FnMut(&[u8], &str, &[u8]) -> Result<(), TrackingError>,
    ) -> Result<u64, TrackingError> {
        let extra = if over { (len / 100).max(100) } else { 0 };
        let (mut removed, mut removed_by_size) = (0, 0);
        for entry in tree.iter().rev() {
            let (key, value) = entry?;
            let Some((ms, id)) = keys::split_timed(&key, 0) else {
                continue;
            };
            if ms >= cutoff_ms {
                if removed_by_size >= extra {
                    break;
                }
                removed_by_size += 1;
            }
            remove(&key, &id, &value)?;
            removed += 1;
        }
        Ok(removed)
    }
}

impl MessageStore for SledMessages {
    fn fold(
        &self,
        worker: &str,
        epoch: &str,
        records: &[&Record],
    ) -> Result<Folded, TrackingError> {
        // A message's events usually come in one batch (received, attempt, delivered): each
        // message is read and written once per batch.
        let mut touched: HashMap<String, Touched> = HashMap::new();
        let mut folded = Folded::default();
        for record in records {
            match &record.event {
                Event::Connection(c) => self.connection(worker, record, c)?,
                _ => {
                    if self.fold_message(worker, epoch, record, &mut touched)? == Fold::Foreign {
                        folded.foreign += 1;
                    }
                }
            }
        }
        for message in touched.values_mut() {
            self.put(&message.facets_before, &mut message.now)?;
        }
        Ok(folded)
    }

    fn message(&self, id: &str) -> Result<Option<MessageRecord>, TrackingError> {
        Ok(self.stored(id)?.map(|s| s.message))
    }

    fn search_messages(
        &self,
        f: &MessageFilter,
        limit: usize,
        cursor: Option<&[u8]>,
    ) -> Result<Page<SummaryRecord>, TrackingError> {
        query::search_messages(self, f, limit, cursor)
    }

    fn search_connections(
        &self,
        f: &ConnectionFilter,
        limit: usize,
        cursor: Option<&[u8]>,
    ) -> Result<Page<ConnectionRecord>, TrackingError> {
        query::search_connections(self, f, limit, cursor)
    }

    fn enforce(
        &self,
        cutoff_ms: u64,
        max_bytes: u64,
        connections_max_bytes: u64,
    ) -> Result<(u64, u64), TrackingError> {
        let over = self.size_on_disk() > max_bytes;
        let messages = Self::expire(
            &self.by_time,
            cutoff_ms,
            over,
            self.count(),
            |key, id, _| self.remove_message(key, id),
        )?;
        let over = self.connections_size_on_disk() > connections_max_bytes;
        let len = self.connections.len() as u64;
        let connections =
            Self::expire(&self.connections, cutoff_ms, over, len, |key, _, value| {
                let stored: ConnectionRecord = serde_json::from_slice(value).map_err(corrupt)?;
                let mut ip_key = keys::prefix(&stored.ip);
                ip_key.extend_from_slice(key);
                self.conn_by_ip.remove(ip_key)?;
                self.connections.remove(key)?;
                Ok(())
            })?;
        Ok((messages, connections))
    }

    fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    fn connections_size_on_disk(&self) -> u64 {
        self.conn_db.size_on_disk().unwrap_or(0)
    }

    fn flush(&self) -> Result<(), TrackingError> {
        self.conn_db.flush()?;
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::fold::tests::{received, record};
    use super::*;

    fn store(path: &Path) -> SledMessages {
        let db = sled::open(path).unwrap();
        let conn_db = sled::open(path.join("connections")).unwrap();
        SledMessages::open(db, conn_db).unwrap()
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
        let db = sled::open(dir.path()).unwrap();
        let conn_db = sled::open(dir.path().join("connections")).unwrap();
        let t = SledMessages::open(db.clone(), conn_db).unwrap();
        assert_eq!(t.connections.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
        assert!(!db.tree_names().iter().any(|n| n.as_ref() == b"connections"));
    }

    #[test]
    fn a_long_history_keeps_the_record_small_and_the_newest_timeline() {
        let dir = tempfile::tempdir().unwrap();
        let t = store(dir.path());
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
        t.fold("w", "E", &[&record(1, received("Q", true, &["b@y"]))])
            .unwrap();
        let record_size = || t.messages.get("Q").unwrap().unwrap().len();
        let small = record_size();
        // One event per batch, as a message retried for days sends them.
        for seq in 2..=1_200 {
            t.fold("w", "E", &[&deferral(seq)]).unwrap();
        }
        assert!(record_size() < small + 1024, "{} vs {small}", record_size());
        let m = t.stored("Q").unwrap().unwrap();
        assert_eq!(m.message.timeline.len(), fold::MAX_TIMELINE);
        assert_eq!(
            m.message.timeline_dropped,
            1_200 - fold::MAX_TIMELINE as u64
        );
        assert_eq!(
            m.message.timeline.back().unwrap().detail.split(';').next(),
            Some("<b@y>: 451 4.3.0 later")
        );
        assert!(
            m.message.timeline.front().unwrap().at_ms < m.message.timeline.back().unwrap().at_ms
        );
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
