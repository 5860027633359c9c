//! The tracking schema and its versions (docs/src/tracking.md#storage). Each version is a
//! migration, applied in order at start in a transaction of its own; a database of a newer
//! version than this build knows is refused, never written.
//!
//! Exact-match lookups (queue id, sender, recipient, Message-ID) go through 64-bit hashes of the
//! value in lower case (`messages::hash`): eight bytes in an index instead of the address, and
//! the value itself is compared on the row found.
//!
//! Messages and connections are keyed by time: `key = ms << 20 | n`, where `n` tells apart
//! what shares a millisecond. Key order is time order, so every index ends in the key and
//! serves "newest first" and time ranges by itself, and a day is a key range (PostgreSQL's
//! partitions, `retention.rs`). A message's `state` packs its status (bits 0-2) and marks
//! (tls 3, plaintext 4, violation 5, tls_fallback 6), indexed on their rare side (no TLS, some
//! plaintext, a violation): the common side is most of the newest messages in time order. A
//! connection's packs its TLS failure (bit 0) and leftovers (bit 1). Records are packed JSON
//! (`pack.rs`). PostgreSQL's columns are in the order that wastes no alignment padding.
//!
//! On PostgreSQL a day's partitions are compacted once the day is over (`retention.rs`): a
//! day of inserts leaves its indexes a third to a half empty, and no row comes after the day.

use super::{Conn, Engine, P};
use crate::tracking::TrackingError;

/// The schema this build writes.
pub const LATEST: u32 = 2;

/// Version 1: the tables and every filter's index.
const SQLITE_1: &str = "
CREATE TABLE cursors (worker TEXT NOT NULL, epoch TEXT NOT NULL, seq INTEGER NOT NULL,
    lost INTEGER NOT NULL, PRIMARY KEY (worker, epoch)) WITHOUT ROWID;
CREATE TABLE messages (key INTEGER PRIMARY KEY, id TEXT NOT NULL, worker TEXT NOT NULL,
    sender TEXT NOT NULL, subject TEXT, message_id TEXT, state INTEGER NOT NULL,
    record BLOB NOT NULL, id_hash INTEGER NOT NULL, sender_hash INTEGER NOT NULL,
    message_id_hash INTEGER);
CREATE INDEX messages_id ON messages (id_hash);
CREATE INDEX messages_sender ON messages (sender_hash, key);
CREATE INDEX messages_message_id ON messages (message_id_hash, key)
    WHERE message_id_hash IS NOT NULL;
CREATE INDEX messages_status ON messages ((state & 7), key);
CREATE INDEX messages_no_tls ON messages (key) WHERE (state & 8) = 0;
CREATE INDEX messages_plaintext ON messages (key) WHERE (state & 16) <> 0;
CREATE INDEX messages_violation ON messages (key) WHERE (state & 32) <> 0;
CREATE INDEX messages_worker ON messages (worker, key);
CREATE TABLE recipients (hash INTEGER NOT NULL, key INTEGER NOT NULL,
    PRIMARY KEY (hash, key)) WITHOUT ROWID;
CREATE TABLE timeline (message INTEGER NOT NULL, first INTEGER NOT NULL, entries BLOB NOT NULL,
    PRIMARY KEY (message, first)) WITHOUT ROWID;
CREATE TABLE connections (key INTEGER PRIMARY KEY, ip TEXT NOT NULL, state INTEGER NOT NULL,
    record BLOB NOT NULL);
CREATE INDEX connections_ip ON connections (ip, key);
CREATE TABLE tls_sessions (day TEXT NOT NULL, domain TEXT NOT NULL, worker TEXT NOT NULL,
    epoch TEXT NOT NULL, seq INTEGER NOT NULL, record BLOB NOT NULL,
    PRIMARY KEY (day, domain, worker, epoch, seq)) WITHOUT ROWID;
CREATE TABLE tls_policies (day TEXT NOT NULL, domain TEXT NOT NULL, id TEXT NOT NULL,
    record BLOB NOT NULL, PRIMARY KEY (day, domain, id)) WITHOUT ROWID;
CREATE TABLE tls_reports (day TEXT NOT NULL, domain TEXT NOT NULL, report BLOB NOT NULL,
    PRIMARY KEY (day, domain)) WITHOUT ROWID;
CREATE TABLE received_reports (id TEXT PRIMARY KEY, organization TEXT NOT NULL,
    digest BLOB NOT NULL UNIQUE, bytes INTEGER NOT NULL, record BLOB NOT NULL);
CREATE INDEX received_reports_organization ON received_reports (organization, id);
CREATE TABLE sts_policies (domain TEXT PRIMARY KEY, fetched_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL, record BLOB NOT NULL);
";

/// Version 2: subject search over the whole retention (FTS5 trigrams: any substring of three
/// characters or more, any case, from the index). Contentless: the subject is the message
/// row's, and an entry is deleted by giving it again (`messages::unindex_subject`).
const SQLITE_2: &str = "
CREATE VIRTUAL TABLE subjects USING fts5(subject, content='', columnsize=0, tokenize='trigram');
INSERT INTO subjects (rowid, subject) SELECT key, subject FROM messages WHERE subject IS NOT NULL;
";

const POSTGRES_1: &str = "
CREATE TABLE cursors (worker TEXT NOT NULL, epoch TEXT NOT NULL, seq BIGINT NOT NULL,
    lost BIGINT NOT NULL, PRIMARY KEY (worker, epoch));
CREATE TABLE messages (key BIGINT NOT NULL, id_hash BIGINT NOT NULL,
    sender_hash BIGINT NOT NULL, message_id_hash BIGINT, state SMALLINT NOT NULL,
    id TEXT NOT NULL, worker TEXT NOT NULL, sender TEXT NOT NULL, subject TEXT,
    message_id TEXT, record BYTEA NOT NULL, PRIMARY KEY (key)) PARTITION BY RANGE (key);
CREATE INDEX messages_id ON messages (id_hash);
CREATE INDEX messages_sender ON messages (sender_hash, key);
CREATE INDEX messages_message_id ON messages (message_id_hash, key)
    WHERE message_id_hash IS NOT NULL;
CREATE INDEX messages_status ON messages ((state & 7), key);
CREATE INDEX messages_no_tls ON messages (key) WHERE (state & 8) = 0;
CREATE INDEX messages_plaintext ON messages (key) WHERE (state & 16) <> 0;
CREATE INDEX messages_violation ON messages (key) WHERE (state & 32) <> 0;
CREATE INDEX messages_worker ON messages (worker, key);
CREATE TABLE recipients (hash BIGINT NOT NULL, key BIGINT NOT NULL, PRIMARY KEY (hash, key))
    PARTITION BY RANGE (key);
CREATE TABLE timeline (message BIGINT NOT NULL, first BIGINT NOT NULL, entries BYTEA NOT NULL,
    PRIMARY KEY (message, first)) PARTITION BY RANGE (message);
CREATE TABLE connections (key BIGINT NOT NULL, ip TEXT NOT NULL, state SMALLINT NOT NULL,
    record BYTEA NOT NULL, PRIMARY KEY (key)) PARTITION BY RANGE (key);
CREATE INDEX connections_ip ON connections (ip, key);
CREATE TABLE compacted (day BIGINT PRIMARY KEY);
CREATE TABLE tls_sessions (day TEXT NOT NULL, domain TEXT NOT NULL, worker TEXT NOT NULL,
    epoch TEXT NOT NULL, seq BIGINT NOT NULL, record BYTEA NOT NULL,
    PRIMARY KEY (day, domain, worker, epoch, seq));
CREATE TABLE tls_policies (day TEXT NOT NULL, domain TEXT NOT NULL, id TEXT NOT NULL,
    record BYTEA NOT NULL, PRIMARY KEY (day, domain, id));
CREATE TABLE tls_reports (day TEXT NOT NULL, domain TEXT NOT NULL, report BYTEA NOT NULL,
    PRIMARY KEY (day, domain));
CREATE TABLE received_reports (id TEXT PRIMARY KEY, organization TEXT NOT NULL,
    digest BYTEA NOT NULL UNIQUE, bytes BIGINT NOT NULL, record BYTEA NOT NULL);
CREATE INDEX received_reports_organization ON received_reports (organization, id);
CREATE TABLE sts_policies (domain TEXT PRIMARY KEY, fetched_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL, record BYTEA NOT NULL);
";

/// Version 2: subject search (pg_trgm, a trusted extension: the database's owner may create it).
const POSTGRES_2: &str = "
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX messages_subject ON messages USING gin (lower(subject) gin_trgm_ops);
";

fn migrations(engine: Engine) -> [&'static str; LATEST as usize] {
    match engine {
        Engine::Sqlite => [SQLITE_1, SQLITE_2],
        Engine::Postgres => [POSTGRES_1, POSTGRES_2],
    }
}

/// The schema's version (0 for a new database).
pub fn version(c: &mut Conn) -> Result<u32, TrackingError> {
    c.batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    Ok(
        c.one_int("SELECT coalesce(max(version), 0) FROM schema_version", &[])?
            .unwrap_or(0) as u32,
    )
}

/// Applies the migrations up to `target`; refuses a database newer than this build.
pub fn migrate(c: &mut Conn, target: u32) -> Result<(), TrackingError> {
    let engine = c.engine();
    c.transaction(|c| {
        if engine == Engine::Postgres {
            // Control planes starting together migrate one at a time.
            c.batch("SELECT pg_advisory_xact_lock(7403262601)")?;
        }
        let mut current = version(c)?;
        if current > LATEST {
            return Err(TrackingError::Newer {
                found: current,
                known: LATEST,
            });
        }
        for (i, sql) in migrations(engine).iter().enumerate() {
            let v = i as u32 + 1;
            if v <= current || v > target {
                continue;
            }
            c.batch(sql)?;
            c.execute("DELETE FROM schema_version", &[])?;
            c.execute(
                "INSERT INTO schema_version (version) VALUES ($1)",
                &[P::I(v.into())],
            )?;
            tracing::info!(version = v, "tracking schema migrated");
            current = v;
        }
        Ok(())
    })
}
