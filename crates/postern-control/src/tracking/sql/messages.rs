//! Messages and connections in SQL (docs/src/tracking.md#storage). A message is one row: the
//! columns its searches need (id, worker, sender, subject, Message-ID, status and marks) and
//! its packed record (recipients, source, deliveries and attempts, and the newest timeline
//! entries). Its recipients are also rows of `recipients`, its subject a row of the search
//! index, and older timeline entries rows of `timeline`, `CHUNK` at a time, each written once:
//! the thousandth event of a message costs what the first did.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use postern_events::{Event, Record, Violation};
use serde::{Deserialize, Serialize};

use super::pack::{pack, unpack};
use super::{Conn, Engine, Get, P, ROWS_PER_STATEMENT};
use crate::tracking::TrackingError;
use crate::tracking::fold::{Fold, MAX_TIMELINE, Stored};
use crate::tracking::query::{ConnectionFilter, MessageFilter};
use crate::tracking::record::{
    ConnectionRecord, DeliveryRecord, Marks, MessageRecord, SourceRecord, Status, SummaryRecord,
    TimelineRecord,
};
use crate::tracking::{Folded, Page};

/// Timeline entries moved out of a record at a time, once it holds twice as many.
pub const CHUNK: usize = 16;

/// Bits of the millisecond part of a key: `key = ms << 20 | n`.
const SHIFT: u32 = 20;
const LOW: u64 = (1 << SHIFT) - 1;
/// The latest millisecond a key holds (year 2248).
const MAX_MS: u64 = (1 << (63 - SHIFT)) - 1;

/// The first key of millisecond `ms`.
pub fn key_at(ms: u64) -> i64 {
    (ms.min(MAX_MS) << SHIFT) as i64
}

/// The millisecond of a key.
pub fn ms_of(key: i64) -> u64 {
    (key as u64) >> SHIFT
}

/// Makes keys: `n` counts on from a random start, so that keys made by several control
/// planes for one millisecond differ (a clash fails the batch, which the worker sends again).
pub struct Keys(AtomicU64);

impl Keys {
    pub fn new() -> Keys {
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).expect("the system's random numbers");
        Keys(AtomicU64::new(u64::from_le_bytes(seed)))
    }

    pub fn make(&self, ms: u64) -> i64 {
        key_at(ms) | (self.0.fetch_add(1, Relaxed) & LOW) as i64
    }
}

impl Default for Keys {
    fn default() -> Keys {
        Keys::new()
    }
}

/// The 64-bit hash of `value` in lower case that lookups by it go through (the first eight
/// bytes of its SHA-256: the same in every release, as it is stored).
pub fn hash(value: &str) -> i64 {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(value.to_lowercase().as_bytes());
    i64::from_be_bytes(h[..8].try_into().expect("8 bytes"))
}

/// A key made from a row's time and name (an imported message's id, a connection's session):
/// the same each time, so the row is stored once however often it comes.
pub fn stable_key(ms: u64, id: &str) -> i64 {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(id.as_bytes());
    key_at(ms) | (u64::from_be_bytes(h[..8].try_into().expect("8 bytes")) & LOW) as i64
}

fn status_code(s: Status) -> i64 {
    match s {
        Status::Rejected => 0,
        Status::Deferred => 1,
        Status::Queued => 2,
        Status::Bounced => 3,
        Status::Delivered => 4,
    }
}

fn status_of(code: i64) -> Status {
    match code & 7 {
        1 => Status::Deferred,
        2 => Status::Queued,
        3 => Status::Bounced,
        4 => Status::Delivered,
        _ => Status::Rejected,
    }
}

fn state(m: &MessageRecord) -> i64 {
    let bit = |on: bool, n: u32| i64::from(on) << n;
    status_code(m.status)
        | bit(m.marks.tls, 3)
        | bit(m.marks.plaintext, 4)
        | bit(m.marks.violation, 5)
        | bit(m.marks.tls_fallback, 6)
}

fn marks_of(state: i64) -> Marks {
    let on = |n: u32| state >> n & 1 == 1;
    Marks {
        tls: on(3),
        plaintext: on(4),
        violation: on(5),
        tls_fallback: on(6),
    }
}

/// What a message's record column holds: what its columns do not.
#[derive(Serialize, Deserialize)]
struct Packed {
    first_ms: u64,
    received: bool,
    timeline_total: u64,
    recipients: Vec<String>,
    size: Option<u64>,
    policy_version: u64,
    source: Option<SourceRecord>,
    #[serde(default)]
    rejections: Vec<String>,
    #[serde(default)]
    violations: Vec<Violation>,
    deliveries: Vec<DeliveryRecord>,
    dsn: Option<String>,
    /// The newest entries; older ones are rows of `timeline`.
    timeline: VecDeque<TimelineRecord>,
}

/// The columns every message query selects, in this order (`row_of` reads them).
pub const COLUMNS: &str =
    "m.key, m.id, m.worker, m.sender, m.subject, m.message_id, m.state, m.record";

/// A message row: its key and what the fold works on.
pub struct Row {
    pub key: i64,
    pub stored: Stored,
}

pub fn row_of(r: &dyn Get) -> Result<Row, TrackingError> {
    let key = r.int(0)?;
    let p: Packed = unpack(&r.blob(7)?)?;
    let state = r.int(6)?;
    let mut stored = Stored::new(&r.text(1)?, &r.text(2)?, p.first_ms);
    stored.received = p.received;
    stored.timeline_total = p.timeline_total;
    let m = &mut stored.message;
    m.sender = r.text(3)?;
    m.subject = r.opt_text(4)?;
    m.message_id = r.opt_text(5)?;
    m.status = status_of(state);
    m.marks = marks_of(state);
    m.recipients = p.recipients;
    m.size = p.size;
    m.policy_version = p.policy_version;
    m.source = p.source;
    m.rejections = p.rejections;
    m.violations = p.violations;
    m.deliveries = p.deliveries;
    m.dsn = p.dsn;
    m.timeline = p.timeline;
    Ok(Row { key, stored })
}

fn packed(s: &Stored) -> Vec<u8> {
    let m = &s.message;
    pack(&Packed {
        first_ms: s.first_ms,
        received: s.received,
        timeline_total: s.timeline_total,
        recipients: m.recipients.clone(),
        size: m.size,
        policy_version: m.policy_version,
        source: m.source.clone(),
        rejections: m.rejections.clone(),
        violations: m.violations.clone(),
        deliveries: m.deliveries.clone(),
        dsn: m.dsn.clone(),
        timeline: m.timeline.clone(),
    })
}

/// A message being folded: its row, and what it was when loaded.
struct Touched {
    row: Row,
    new: bool,
    subject_before: Option<String>,
    recipients_before: usize,
}

/// The rows of messages `ids` (those stored).
fn load(c: &mut Conn, ids: &[&str]) -> Result<HashMap<String, Row>, TrackingError> {
    let mut found = HashMap::new();
    // As `insert`: one prepared lookup a message on SQLite, a list per statement on PostgreSQL.
    let per_statement = match c.engine() {
        Engine::Sqlite => 1,
        Engine::Postgres => ROWS_PER_STATEMENT,
    };
    for chunk in ids.chunks(per_statement) {
        let sql = format!(
            "SELECT {COLUMNS} FROM messages m WHERE m.id_hash IN ({})",
            Conn::list(1, chunk.len())
        );
        let params: Vec<P> = chunk.iter().map(|id| P::I(hash(id))).collect();
        c.query(&sql, &params, &mut |r| {
            let row = row_of(r)?;
            if chunk.contains(&row.stored.message.id.as_str()) {
                found.insert(row.stored.message.id.clone(), row);
            }
            Ok(())
        })?;
    }
    Ok(found)
}

/// `INSERT`s of `rows` (each `cols` parameters). PostgreSQL takes them `ROWS_PER_STATEMENT` to
/// a statement (one round trip each); SQLite, in process, one statement a row, prepared once
/// (a statement of hundreds of rows costs more to parse than its rows to insert).
pub fn insert(
    c: &mut Conn,
    head: &str,
    cols: usize,
    tail: &str,
    rows: Vec<Vec<P>>,
) -> Result<(), TrackingError> {
    if c.engine() == Engine::Sqlite {
        let sql = format!("{head} VALUES {} {tail}", Conn::values(1, cols));
        for row in rows {
            c.execute(&sql, &row)?;
        }
        return Ok(());
    }
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<P>> = rows.by_ref().take(ROWS_PER_STATEMENT).collect();
        let sql = format!("{head} VALUES {} {tail}", Conn::values(chunk.len(), cols));
        let params: Vec<P> = chunk.into_iter().flatten().collect();
        c.execute(&sql, &params)?;
    }
    Ok(())
}

/// Folds a batch of `worker`'s message and connection events, in sequence order, and writes
/// what changed. (The caller's cursor keeps replays out.)
pub fn fold(
    c: &mut Conn,
    keys: &Keys,
    worker: &str,
    epoch: &str,
    records: &[&Record],
) -> Result<Folded, TrackingError> {
    let mut ids: Vec<&str> = records
        .iter()
        .filter_map(|r| r.event.queue_id().filter(|id| !id.is_empty()))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut loaded = load(c, &ids)?;
    let mut touched: HashMap<String, Touched> = HashMap::new();
    let mut connections: Vec<ConnectionRecord> = Vec::new();
    let mut folded = Folded::default();
    for record in records {
        if let Event::Connection(conn) = &record.event {
            connections.push(ConnectionRecord::new(worker, record.policy_version, conn));
            continue;
        }
        let Some(id) = record.event.queue_id().filter(|id| !id.is_empty()) else {
            continue;
        };
        let t = touched.entry(id.to_string()).or_insert_with(|| {
            let (row, new) = match loaded.remove(id) {
                Some(row) => (row, false),
                None => (
                    Row {
                        key: keys.make(record.at_ms),
                        stored: Stored::new(id, worker, record.at_ms),
                    },
                    true,
                ),
            };
            Touched {
                subject_before: row.stored.message.subject.clone(),
                recipients_before: row.stored.message.recipients.len(),
                row,
                new,
            }
        });
        if t.row.stored.apply(worker, epoch, record) == Fold::Foreign {
            tracing::warn!(%worker, owner = %t.row.stored.message.worker, queue_id = %id, "a tracking event for another worker's message refused");
            folded.foreign += 1;
        }
    }
    folded.added = write(c, touched.into_values().collect())?;
    put_connections(c, &connections)?;
    Ok(folded)
}

/// Stores connection records. A session's record is sent again as it changes (a refused
/// address's count of the minute grows): its key is made from its start and session, and the
/// newest record replaces the one before. (Two sessions of one millisecond whose keys clash,
/// one chance in a million, keep the first unless they are of the same address.)
pub fn put_connections(c: &mut Conn, records: &[ConnectionRecord]) -> Result<(), TrackingError> {
    // One row per key in a statement: the last record of a session in the batch.
    let mut rows: Vec<(i64, &ConnectionRecord)> = Vec::new();
    let mut at: HashMap<i64, usize> = HashMap::new();
    for r in records {
        let key = stable_key(r.started_ms, &r.session);
        match at.get(&key) {
            Some(&i) => rows[i].1 = r,
            None => {
                at.insert(key, rows.len());
                rows.push((key, r));
            }
        }
    }
    insert(
        c,
        "INSERT INTO connections (key, ip, state, record)",
        4,
        "ON CONFLICT (key) DO UPDATE SET state = excluded.state, record = excluded.record
         WHERE connections.ip = excluded.ip",
        rows.into_iter()
            .map(|(k, r)| connection_row(k, r))
            .collect(),
    )
}

fn connection_row(key: i64, r: &ConnectionRecord) -> Vec<P> {
    let state = i64::from(r.tls_failure.is_some()) | i64::from(r.starttls_leftovers > 0) << 1;
    vec![
        P::I(key),
        P::from(r.ip.as_str()),
        P::I(state),
        P::B(pack(r)),
    ]
}

/// Inserts whole messages made elsewhere (the sled import), timelines and all, unless a
/// message of the same id is stored; how many were new.
pub fn import_messages(c: &mut Conn, messages: &[Stored]) -> Result<u64, TrackingError> {
    let ids: Vec<&str> = messages.iter().map(|s| s.message.id.as_str()).collect();
    let known = load(c, &ids)?;
    let fresh: Vec<Touched> = messages
        .iter()
        .filter(|s| !known.contains_key(&s.message.id))
        .map(|s| Touched {
            row: Row {
                key: stable_key(s.first_ms, &s.message.id),
                stored: s.clone(),
            },
            new: true,
            subject_before: None,
            recipients_before: 0,
        })
        .collect();
    write(c, fresh)
}

/// Writes folded messages: rows, recipients, the subject index, and timeline chunks; how many
/// were new.
fn write(c: &mut Conn, touched: Vec<Touched>) -> Result<u64, TrackingError> {
    let engine = c.engine();
    let (mut new, mut changed, mut recipients, mut chunks, mut trims) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut subjects, mut subjects_gone) = (Vec::new(), Vec::new());
    for mut t in touched {
        let key = t.row.key;
        let s = &mut t.row.stored;
        // Older entries move out, CHUNK at a time (an imported timeline may be long).
        while s.message.timeline.len() >= 2 * CHUNK {
            let first = s.timeline_total - s.message.timeline.len() as u64;
            let entries: Vec<TimelineRecord> = s.message.timeline.drain(..CHUNK).collect();
            chunks.push(vec![P::I(key), P::from(first), P::B(pack(&entries))]);
        }
        // Only the newest MAX_TIMELINE entries are kept.
        if let Some(oldest_kept) = s.timeline_total.checked_sub(MAX_TIMELINE as u64)
            && !t.new
            && oldest_kept >= CHUNK as u64
        {
            trims.push((key, oldest_kept + 1 - CHUNK as u64));
        }
        let m = &s.message;
        for r in &m.recipients[t.recipients_before.min(m.recipients.len())..] {
            recipients.push(vec![P::I(hash(r)), P::I(key)]);
        }
        if m.subject != t.subject_before {
            if !t.new && t.subject_before.is_some() {
                subjects_gone.push((key, t.subject_before.clone().unwrap_or_default()));
            }
            if let Some(subject) = &m.subject {
                subjects.push(vec![P::I(key), P::from(subject.as_str())]);
            }
        }
        let row = row(key, s);
        if t.new {
            new.push(row);
        } else {
            changed.push(row);
        }
    }
    let added = new.len() as u64;
    // A new message's key clashing with a stored one fails the batch: never an overwrite.
    insert(c, INSERT, COLUMN_COUNT, "", new)?;
    insert(
        c,
        INSERT,
        COLUMN_COUNT,
        "ON CONFLICT (key) DO UPDATE SET worker = excluded.worker, sender = excluded.sender,
         subject = excluded.subject, message_id = excluded.message_id, state = excluded.state,
         record = excluded.record, sender_hash = excluded.sender_hash,
         message_id_hash = excluded.message_id_hash",
        changed,
    )?;
    insert(
        c,
        "INSERT INTO recipients (hash, key)",
        2,
        "ON CONFLICT DO NOTHING",
        recipients,
    )?;
    insert(
        c,
        "INSERT INTO timeline (message, first, entries)",
        3,
        "ON CONFLICT DO NOTHING",
        chunks,
    )?;
    for (key, before) in trims {
        c.execute(
            "DELETE FROM timeline WHERE message = $1 AND first < $2",
            &[P::I(key), P::from(before)],
        )?;
    }
    if engine == Engine::Sqlite {
        for (key, subject) in subjects_gone {
            unindex_subject(c, key, &subject)?;
        }
        insert(c, "INSERT INTO subjects (rowid, subject)", 2, "", subjects)?;
    }
    Ok(added)
}

/// Removes a message's subject from SQLite's contentless search index (which needs the text
/// it indexed).
pub fn unindex_subject(c: &mut Conn, key: i64, subject: &str) -> Result<(), TrackingError> {
    c.execute(
        "INSERT INTO subjects (subjects, rowid, subject) VALUES ('delete', $1, $2)",
        &[P::I(key), P::from(subject)],
    )?;
    Ok(())
}

/// The head of a message row's insert; `row` gives its `COLUMN_COUNT` values.
pub const INSERT: &str =
    "INSERT INTO messages (key, id, worker, sender, subject, message_id, state,
    record, id_hash, sender_hash, message_id_hash)";
pub const COLUMN_COUNT: usize = 11;

pub fn row(key: i64, s: &Stored) -> Vec<P> {
    let m = &s.message;
    vec![
        P::I(key),
        P::from(m.id.as_str()),
        P::from(m.worker.as_str()),
        P::from(m.sender.as_str()),
        P::from(m.subject.clone()),
        P::from(m.message_id.clone()),
        P::I(state(m)),
        P::B(packed(s)),
        P::I(hash(&m.id)),
        P::I(hash(&m.sender)),
        m.message_id.as_deref().map_or(P::N, |id| P::I(hash(id))),
    ]
}

/// A message with its timeline (the newest `MAX_TIMELINE` entries).
pub fn message(c: &mut Conn, id: &str) -> Result<Option<MessageRecord>, TrackingError> {
    let rows = c.rows(
        &format!("SELECT {COLUMNS} FROM messages m WHERE m.id_hash = $1"),
        &[P::I(hash(id))],
        row_of,
    )?;
    let found = rows.into_iter().find(|r| r.stored.message.id == id);
    let Some(Row { key, mut stored }) = found else {
        return Ok(None);
    };
    let mut older: VecDeque<TimelineRecord> = VecDeque::new();
    c.query(
        "SELECT entries FROM timeline WHERE message = $1 ORDER BY first",
        &[P::I(key)],
        &mut |r| {
            let entries: Vec<TimelineRecord> = unpack(&r.blob(0)?)?;
            older.extend(entries);
            Ok(())
        },
    )?;
    let m = &mut stored.message;
    older.append(&mut m.timeline);
    while older.len() > MAX_TIMELINE {
        older.pop_front();
    }
    m.timeline = older;
    m.timeline_dropped = stored.timeline_total - m.timeline.len() as u64;
    Ok(Some(stored.message))
}

/// A `WHERE` clause and its parameters, numbered as they are added.
#[derive(Default)]
struct Where {
    conds: Vec<String>,
    params: Vec<P>,
}

impl Where {
    /// Adds `cond`, its `$` standing for `p`.
    fn add(&mut self, cond: &str, p: P) {
        self.params.push(p);
        self.conds
            .push(cond.replace('$', &format!("${}", self.params.len())));
    }

    fn fixed(&mut self, cond: &str) {
        self.conds.push(cond.to_string());
    }

    fn sql(&self) -> String {
        if self.conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.conds.join(" AND "))
        }
    }
}

/// The key bounds of a time range and a cursor (the key of the last row of the previous page).
fn bounds(w: &mut Where, key: &str, since: Option<u64>, until: Option<u64>, cursor: Option<i64>) {
    if let Some(since) = since {
        w.add(&format!("{key} >= $"), P::I(key_at(since)));
    }
    if let Some(until) = until {
        w.add(&format!("{key} <= $"), P::I(key_at(until) | LOW as i64));
    }
    if let Some(c) = cursor {
        w.add(&format!("{key} < $"), P::I(c));
    }
}

/// The key in a cursor (see `query::decode_cursor`).
pub fn cursor_key(cursor: Option<&[u8]>) -> Option<i64> {
    cursor.map(|c| i64::from_be_bytes(c[..8].try_into().expect("cursors have 8 bytes")))
}

fn cursor_of(key: i64) -> String {
    hex::encode(key.to_be_bytes())
}

/// `needle` as a LIKE pattern matching it anywhere (its own `%`, `_` and `\` literal).
fn contains_pattern(needle: &str) -> String {
    let mut p = String::from("%");
    for ch in needle.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(ch);
    }
    p.push('%');
    p
}

/// A page of messages matching `f`, newest first, and the cursor of the next page.
pub fn search_messages(
    c: &mut Conn,
    f: &MessageFilter,
    limit: usize,
    cursor: Option<&[u8]>,
) -> Result<Page<SummaryRecord>, TrackingError> {
    let engine = c.engine();
    let mut w = Where::default();
    let subject = f.subject.as_deref().filter(|s| !s.is_empty());
    let indexed_subject = subject.filter(|s| s.chars().count() >= 3);
    // The rarest filter's index drives the scan, newest first; the others are written so that
    // no index serves them (`+x`, `x || ''`), so neither planner can pick a commoner one and
    // read its whole range.
    let driver = [
        f.queue_id.is_some().then_some("id"),
        f.message_id.is_some().then_some("message_id"),
        f.recipient.is_some().then_some("recipient"),
        f.sender.is_some().then_some("sender"),
        indexed_subject.is_some().then_some("subject"),
        f.worker.is_some().then_some("worker"),
        (f.violation == Some(true)).then_some("violation"),
        f.status.is_some().then_some("status"),
        (f.plaintext == Some(true)).then_some("plaintext"),
        (f.tls == Some(false)).then_some("no_tls"),
    ]
    .into_iter()
    .flatten()
    .next();
    let text = |name: &str, indexed: &str| {
        if driver == Some(name) {
            indexed.to_string()
        } else {
            indexed.replacen(" = ", " || '' = ", 1)
        }
    };
    // Exact lookups go through hashes (`hash`); the values are compared below.
    let int = |name: &str, indexed: &str| {
        if driver == Some(name) {
            indexed.to_string()
        } else {
            format!("+{indexed}")
        }
    };
    let (from, key) = match (driver, engine) {
        (Some("recipient"), _) => ("recipients r JOIN messages m ON m.key = r.key", "r.key"),
        (Some("subject"), Engine::Sqlite) => {
            ("subjects s JOIN messages m ON m.key = s.rowid", "s.rowid")
        }
        _ => ("messages m", "m.key"),
    };
    if let Some(r) = &f.recipient {
        if driver == Some("recipient") {
            w.add("r.hash = $", P::I(hash(r)));
        } else {
            w.add(
                "m.key IN (SELECT key FROM recipients WHERE hash = $)",
                P::I(hash(r)),
            );
        }
    }
    if let Some(s) = subject {
        match engine {
            // A phrase of the subject's trigrams: the substring itself.
            Engine::Sqlite if driver == Some("subject") => w.add(
                "s.subject MATCH $",
                P::T(format!("\"{}\"", s.replace('"', "\"\""))),
            ),
            Engine::Sqlite => w.add(
                "instr(lower(m.subject), lower($)) > 0",
                P::from(s.to_string()),
            ),
            Engine::Postgres => w.add("lower(m.subject) LIKE lower($)", P::T(contains_pattern(s))),
        }
    }
    if let Some(s) = &f.sender {
        w.add(&int("sender", "m.sender_hash = $"), P::I(hash(s)));
    }
    if let Some(q) = &f.queue_id {
        w.add(&int("id", "m.id_hash = $"), P::I(hash(q)));
    }
    if let Some(m) = &f.message_id {
        w.add(&int("message_id", "m.message_id_hash = $"), P::I(hash(m)));
    }
    if let Some(wk) = &f.worker {
        w.add(&text("worker", "m.worker = $"), P::from(wk.as_str()));
    }
    if let Some(st) = f.status {
        w.add(&int("status", "(m.state & 7) = $"), P::I(status_code(st)));
    }
    match f.tls {
        Some(false) => w.fixed(&int("no_tls", "(m.state & 8) = 0")),
        Some(true) => w.fixed("+(m.state & 8) <> 0"),
        None => {}
    }
    match f.plaintext {
        Some(true) => w.fixed(&int("plaintext", "(m.state & 16) <> 0")),
        Some(false) => w.fixed("+(m.state & 16) = 0"),
        None => {}
    }
    match f.violation {
        Some(true) => w.fixed(&int("violation", "(m.state & 32) <> 0")),
        Some(false) => w.fixed("+(m.state & 32) = 0"),
        None => {}
    }
    bounds(&mut w, key, f.since, f.until, cursor_key(cursor));
    w.params.push(P::from((limit + 1) as u64));
    let sql = format!(
        "SELECT {COLUMNS} FROM {from} {} ORDER BY {key} DESC LIMIT ${}",
        w.sql(),
        w.params.len()
    );
    let mut rows = c.rows(&sql, &w.params, row_of)?;
    let next = (rows.len() > limit).then(|| {
        rows.truncate(limit);
        cursor_of(rows.last().expect("a row").key)
    });
    // What the hashes found is what was asked for (a 64-bit clash drops a row, never adds one).
    let same = |want: &Option<String>, have: &str| {
        want.as_ref()
            .is_none_or(|w| w.to_lowercase() == have.to_lowercase())
    };
    let items = rows
        .iter()
        .map(|r| r.stored.summary())
        .filter(|m| {
            same(&f.sender, &m.sender)
                && same(&f.queue_id, &m.id)
                && f.message_id
                    .as_ref()
                    .is_none_or(|id| m.message_id.as_ref() == Some(id))
                && f.recipient.as_ref().is_none_or(|r| {
                    let r = r.to_lowercase();
                    m.recipients.iter().any(|x| x.to_lowercase() == r)
                })
        })
        .collect();
    Ok((items, next))
}

/// A page of connections matching `f`, newest first, and the cursor of the next page.
pub fn search_connections(
    c: &mut Conn,
    f: &ConnectionFilter,
    limit: usize,
    cursor: Option<&[u8]>,
) -> Result<Page<ConnectionRecord>, TrackingError> {
    let mut w = Where::default();
    if let Some(ip) = &f.ip {
        w.add("c.ip = $", P::from(ip.as_str()));
    }
    if let Some(b) = f.tls_failed {
        w.add("(c.state & 1) = $", P::I(b.into()));
    }
    if let Some(b) = f.starttls_leftovers {
        w.add("((c.state >> 1) & 1) = $", P::I(b.into()));
    }
    bounds(&mut w, "c.key", f.since, f.until, cursor_key(cursor));
    w.params.push(P::from((limit + 1) as u64));
    let sql = format!(
        "SELECT c.key, c.record FROM connections c {} ORDER BY c.key DESC LIMIT ${}",
        w.sql(),
        w.params.len()
    );
    let mut rows = c.rows(&sql, &w.params, |r| {
        Ok((r.int(0)?, unpack::<ConnectionRecord>(&r.blob(1)?)?))
    })?;
    let next = (rows.len() > limit).then(|| {
        rows.truncate(limit);
        cursor_of(rows.last().expect("a row").0)
    });
    Ok((rows.into_iter().map(|(_, r)| r).collect(), next))
}
