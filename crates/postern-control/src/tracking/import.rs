//! `postern tracking import-sled DIR` (docs/src/tracking.md#upgrading-from-sled): copies the
//! tracking store that releases before issue 26 kept in sled (`<data-dir>/tracking`) into the
//! SQL database. Everything is inserted only where it is missing (messages by id, connections
//! and the rest by keys made from their contents), so an import that stopped part way is run
//! again to finish, and a finished one changes nothing when run again. Cursors come too, so a
//! worker that replays what the old store had acknowledged changes nothing either.

use std::path::Path;

use super::fold::Stored;
use super::record::{ConnectionRecord, TimelineRecord};
use super::sql::tlsrpt::{StoredPolicy, StoredSession};
use super::sql::{cursors, messages, received, sts, tlsrpt};
use super::sts::KnownSts;
use super::{Tracking, TrackingError, corrupt};
use crate::reports::received::ReceivedReport;

/// What an import copied (found, and of those newly inserted where that is known).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Imported {
    pub messages: u64,
    pub new_messages: u64,
    pub connections: u64,
    pub tls_sessions: u64,
    pub tls_reports: u64,
    pub received_reports: u64,
    pub sts_policies: u64,
    pub cursors: u64,
}

/// Records written per transaction.
const BATCH: usize = 1_000;

fn open(path: &Path) -> Result<Option<sled::Db>, TrackingError> {
    if !path.join("conf").exists() {
        return Ok(None);
    }
    Ok(Some(sled::Config::new().path(path).open()?))
}

/// The trees named `name` in any of `dbs` (older stores kept some in the main database).
fn trees(dbs: &[&sled::Db], name: &str) -> Result<Vec<sled::Tree>, TrackingError> {
    let mut out = Vec::new();
    for db in dbs {
        if db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == name.as_bytes())
        {
            out.push(db.open_tree(name)?);
        }
    }
    Ok(out)
}

fn u64_of(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = bytes.len().min(8);
    b[..n].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(b)
}

/// A message as the sled store kept it: the record, and its timeline beside it (or inline, in
/// stores before issue 23).
fn message(timeline: &sled::Tree, bytes: &[u8]) -> Result<Stored, TrackingError> {
    let mut s: Stored = serde_json::from_slice(bytes).map_err(corrupt)?;
    if s.message.timeline.is_empty() {
        let mut prefix = s.message.id.as_bytes().to_vec();
        prefix.push(0);
        for entry in timeline.scan_prefix(prefix) {
            let (_, v) = entry?;
            let e: TimelineRecord = serde_json::from_slice(&v).map_err(corrupt)?;
            s.message.timeline.push_back(e);
        }
    }
    let kept = s.message.timeline.len() as u64;
    s.timeline_total = s.timeline_total.max(kept + s.message.timeline_dropped);
    Ok(s)
}

/// Copies the sled tracking store in `dir` into `t`; `progress` hears of each kind as it goes.
pub fn import_sled(
    dir: &Path,
    t: &Tracking,
    progress: &mut dyn FnMut(&str, u64),
) -> Result<Imported, TrackingError> {
    let Some(main) = open(dir)? else {
        return Err(TrackingError::Unavailable(format!(
            "{} is not a sled tracking store (no conf file)",
            dir.display()
        )));
    };
    let sub = |name: &str| open(&dir.join(name));
    let (conn_db, tlsrpt_db, received_db, sts_db) = (
        sub("connections")?,
        sub("tlsrpt")?,
        sub("received")?,
        sub("sts")?,
    );
    let all: Vec<&sled::Db> = [
        Some(&main),
        conn_db.as_ref(),
        tlsrpt_db.as_ref(),
        sts_db.as_ref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut done = Imported::default();

    let timeline = main.open_tree("messages/timeline")?;
    let mut batch = Vec::new();
    let mut flush = |batch: &mut Vec<Stored>, done: &mut Imported| {
        let n = batch.len() as u64;
        t.partitions_for(batch.iter().map(|s| s.first_ms))?;
        let fresh = t.db.write(|c| messages::import_messages(c, batch))?;
        batch.clear();
        t.count
            .fetch_add(fresh, std::sync::atomic::Ordering::Relaxed);
        done.messages += n;
        done.new_messages += fresh;
        progress("messages", done.messages);
        Ok::<_, TrackingError>(())
    };
    for entry in main.open_tree("messages")?.iter() {
        let (_, v) = entry?;
        batch.push(message(&timeline, &v)?);
        if batch.len() >= BATCH {
            flush(&mut batch, &mut done)?;
        }
    }
    flush(&mut batch, &mut done)?;

    for tree in trees(&all, "connections")? {
        let mut batch: Vec<ConnectionRecord> = Vec::new();
        let mut entries = tree.iter().peekable();
        while entries.peek().is_some() {
            batch.clear();
            for entry in entries.by_ref().take(BATCH) {
                let (_, v) = entry?;
                batch.push(serde_json::from_slice(&v).map_err(corrupt)?);
            }
            t.partitions_for(batch.iter().map(|c| c.started_ms))?;
            t.db.write(|c| messages::put_connections(c, &batch))?;
            done.connections += batch.len() as u64;
            progress("connections", done.connections);
        }
    }

    for tree in trees(&all, "tlsrpt/policies")? {
        for entry in tree.iter() {
            let (k, v) = entry?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let mut parts = key.split('\0');
            let (Some(day), Some(domain), Some(id)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let p: StoredPolicy = serde_json::from_slice(&v).map_err(corrupt)?;
            t.db.write(|c| tlsrpt::put_policy(c, day, domain, id, &p))?;
        }
    }
    for tree in trees(&all, "tlsrpt/sessions")? {
        for entry in tree.iter() {
            let (k, v) = entry?;
            // day \0 domain \0 worker \0 epoch \0 seq (8 bytes, big-endian)
            let Some((text, seq)) = k.split_at_checked(k.len().saturating_sub(8)) else {
                continue;
            };
            let text = String::from_utf8_lossy(text).into_owned();
            let parts: Vec<&str> = text.split('\0').collect();
            let [day, _domain, worker, epoch, ..] = parts[..] else {
                continue;
            };
            let s: StoredSession = serde_json::from_slice(&v).map_err(corrupt)?;
            t.db.write(|c| tlsrpt::put_stored_session(c, day, worker, epoch, u64_of(seq), &s))?;
            done.tls_sessions += 1;
        }
        progress("TLS-RPT sessions", done.tls_sessions);
    }
    for tree in trees(&all, "tlsrpt/reports")? {
        for entry in tree.iter() {
            let (k, v) = entry?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let Some((day, domain)) = key.split_once('\0') else {
                continue;
            };
            // Built reports already stored (a newer build of the same day) stay as they are.
            let known = t.db.read(|c| tlsrpt::reports(c, Some(day), Some(domain)))?;
            if known.is_empty() {
                t.db.write(|c| tlsrpt::put_reports(c, day, &[(domain.to_string(), v.to_vec())]))?;
            }
            done.tls_reports += 1;
        }
        progress("TLS-RPT reports built", done.tls_reports);
    }
    if let Some(db) = &received_db {
        for entry in db.open_tree("reports")?.iter() {
            let (_, v) = entry?;
            let r: ReceivedReport = serde_json::from_slice(&v).map_err(corrupt)?;
            t.db.write(|c| received::put(c, &t.ids, r.clone(), u64::MAX))?;
            done.received_reports += 1;
        }
        progress("TLS-RPT reports received", done.received_reports);
    }
    for tree in trees(&all, "sts_policies")? {
        for entry in tree.iter() {
            let (_, v) = entry?;
            if let Ok(k) = serde_json::from_slice::<KnownSts>(&v) {
                t.db.write(|c| sts::put(c, &k))?;
                done.sts_policies += 1;
            }
        }
        progress("MTA-STS policies", done.sts_policies);
    }
    let gaps = main.open_tree("gaps")?;
    for entry in main.open_tree("cursors")?.iter() {
        let (k, v) = entry?;
        let key = String::from_utf8_lossy(&k).into_owned();
        let Some((worker, epoch)) = key.split_once('\0') else {
            continue;
        };
        let lost = gaps.get(&k)?.map_or(0, |g| u64_of(&g));
        t.db.write(|c| cursors::raise(c, worker, epoch, u64_of(&v), lost))?;
        done.cursors += 1;
    }
    progress("cursors", done.cursors);
    Ok(done)
}
