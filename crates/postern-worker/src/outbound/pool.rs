//! Connection reuse (Postfix's connection cache): a session that ended its transaction cleanly
//! waits here, briefly, for the next message to the same next hop under the same TLS
//! requirements. The key holds everything a connection was judged under (address, reference
//! name, level, strength, policy version), so a connection is never reused across levels,
//! strengths, verification names or trust. Each is bounded in age and in messages carried.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use postern_policy::{CipherStrength, DeliverySettings, Level};
use tokio::time::Instant;

use super::connection::{Connection, Target};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    addr: SocketAddr,
    host: String,
    level: Level,
    strength: CipherStrength,
    generation: u64,
}

impl PoolKey {
    pub fn new(target: &Target, generation: u64) -> PoolKey {
        PoolKey {
            addr: target.addr,
            host: target.host.to_ascii_lowercase(),
            level: target.level,
            strength: target.strength,
            generation,
        }
    }
}

/// The reuse bounds (`settings.delivery.connection_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reuse {
    /// Age at which a connection takes no further message.
    pub time: Duration,
    /// Messages per connection; 0 turns reuse off.
    pub count: u32,
    /// How long an unused connection is kept.
    pub idle: Duration,
}

impl Reuse {
    pub fn of(d: &DeliverySettings) -> Reuse {
        Reuse {
            time: Duration::from_secs(d.connection_reuse_time_s.into()),
            count: d.connection_reuse_count,
            idle: Duration::from_secs(d.connection_idle_s.into()),
        }
    }
}

struct Idle {
    conn: Connection,
    /// Closed after this without a new message.
    until: Instant,
}

#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<PoolKey, Vec<Idle>>>,
    reuse: Mutex<Option<Reuse>>,
}

impl Pool {
    /// A pool whose expired connections are closed every half second, for as long as it lives.
    pub fn start() -> Arc<Pool> {
        let pool = Arc::new(Pool::default());
        let weak: Weak<Pool> = Arc::downgrade(&pool);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(pool) => pool.reap(Instant::now()),
                    None => return,
                }
            }
        });
        pool
    }

    /// The bounds for connections returned from now on (from the current settings).
    pub fn configure(&self, reuse: Reuse) {
        *self.reuse.lock().expect("pool lock") = Some(reuse);
    }

    /// The most recently used idle connection for `key`, if any is still fresh.
    pub fn take(&self, key: &PoolKey) -> Option<Connection> {
        let now = Instant::now();
        let mut idle = self.idle.lock().expect("pool lock");
        let list = idle.get_mut(key)?;
        let mut found = None;
        while let Some(entry) = list.pop() {
            if entry.until > now {
                found = Some(entry.conn);
                break;
            }
            entry.conn.close();
        }
        if list.is_empty() {
            idle.remove(key);
        }
        found
    }

    /// Keeps `conn` for the next message, or closes it when it has carried enough or is too old.
    pub fn put(&self, key: PoolKey, conn: Connection) {
        let Some(reuse) = *self.reuse.lock().expect("pool lock") else {
            return conn.close();
        };
        let now = Instant::now();
        if conn.uses >= reuse.count || now >= conn.born + reuse.time {
            return conn.close();
        }
        let until = (now + reuse.idle).min(conn.born + reuse.time);
        self.idle
            .lock()
            .expect("pool lock")
            .entry(key)
            .or_default()
            .push(Idle { conn, until });
    }

    /// Closes every connection idle past its time.
    fn reap(&self, now: Instant) {
        let mut expired = Vec::new();
        self.idle.lock().expect("pool lock").retain(|_, list| {
            let (keep, gone): (Vec<Idle>, Vec<Idle>) = list.drain(..).partition(|e| e.until > now);
            expired.extend(gone);
            *list = keep;
            !list.is_empty()
        });
        for e in expired {
            e.conn.close();
        }
    }

    /// Idle connections now.
    pub fn len(&self) -> usize {
        self.idle
            .lock()
            .expect("pool lock")
            .values()
            .map(Vec::len)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
