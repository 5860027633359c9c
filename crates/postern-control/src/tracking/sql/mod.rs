//! Tracking's database (docs/src/tracking.md#storage): SQLite in the data directory by default,
//! or PostgreSQL (`--database-url`) shared by control planes. One schema, and the same statements
//! wherever the two agree (placeholders are written `$n`; SQLite is given `?n`). Every call
//! blocks: callers run it off the async threads.
//!
//! One writer connection takes each ingest batch as one transaction; readers have connections
//! of their own (SQLite in WAL mode lets them read while the writer writes). A PostgreSQL
//! connection that breaks is dropped and made again on the next call, and the database is
//! reported down (`/readyz`) until a call succeeds.

pub mod cursors;
pub mod messages;
pub mod pack;
pub mod received;
pub mod retention;
pub mod schema;
pub mod sts;
pub mod tlsrpt;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use postgres::types::{ToSql, Type};

use super::TrackingError;

/// Where tracking lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite database file (created if missing).
    Sqlite(PathBuf),
    /// A PostgreSQL connection string (`postgres://user@host/db` or `host=... dbname=...`).
    Postgres(String),
}

impl Location {
    /// `postgres://` and `postgresql://` URLs, and key=value connection strings, are
    /// PostgreSQL; nothing else is accepted.
    pub fn postgres(url: &str) -> Result<Location, String> {
        url.parse::<postgres::Config>()
            .map_err(|e| format!("not a PostgreSQL connection string: {e}"))?;
        Ok(Location::Postgres(url.to_string()))
    }

    /// The location as logs may show it: a PostgreSQL URL without its password.
    pub fn describe(&self) -> String {
        match self {
            Location::Sqlite(p) => format!("SQLite {}", p.display()),
            Location::Postgres(url) => match url.parse::<postgres::Config>() {
                Ok(c) => {
                    let hosts: Vec<String> = c
                        .get_hosts()
                        .iter()
                        .map(|h| match h {
                            postgres::config::Host::Tcp(h) => h.clone(),
                            postgres::config::Host::Unix(p) => p.display().to_string(),
                        })
                        .collect();
                    format!(
                        "PostgreSQL {} database {}",
                        hosts.join(","),
                        c.get_dbname().unwrap_or("(default)")
                    )
                }
                Err(_) => "PostgreSQL".into(),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A statement parameter. PostgreSQL is given the width its statement asks for.
#[derive(Debug, Clone)]
pub enum P {
    I(i64),
    T(String),
    B(Vec<u8>),
    /// NULL or text.
    OT(Option<String>),
    /// NULL (an integer column's).
    N,
}

impl From<i64> for P {
    fn from(v: i64) -> P {
        P::I(v)
    }
}

impl From<u64> for P {
    fn from(v: u64) -> P {
        P::I(v.min(i64::MAX as u64) as i64)
    }
}

impl From<&str> for P {
    fn from(v: &str) -> P {
        P::T(v.to_string())
    }
}

impl From<String> for P {
    fn from(v: String) -> P {
        P::T(v)
    }
}

impl From<Option<String>> for P {
    fn from(v: Option<String>) -> P {
        P::OT(v)
    }
}

impl From<Vec<u8>> for P {
    fn from(v: Vec<u8>) -> P {
        P::B(v)
    }
}

impl rusqlite::ToSql for P {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            P::I(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            P::T(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            P::B(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            P::OT(None) | P::N => ToSqlOutput::Borrowed(ValueRef::Null),
            P::OT(Some(s)) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

/// `p` as the type PostgreSQL's statement expects.
fn pg_value(p: &P, ty: &Type) -> Box<dyn ToSql + Sync> {
    match p {
        P::I(v) if *ty == Type::INT2 => Box::new(*v as i16),
        P::I(v) if *ty == Type::INT4 => Box::new(*v as i32),
        P::I(v) if *ty == Type::BOOL => Box::new(*v != 0),
        P::I(v) => Box::new(*v),
        P::T(s) => Box::new(s.clone()),
        P::B(b) => Box::new(b.clone()),
        P::OT(s) => Box::new(s.clone()),
        P::N => Box::new(None::<i64>),
    }
}

/// `params` as the types `statement` expects.
fn pg_values(params: &[P], statement: &postgres::Statement) -> Vec<Box<dyn ToSql + Sync>> {
    params
        .iter()
        .zip(statement.params())
        .map(|(p, t)| pg_value(p, t))
        .collect()
}

/// A row's columns, by index.
pub trait Get {
    fn int(&self, i: usize) -> Result<i64, TrackingError>;
    fn text(&self, i: usize) -> Result<String, TrackingError>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, TrackingError>;
    fn blob(&self, i: usize) -> Result<Vec<u8>, TrackingError>;
}

impl Get for rusqlite::Row<'_> {
    fn int(&self, i: usize) -> Result<i64, TrackingError> {
        Ok(self.get(i)?)
    }
    fn text(&self, i: usize) -> Result<String, TrackingError> {
        Ok(self.get(i)?)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, TrackingError> {
        Ok(self.get(i)?)
    }
    fn blob(&self, i: usize) -> Result<Vec<u8>, TrackingError> {
        Ok(self.get(i)?)
    }
}

impl Get for postgres::Row {
    fn int(&self, i: usize) -> Result<i64, TrackingError> {
        let ty = self.columns()[i].type_().clone();
        Ok(if ty == Type::INT2 {
            i64::from(self.try_get::<_, i16>(i)?)
        } else if ty == Type::INT4 {
            i64::from(self.try_get::<_, i32>(i)?)
        } else if ty == Type::NUMERIC {
            // sum() of bigints; only sizes are summed, read as text.
            return Err(TrackingError::Corrupt("numeric column".into()));
        } else {
            self.try_get::<_, i64>(i)?
        })
    }
    fn text(&self, i: usize) -> Result<String, TrackingError> {
        Ok(self.try_get(i)?)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, TrackingError> {
        Ok(self.try_get(i)?)
    }
    fn blob(&self, i: usize) -> Result<Vec<u8>, TrackingError> {
        Ok(self.try_get(i)?)
    }
}

/// PostgreSQL statements prepared on a connection, by their text (the multi-row inserts of
/// a batch have a few shapes; the cache is cleared when it holds too many).
const PG_STATEMENTS: usize = 512;

pub enum Conn {
    Lite(rusqlite::Connection),
    Pg {
        client: Box<postgres::Client>,
        prepared: HashMap<String, postgres::Statement>,
    },
}

/// `$n` placeholders as SQLite's `?n`.
fn lite_sql(sql: &str) -> std::borrow::Cow<'_, str> {
    if sql.contains('$') {
        sql.replace('$', "?").into()
    } else {
        sql.into()
    }
}

impl Conn {
    pub fn engine(&self) -> Engine {
        match self {
            Conn::Lite(_) => Engine::Sqlite,
            Conn::Pg { .. } => Engine::Postgres,
        }
    }

    fn pg_statement(
        client: &mut postgres::Client,
        prepared: &mut HashMap<String, postgres::Statement>,
        sql: &str,
    ) -> Result<postgres::Statement, TrackingError> {
        if let Some(s) = prepared.get(sql) {
            return Ok(s.clone());
        }
        if prepared.len() >= PG_STATEMENTS {
            prepared.clear();
        }
        let s = client.prepare(sql)?;
        prepared.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    /// Runs a statement; the rows it changed.
    pub fn execute(&mut self, sql: &str, params: &[P]) -> Result<u64, TrackingError> {
        match self {
            Conn::Lite(c) => {
                let mut s = c.prepare_cached(&lite_sql(sql))?;
                Ok(s.execute(rusqlite::params_from_iter(params.iter()))? as u64)
            }
            Conn::Pg { client, prepared } => {
                let s = Self::pg_statement(client, prepared, sql)?;
                let values = pg_values(params, &s);
                let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|b| b.as_ref()).collect();
                Ok(client.execute(&s, &refs)?)
            }
        }
    }

    /// Runs a query, handing each row to `each` as it comes (PostgreSQL streams them).
    pub fn query(
        &mut self,
        sql: &str,
        params: &[P],
        each: &mut dyn FnMut(&dyn Get) -> Result<(), TrackingError>,
    ) -> Result<(), TrackingError> {
        match self {
            Conn::Lite(c) => {
                let mut s = c.prepare_cached(&lite_sql(sql))?;
                let mut rows = s.query(rusqlite::params_from_iter(params.iter()))?;
                while let Some(row) = rows.next()? {
                    each(row)?;
                }
                Ok(())
            }
            Conn::Pg { client, prepared } => {
                use postgres::fallible_iterator::FallibleIterator as _;
                let s = Self::pg_statement(client, prepared, sql)?;
                let values = pg_values(params, &s);
                let refs = values.iter().map(|b| b.as_ref() as &(dyn ToSql + Sync));
                let mut rows = client.query_raw(&s, refs)?;
                while let Some(row) = rows.next()? {
                    each(&row)?;
                }
                Ok(())
            }
        }
    }

    /// The rows of a query, each made by `f`.
    pub fn rows<T>(
        &mut self,
        sql: &str,
        params: &[P],
        mut f: impl FnMut(&dyn Get) -> Result<T, TrackingError>,
    ) -> Result<Vec<T>, TrackingError> {
        let mut out = Vec::new();
        self.query(sql, params, &mut |r| {
            out.push(f(r)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The first column of the first row, if any.
    pub fn one_int(&mut self, sql: &str, params: &[P]) -> Result<Option<i64>, TrackingError> {
        Ok(self.rows(sql, params, |r| r.int(0))?.into_iter().next())
    }

    /// Statements without parameters, separated by semicolons (the schema).
    pub fn batch(&mut self, sql: &str) -> Result<(), TrackingError> {
        match self {
            Conn::Lite(c) => Ok(c.execute_batch(sql)?),
            Conn::Pg { client, .. } => Ok(client.batch_execute(sql)?),
        }
    }

    /// `f` in one transaction: committed if it returns Ok, rolled back otherwise.
    pub fn transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Conn) -> Result<T, TrackingError>,
    ) -> Result<T, TrackingError> {
        // SQLite takes the write lock at once, so a reader's snapshot never has to be upgraded.
        let begin = match self.engine() {
            Engine::Sqlite => "BEGIN IMMEDIATE",
            Engine::Postgres => "BEGIN",
        };
        self.batch(begin)?;
        match f(self) {
            Ok(v) => {
                self.batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// A `VALUES` list of `rows` rows of `cols` placeholders each, numbered from `$1`.
    pub fn values(rows: usize, cols: usize) -> String {
        let mut s = String::with_capacity(rows * cols * 5);
        for r in 0..rows {
            s.push_str(if r == 0 { "(" } else { ",(" });
            for c in 0..cols {
                if c > 0 {
                    s.push(',');
                }
                s.push('$');
                s.push_str(&(r * cols + c + 1).to_string());
            }
            s.push(')');
        }
        s
    }

    /// `$from, $from+1, ...`: `n` placeholders for an `IN` list.
    pub fn list(from: usize, n: usize) -> String {
        (from..from + n)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn is_broken(&self) -> bool {
        matches!(self, Conn::Pg { client, .. } if client.is_closed())
    }
}

/// Rows per multi-row statement (SQLite allows 32,766 parameters, PostgreSQL 65,535).
pub const ROWS_PER_STATEMENT: usize = 500;

/// Reader connections kept open.
const READERS: usize = 4;
/// How long a PostgreSQL connection attempt, or a statement, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const STATEMENT_TIMEOUT_MS: u64 = 60_000;

pub struct Db {
    pub location: Location,
    pub engine: Engine,
    writer: Mutex<Option<Conn>>,
    readers: Mutex<Vec<Conn>>,
    /// Why the database cannot be used, while it cannot (`/readyz`).
    down: Mutex<Option<String>>,
}

impl Db {
    /// Opens (creating it if need be) and brings the schema up to date.
    pub fn open(location: &Location) -> Result<Db, TrackingError> {
        Self::open_at(location, schema::LATEST)
    }

    /// Opens with the schema brought to `version` (tests make older databases with it).
    pub fn open_at(location: &Location, version: u32) -> Result<Db, TrackingError> {
        let engine = match location {
            Location::Sqlite(_) => Engine::Sqlite,
            Location::Postgres(_) => Engine::Postgres,
        };
        let db = Db {
            location: location.clone(),
            engine,
            writer: Mutex::new(None),
            readers: Mutex::new(Vec::new()),
            down: Mutex::new(None),
        };
        let mut conn = db.connect(true)?;
        schema::migrate(&mut conn, version)?;
        *db.writer.lock().expect("writer lock") = Some(conn);
        Ok(db)
    }

    fn connect(&self, writer: bool) -> Result<Conn, TrackingError> {
        match &self.location {
            Location::Sqlite(path) => {
                let c = open_sqlite(path, writer)?;
                Ok(Conn::Lite(c))
            }
            Location::Postgres(url) => {
                let mut config: postgres::Config = url
                    .parse()
                    .map_err(|e| TrackingError::Unavailable(format!("{e}")))?;
                if config.get_connect_timeout().is_none() {
                    config.connect_timeout(CONNECT_TIMEOUT);
                }
                // A server that stops answering is noticed within a minute, not hours.
                config.keepalives_idle(Duration::from_secs(30));
                config.tcp_user_timeout(Duration::from_secs(60));
                config.application_name("postern");
                let mut client = config.connect(postgres::NoTls)?;
                client.batch_execute(&format!(
                    "SET statement_timeout = {STATEMENT_TIMEOUT_MS}; SET lock_timeout = {STATEMENT_TIMEOUT_MS}"
                ))?;
                if !writer {
                    // A search's plan depends on its values (a subject pattern's trigrams, which
                    // filter is rare): never the generic plan of a prepared statement.
                    client.batch_execute("SET plan_cache_mode = force_custom_plan")?;
                }
                Ok(Conn::Pg {
                    client: Box::new(client),
                    prepared: HashMap::new(),
                })
            }
        }
    }

    /// Notes whether the last call worked.
    fn outcome<T>(&self, r: Result<T, TrackingError>) -> Result<T, TrackingError> {
        let mut down = self.down.lock().expect("down lock");
        match &r {
            Ok(_) => *down = None,
            Err(e) if e.is_unavailable() => *down = Some(e.to_string()),
            Err(_) => {}
        }
        r
    }

    /// Why the database cannot be used, if it cannot.
    pub fn down(&self) -> Option<String> {
        self.down.lock().expect("down lock").clone()
    }

    /// `f` on the writer connection, in one transaction. A connection kept from before is only
    /// found broken (the server restarted, say) when used: `f` is then run once more, on a new
    /// one (nothing was committed on the broken one).
    pub fn write<T>(
        &self,
        mut f: impl FnMut(&mut Conn) -> Result<T, TrackingError>,
    ) -> Result<T, TrackingError> {
        let mut writer = self.writer.lock().expect("writer lock");
        let mut kept = writer.is_some();
        let result = loop {
            if writer.as_ref().is_none_or(Conn::is_broken) {
                *writer = None;
                match self.connect(true) {
                    Ok(c) => *writer = Some(c),
                    Err(e) => break Err(e),
                }
            }
            let conn = writer.as_mut().expect("connected");
            let r = conn.transaction(&mut f);
            if !conn.is_broken() {
                break r;
            }
            *writer = None;
            if !std::mem::take(&mut kept) {
                break r;
            }
        };
        self.outcome(result)
    }

    /// `f` on a reader connection (statements outside a transaction each see a committed
    /// state); run once more on a new connection if a pooled one turns out broken.
    pub fn read<T>(
        &self,
        mut f: impl FnMut(&mut Conn) -> Result<T, TrackingError>,
    ) -> Result<T, TrackingError> {
        let mut pooled = self.readers.lock().expect("readers lock").pop();
        let result = loop {
            let was_pooled = pooled.is_some();
            let mut conn = match pooled.take() {
                Some(c) if !c.is_broken() => c,
                _ => match self.connect(false) {
                    Ok(c) => c,
                    Err(e) => break Err(e),
                },
            };
            let r = f(&mut conn);
            if !conn.is_broken() {
                let mut readers = self.readers.lock().expect("readers lock");
                if readers.len() < READERS {
                    readers.push(conn);
                }
                break r;
            }
            if !was_pooled {
                break r;
            }
        };
        self.outcome(result)
    }

    /// `f` on a connection of its own, outside any transaction (long maintenance statements
    /// that must not hold the writer, and cannot run in a transaction).
    pub fn maintenance<T>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T, TrackingError>,
    ) -> Result<T, TrackingError> {
        let mut conn = self.connect(false)?;
        if let Conn::Pg { client, .. } = &mut conn {
            // A rebuild of a day's indexes takes minutes.
            client.batch_execute("SET statement_timeout = 0")?;
        }
        let r = f(&mut conn);
        if conn.engine() == Engine::Postgres {
            let _ = std::thread::spawn(move || drop(conn)).join();
        }
        r
    }

    /// Checks the database answers (the health probe).
    pub fn probe(&self) -> Result<(), TrackingError> {
        self.read(|c| c.batch("SELECT 1"))
    }
}

impl Drop for Db {
    /// PostgreSQL's blocking client closes its connection by blocking on a runtime of its own,
    /// which it cannot do on an async thread: the connections are closed on a thread of theirs.
    fn drop(&mut self) {
        let mut conns = std::mem::take(&mut *self.readers.lock().expect("readers lock"));
        conns.extend(self.writer.lock().expect("writer lock").take());
        if conns.iter().any(|c| c.engine() == Engine::Postgres) {
            let _ = std::thread::spawn(move || drop(conns)).join();
        }
    }
}

fn open_sqlite(path: &Path, writer: bool) -> Result<rusqlite::Connection, TrackingError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| TrackingError::Unavailable(format!("{}: {e}", dir.display())))?;
    }
    let c = rusqlite::Connection::open(path)?;
    c.busy_timeout(Duration::from_secs(30))?;
    // Incremental vacuum gives retention's freed pages back to the file system; it only takes
    // effect on a new database (before its first table).
    c.execute_batch(
        "PRAGMA auto_vacuum = INCREMENTAL;
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA temp_store = MEMORY;",
    )?;
    // The writer's cache holds the indexes' pages that each batch's random keys touch (a
    // million messages' indexes are about 350 MB; sled's cache was 256 MiB too); a checkpoint
    // every 32 MiB of log rather than 4 writes a page changed by many batches once.
    let (cache_kib, mmap) = if writer {
        (256 * 1024, 0)
    } else {
        (16 * 1024, 1u64 << 30)
    };
    c.execute_batch(&format!(
        "PRAGMA cache_size = -{cache_kib}; PRAGMA wal_autocheckpoint = 8192; PRAGMA mmap_size = {mmap}"
    ))?;
    c.set_prepared_statement_cache_capacity(64);
    Ok(c)
}
