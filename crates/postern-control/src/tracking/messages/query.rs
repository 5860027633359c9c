//! Searches (docs/src/interfaces.md, `GET /v1/messages` and `GET /v1/connections`): the most
//! selective
//! index the filter allows drives a newest-first scan within the time range; the other filters
//! are checked on each record. A page ends after `limit` matches or after `SCAN_BUDGET` index
//! entries, whichever comes first, so a rare filter returns a short page with a cursor rather
//! than a slow one.

use super::super::keys;
use super::SledMessages;
use super::record::{ConnectionRecord, Listed, Status, SummaryRecord};
use crate::tracking::stores::Page;
use crate::tracking::{TrackingError, corrupt};

/// Index entries examined per page at most.
pub const SCAN_BUDGET: usize = 20_000;

#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    /// Exact address, any case.
    pub sender: Option<String>,
    /// Exact address, any case.
    pub recipient: Option<String>,
    /// Substring of the decoded subject, any case.
    pub subject: Option<String>,
    pub queue_id: Option<String>,
    pub message_id: Option<String>,
    /// Unix ms, inclusive.
    pub since: Option<u64>,
    pub until: Option<u64>,
    pub status: Option<Status>,
    pub worker: Option<String>,
    pub tls: Option<bool>,
    pub plaintext: Option<bool>,
    pub violation: Option<bool>,
}

#[derive(Debug, Clone, Default)]
pub struct ConnectionFilter {
    pub ip: Option<String>,
    pub since: Option<u64>,
    pub until: Option<u64>,
    pub tls_failed: Option<bool>,
    pub starttls_leftovers: Option<bool>,
}

/// A cursor this store did not make.
#[derive(Debug, thiserror::Error)]
#[error("not a cursor this list gave")]
pub struct BadCursor;

pub fn decode_cursor(cursor: &str) -> Result<Vec<u8>, BadCursor> {
    let bytes = hex::decode(cursor).map_err(|_| BadCursor)?;
    if bytes.len() < 8 {
        return Err(BadCursor);
    }
    Ok(bytes)
}

impl MessageFilter {
    /// The facet index entry that narrows the search most, rarest first (`false` marks have
    /// no entries: they are checked on each record).
    fn facet(&self) -> Option<String> {
        if self.violation == Some(true) {
            Some("mark=violation".into())
        } else if let Some(status) = self.status {
            Some(format!("status={}", status.as_str()))
        } else if self.plaintext == Some(true) {
            Some("mark=plaintext".into())
        } else if self.tls == Some(true) {
            Some("mark=tls".into())
        } else {
            self.worker.as_ref().map(|w| format!("worker={w}"))
        }
    }

    fn matches(&self, l: &Listed) -> bool {
        let v = &l.summary;
        let eq = |want: &Option<String>, have: &str| {
            want.as_ref().is_none_or(|w| w.eq_ignore_ascii_case(have))
        };
        eq(&self.sender, &v.sender)
            && self
                .recipient
                .as_ref()
                .is_none_or(|r| v.recipients.iter().any(|x| x.eq_ignore_ascii_case(r)))
            && self.subject.as_ref().is_none_or(|want| {
                v.subject
                    .as_ref()
                    .is_some_and(|s| s.to_lowercase().contains(&want.to_lowercase()))
            })
            && self.queue_id.as_ref().is_none_or(|q| *q == v.id)
            && self
                .message_id
                .as_ref()
                .is_none_or(|m| v.message_id.as_ref() == Some(m))
            && self.since.is_none_or(|t| l.first_ms >= t)
            && self.until.is_none_or(|t| l.first_ms <= t)
            && self.status.is_none_or(|st| v.status == st)
            && self.worker.as_ref().is_none_or(|w| *w == v.worker)
            && self.tls.is_none_or(|b| v.marks.tls == b)
            && self.plaintext.is_none_or(|b| v.marks.plaintext == b)
            && self.violation.is_none_or(|b| v.marks.violation == b)
    }
}

/// Newest-first keys of `tree` under `prefix` within [since, until], after `cursor`; calls
/// `visit` with each key's (time, id) part and id until it returns false or the budget is spent.
/// Returns the
/// cursor to continue from, if the scan stopped early.
fn scan(
    tree: &sled::Tree,
    prefix: &[u8],
    since: Option<u64>,
    until: Option<u64>,
    cursor: Option<&[u8]>,
    mut visit: impl FnMut(&[u8], &str) -> Result<bool, TrackingError>,
) -> Result<Option<Vec<u8>>, TrackingError> {
    let mut start = prefix.to_vec();
    match cursor {
        Some(c) => {
            start.extend_from_slice(c);
            // Strictly after the cursor.
            start.push(0);
        }
        None => start.extend_from_slice(&keys::inverted(until.unwrap_or(u64::MAX))),
    }
    let mut end = prefix.to_vec();
    end.extend_from_slice(&keys::inverted(since.unwrap_or(0)));
    end.push(0xff);
    if start >= end {
        return Ok(None);
    }
    let mut examined = 0usize;
    for entry in tree.range(start..end) {
        let (key, _) = entry?;
        let Some((_, id)) = keys::split_timed(&key, prefix.len()) else {
            continue;
        };
        examined += 1;
        let timed = key[prefix.len()..].to_vec();
        if !visit(&timed, &id)? {
            return Ok(Some(timed));
        }
        if examined >= SCAN_BUDGET {
            return Ok(Some(timed));
        }
    }
    Ok(None)
}

fn listed(m: &SledMessages, id: &str) -> Result<Option<Listed>, TrackingError> {
    m.summaries
        .get(id)?
        .map(|b| serde_json::from_slice(&b).map_err(corrupt))
        .transpose()
}

/// A page of messages matching `f`, newest first, and the cursor of the next page.
pub(super) fn search_messages(
    this: &SledMessages,
    f: &MessageFilter,
    limit: usize,
    cursor: Option<&[u8]>,
) -> Result<Page<SummaryRecord>, TrackingError> {
    if let Some(id) = &f.queue_id {
        let found = listed(this, id)?.filter(|l| f.matches(l));
        return Ok((found.map(|l| l.summary).into_iter().collect(), None));
    }
    let (tree, prefix) = if let Some(r) = &f.recipient {
        (&this.by_rcpt, keys::prefix(&r.to_lowercase()))
    } else if let Some(s) = &f.sender {
        (&this.by_sender, keys::prefix(&s.to_lowercase()))
    } else if let Some(m) = &f.message_id {
        (&this.by_msgid, keys::prefix(m))
    } else if let Some(facet) = f.facet() {
        (&this.by_facet, keys::prefix(&facet))
    } else {
        (&this.by_time, Vec::new())
    };
    let mut items = Vec::new();
    let next = scan(tree, &prefix, f.since, f.until, cursor, |_, id| {
        let Some(listed) = listed(this, id)? else {
            return Ok(true);
        };
        if f.matches(&listed) {
            items.push(listed.summary);
        }
        Ok(items.len() < limit)
    })?;
    Ok((items, next.map(hex::encode)))
}

/// A page of connections matching `f`, newest first, and the cursor of the next page.
pub(super) fn search_connections(
    this: &SledMessages,
    f: &ConnectionFilter,
    limit: usize,
    cursor: Option<&[u8]>,
) -> Result<Page<ConnectionRecord>, TrackingError> {
    let (tree, prefix) = match &f.ip {
        Some(ip) => (&this.conn_by_ip, keys::prefix(ip)),
        None => (&this.connections, Vec::new()),
    };
    let mut items = Vec::new();
    // The (time, session) part of an index key is the connection's own key.
    let next = scan(tree, &prefix, f.since, f.until, cursor, |timed, _| {
        let Some(bytes) = this.connections.get(timed)? else {
            return Ok(true);
        };
        let view: ConnectionRecord = serde_json::from_slice(&bytes).map_err(corrupt)?;
        if f.tls_failed.is_none_or(|b| view.tls_failure.is_some() == b)
            && f.starttls_leftovers
                .is_none_or(|b| (view.starttls_leftovers > 0) == b)
        {
            items.push(view);
        }
        Ok(items.len() < limit)
    })?;
    Ok((items, next.map(hex::encode)))
}
