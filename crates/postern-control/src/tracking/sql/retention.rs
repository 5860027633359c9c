//! Retention in SQL (`settings.tracking`): what is older than `retention_days` goes, then the
//! oldest while message tracking or connections are over their byte budgets. On PostgreSQL
//! messages, recipients, timelines and connections are partitioned by UTC day, so both are
//! partition drops: whole days, never the newest. On SQLite rows go, oldest first, in
//! transactions of `SLICE`, and the freed pages go back to the file system.

use std::collections::HashSet;

use super::messages::{COLUMNS, Row, key_at, row_of};
use super::{Conn, Db, Engine, P};
use crate::tracking::TrackingError;

/// Rows removed per SQLite transaction (the writer is free between slices).
const SLICE: usize = 2_000;
const DAY_MS: u64 = 86_400_000;

/// The tables partitioned by day, with their key column.
const PARTITIONED: [(&str, &str); 4] = [
    ("messages", "key"),
    ("recipients", "key"),
    ("timeline", "message"),
    ("connections", "key"),
];
/// The tables message tracking's budget counts.
const MESSAGE_TABLES: [&str; 3] = ["messages", "recipients", "timeline"];

/// Creates the PostgreSQL partitions of `days` (days since 1970) not yet made; `made` remembers.
pub fn ensure_days(db: &Db, made: &mut HashSet<u64>, days: &[u64]) -> Result<(), TrackingError> {
    let missing: Vec<u64> = days.iter().copied().filter(|d| !made.contains(d)).collect();
    if db.engine != Engine::Postgres || missing.is_empty() {
        made.extend(missing);
        return Ok(());
    }
    // Outside the batch's transaction: a partition is made once, and two control planes
    // making the same one at once both find it made.
    for day in missing {
        let (from, to) = (key_at(day * DAY_MS), key_at((day + 1) * DAY_MS));
        let ddl: String = PARTITIONED
            .iter()
            .map(|(table, _)| {
                format!(
                    "CREATE TABLE IF NOT EXISTS {table}_p{day} PARTITION OF {table} FOR VALUES FROM ({from}) TO ({to});"
                )
            })
            .collect();
        let made_now = db.write(|c| c.batch(&ddl));
        if let Err(e) = made_now {
            // Another control plane made it between our check and our statement.
            db.write(|c| c.batch(&ddl)).map_err(|_| e)?;
        }
        made.insert(day);
    }
    Ok(())
}

/// The days that `table` has partitions for, oldest first.
fn partition_days(c: &mut Conn, table: &str) -> Result<Vec<u64>, TrackingError> {
    let names = c.rows(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = to_regclass($1)",
        &[P::from(table)],
        |r| r.text(0),
    )?;
    let prefix = format!("{table}_p");
    let mut days: Vec<u64> = names
        .iter()
        .filter_map(|n| n.strip_prefix(&prefix)?.parse().ok())
        .collect();
    days.sort_unstable();
    Ok(days)
}

/// Whether PostgreSQL has a table (a partition) of this name.
fn exists(c: &mut Conn, name: &str) -> Result<bool, TrackingError> {
    let n = c.one_int(
        "SELECT count(*) FROM pg_class WHERE relname = $1",
        &[P::from(name)],
    )?;
    Ok(n.unwrap_or(0) > 0)
}

fn drop_day(c: &mut Conn, day: u64, tables: &[&str]) -> Result<(), TrackingError> {
    let ddl: String = tables
        .iter()
        .map(|t| format!("DROP TABLE IF EXISTS {t}_p{day};"))
        .collect();
    c.batch(&ddl)?;
    if tables.contains(&"messages") {
        c.execute("DELETE FROM compacted WHERE day = $1", &[P::from(day)])?;
    }
    Ok(())
}

/// Bytes on disk of `tables`' partitions of `day` (PostgreSQL).
fn day_bytes(c: &mut Conn, day: u64, tables: &[&str]) -> Result<u64, TrackingError> {
    let mut total = 0;
    for t in tables {
        total += c
            .one_int(
                "SELECT CAST(coalesce(pg_total_relation_size(to_regclass($1)), 0) AS BIGINT)",
                &[P::T(format!("{t}_p{day}"))],
            )?
            .unwrap_or(0) as u64;
    }
    Ok(total)
}

/// Bytes on disk of message tracking, and of connections.
pub fn sizes(c: &mut Conn) -> Result<(u64, u64), TrackingError> {
    match c.engine() {
        Engine::Sqlite => {
            let used = c
                .one_int(
                    "SELECT (SELECT page_count FROM pragma_page_count())
                          - (SELECT freelist_count FROM pragma_freelist_count())",
                    &[],
                )?
                .unwrap_or(0) as u64;
            let page = c
                .one_int("SELECT page_size FROM pragma_page_size()", &[])?
                .unwrap_or(4096) as u64;
            let connections = c
                .one_int(
                    "SELECT coalesce(sum(pgsize), 0) FROM dbstat
                     WHERE name IN ('connections', 'connections_ip')",
                    &[],
                )?
                .unwrap_or(0) as u64;
            Ok(((used * page).saturating_sub(connections), connections))
        }
        Engine::Postgres => {
            let (mut messages, mut connections) = (0, 0);
            for day in partition_days(c, "messages")? {
                messages += day_bytes(c, day, &MESSAGE_TABLES)?;
            }
            for day in partition_days(c, "connections")? {
                connections += day_bytes(c, day, &["connections"])?;
            }
            Ok((messages, connections))
        }
    }
}

/// Removes SQLite messages with keys below `below`, at most `most` of them, oldest first; how
/// many went.
fn remove_messages(db: &Db, below: i64, most: u64) -> Result<u64, TrackingError> {
    let mut removed = 0;
    while removed < most {
        let n = db.write(|c| {
            let rows: Vec<Row> = c.rows(
                &format!(
                    "SELECT {COLUMNS} FROM messages m WHERE m.key < $1 ORDER BY m.key LIMIT $2"
                ),
                &[P::I(below), P::from((most - removed).min(SLICE as u64))],
                row_of,
            )?;
            for row in &rows {
                let key = P::I(row.key);
                for r in &row.stored.message.recipients {
                    c.execute(
                        "DELETE FROM recipients WHERE hash = $1 AND key = $2",
                        &[P::I(super::messages::hash(r)), key.clone()],
                    )?;
                }
                if let Some(subject) = &row.stored.message.subject {
                    super::messages::unindex_subject(c, row.key, subject)?;
                }
                c.execute(
                    "DELETE FROM timeline WHERE message = $1",
                    std::slice::from_ref(&key),
                )?;
                c.execute("DELETE FROM messages WHERE key = $1", &[key])?;
            }
            Ok(rows.len() as u64)
        })?;
        removed += n;
        if n == 0 {
            break;
        }
    }
    Ok(removed)
}

/// Removes SQLite connections with keys below `below`, at most `most`; how many went.
fn remove_connections(db: &Db, below: i64, most: u64) -> Result<u64, TrackingError> {
    db.write(|c| {
        c.execute(
            "DELETE FROM connections WHERE key IN
                 (SELECT key FROM connections WHERE key < $1 ORDER BY key LIMIT $2)",
            &[P::I(below), P::from(most)],
        )
    })
}

/// Compacts the PostgreSQL partitions of days before `before_day` not compacted yet: their
/// indexes are rebuilt (`REINDEX CONCURRENTLY`: ingest and searches go on), on a connection of
/// their own, outside any transaction. How many days were compacted.
pub fn compact(db: &Db, before_day: u64) -> Result<u64, TrackingError> {
    if db.engine != Engine::Postgres {
        return Ok(0);
    }
    let (days, done) = db.read(|c| {
        Ok((
            partition_days(c, "messages")?,
            c.rows("SELECT day FROM compacted", &[], |r| r.int(0))?,
        ))
    })?;
    let mut compacted = 0;
    for day in days
        .into_iter()
        .filter(|d| *d < before_day && !done.contains(&(*d as i64)))
    {
        db.maintenance(|c| {
            // One statement at a time: several in one call would be one transaction.
            for (table, _) in PARTITIONED {
                let name = format!("{table}_p{day}");
                // (A size budget may have dropped some of the day's tables.)
                if exists(c, &name)? {
                    c.batch(&format!("REINDEX TABLE CONCURRENTLY {name}"))?;
                    c.batch(&format!("ANALYZE {name}"))?;
                }
            }
            c.execute(
                "INSERT INTO compacted (day) VALUES ($1) ON CONFLICT DO NOTHING",
                &[P::from(day)],
            )
        })?;
        compacted += 1;
    }
    Ok(compacted)
}

/// One pass: messages and connections from before `cutoff_ms`, then the oldest while over
/// budget; (messages, connections) removed.
pub fn enforce(
    db: &Db,
    cutoff_ms: u64,
    max_bytes: u64,
    connections_max_bytes: u64,
    count: u64,
) -> Result<(u64, u64), TrackingError> {
    match db.engine {
        Engine::Sqlite => {
            let cutoff = key_at(cutoff_ms);
            let mut messages = remove_messages(db, cutoff, u64::MAX)?;
            let mut connections = remove_connections(db, cutoff, u64::MAX)?;
            let (message_bytes, connection_bytes) = db.read(sizes)?;
            // Over budget: the oldest 1% (at least 100) go, and the next pass measures again.
            if message_bytes > max_bytes {
                let most = ((count - messages.min(count)) / 100).max(100);
                messages += remove_messages(db, i64::MAX, most)?;
            }
            if connection_bytes > connections_max_bytes {
                let n = db
                    .read(|c| c.one_int("SELECT count(*) FROM connections", &[]))?
                    .unwrap_or(0) as u64;
                connections += remove_connections(db, i64::MAX, (n / 100).max(100))?;
            }
            if messages + connections > 0 {
                db.write(|c| c.batch("PRAGMA incremental_vacuum"))
                    .or_else(|_| Ok::<_, TrackingError>(()))?;
            }
            Ok((messages, connections))
        }
        Engine::Postgres => db.write(|c| {
            let first_kept = cutoff_ms / DAY_MS;
            // (A failed statement would abort the transaction: the partition is looked up first.)
            let count_in = |c: &mut Conn, table: &str, day: u64| {
                let name = format!("{table}_p{day}");
                if !exists(c, &name)? {
                    return Ok(0);
                }
                c.one_int(&format!("SELECT count(*) FROM {name}"), &[])
                    .map(|n| n.unwrap_or(0) as u64)
            };
            let mut removed = [0u64; 2];
            // (what is counted, its tables, its budget)
            let kinds: [(&str, &[&str], u64); 2] = [
                ("messages", &MESSAGE_TABLES, max_bytes),
                ("connections", &["connections"], connections_max_bytes),
            ];
            for (n, (counted, tables, budget)) in kinds.into_iter().enumerate() {
                let mut days = Vec::new();
                for table in tables {
                    days.extend(partition_days(c, table)?);
                }
                days.sort_unstable();
                days.dedup();
                let mut left = Vec::new();
                for day in days {
                    if day < first_kept {
                        removed[n] += count_in(c, counted, day)?;
                        drop_day(c, day, tables)?;
                    } else {
                        left.push((day, day_bytes(c, day, tables)?));
                    }
                }
                // Over budget: whole oldest days go, never the newest.
                let mut bytes: u64 = left.iter().map(|(_, b)| b).sum();
                for &(day, size) in left.iter().take(left.len().saturating_sub(1)) {
                    if bytes <= budget {
                        break;
                    }
                    removed[n] += count_in(c, counted, day)?;
                    drop_day(c, day, tables)?;
                    bytes -= size;
                }
            }
            Ok((removed[0], removed[1]))
        }),
    }
}
