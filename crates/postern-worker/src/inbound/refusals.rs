//! Connections refused before their session (no policy yet, too many sessions) are counted
//! per source address and minute, in one tracking record: a flood of refused connections is a
//! record a minute per source, not a record per connection (it would otherwise grow tracking
//! as fast as anyone can connect). The first refusal of a minute is reported at once; the
//! record is reported again, under the same session and start, as its count grows
//! (`flush`), and the control plane keeps the last.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use postern_events::{Connection, Event};

/// Sources counted at once; past this, every count is reported and the counts start again.
const MAX_SOURCES: usize = 10_000;

struct Count {
    minute: u64,
    session: String,
    started_ms: u64,
    version: u64,
    reply: String,
    count: u32,
    reported: u32,
}

impl Count {
    fn event(&mut self, ip: IpAddr) -> (u64, Event) {
        self.reported = self.count;
        let c = Connection {
            session: self.session.clone(),
            ip: ip.to_string(),
            started_ms: self.started_ms,
            helo: None,
            tls: None,
            tls_failure: None,
            refused: Some(self.reply.clone()),
            messages: 0,
            starttls_leftovers: 0,
            refused_count: self.count,
        };
        (self.version, Event::Connection(c))
    }
}

#[derive(Default)]
pub struct Refusals(Mutex<HashMap<IpAddr, Count>>);

impl Refusals {
    /// Counts a refusal of `ip` at `now_ms`: the events to emit now (the first of its minute,
    /// and the final count of the source's previous minute).
    pub fn refused(&self, ip: IpAddr, version: u64, reply: &str, now_ms: u64) -> Vec<(u64, Event)> {
        let minute = now_ms / 60_000;
        let mut counts = self.0.lock().expect("refusals lock");
        let mut out = Vec::new();
        if let Some(c) = counts.get_mut(&ip) {
            if c.minute == minute {
                c.count += 1;
                return out;
            }
            if c.count > c.reported {
                out.push(c.event(ip));
            }
        }
        if counts.len() >= MAX_SOURCES {
            out.extend(grown(&mut counts));
            counts.clear();
        }
        let mut c = Count {
            minute,
            session: ulid::Ulid::new().to_string(),
            started_ms: now_ms,
            version,
            reply: reply.trim_end().to_string(),
            count: 1,
            reported: 0,
        };
        out.push(c.event(ip));
        counts.insert(ip, c);
        out
    }

    /// The counts that grew since they were last reported; minutes that are over are forgotten.
    pub fn flush(&self, now_ms: u64) -> Vec<(u64, Event)> {
        let minute = now_ms / 60_000;
        let mut counts = self.0.lock().expect("refusals lock");
        let out = grown(&mut counts);
        counts.retain(|_, c| c.minute == minute);
        out
    }
}

/// The events of the counts that grew since they were last reported (now reported).
fn grown(counts: &mut HashMap<IpAddr, Count>) -> Vec<(u64, Event)> {
    counts
        .iter_mut()
        .filter(|(_, c)| c.count > c.reported)
        .map(|(ip, c)| c.event(*ip))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(events: &[(u64, Event)]) -> Vec<(String, u32)> {
        events
            .iter()
            .map(|(_, e)| match e {
                Event::Connection(c) => (c.session.clone(), c.refused_count),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_flood_is_one_record_a_minute_per_source() {
        let r = Refusals::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let first = count(&r.refused(ip, 1, "421 too many\r\n", 60_000));
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].1, 1);
        for i in 0..99 {
            assert!(r.refused(ip, 1, "421 too many", 60_001 + i).is_empty());
        }
        // The flush reports the same record with its count; nothing new to say after it.
        let flushed = count(&r.flush(61_000));
        assert_eq!(flushed, [(first[0].0.clone(), 100)]);
        assert!(r.flush(62_000).is_empty());
        // The next minute is a new record; the old one had nothing left to report.
        let next = count(&r.refused(ip, 1, "421 too many", 120_000));
        assert_eq!(next.len(), 1);
        assert_ne!(next[0].0, first[0].0);
    }

    #[test]
    fn a_minute_left_unflushed_is_reported_when_the_next_begins() {
        let r = Refusals::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        r.refused(ip, 1, "421", 0);
        r.refused(ip, 1, "421", 1);
        let events = count(&r.refused(ip, 1, "421", 60_000));
        assert_eq!(events.iter().map(|e| e.1).collect::<Vec<_>>(), [2, 1]);
    }
}
