//! TLS-RPT reports received about our domains, in SQL, on a byte budget
//! (`settings.reports.received_max_bytes`), apart from message tracking's budget: anyone may
//! send a report, and what they send must never make retention delete the operator's message
//! records. Each is kept under an id of our own (a ULID: arrival order), so no report sent
//! later, forged or not, can take a kept one's place; the same bytes sent again are kept once
//! (by their SHA-256).

use std::sync::Mutex;

use sha2::Digest as _;

use super::pack::{pack, unpack};
use super::{Conn, P};
use crate::reports::received::ReceivedReport;
use crate::tracking::TrackingError;

/// What became of a report offered to the store.
#[derive(Debug, PartialEq, Eq)]
pub enum Kept {
    New(String),
    /// The same report was kept already, under this id.
    Again(String),
    /// The budget is spent.
    Full,
}

/// Ids in order even within a millisecond.
pub struct Ids(Mutex<ulid::Generator>);

impl Default for Ids {
    fn default() -> Ids {
        Ids(Mutex::new(ulid::Generator::new()))
    }
}

impl Ids {
    fn next(&self) -> String {
        let mut ids = self.0.lock().expect("ids lock");
        // Only fails when 2^80 ids were made in one millisecond.
        ids.generate()
            .unwrap_or_else(|_| ulid::Ulid::new())
            .to_string()
    }
}

fn digest(report: &ReceivedReport) -> Vec<u8> {
    let raw = serde_json::to_vec(&report.report).expect("JSON serialises");
    sha2::Sha256::digest(&raw).to_vec()
}

/// Keeps `report` (its `id` is set here, unless it has one: an import) unless `budget` bytes
/// are kept already.
pub fn put(
    c: &mut Conn,
    ids: &Ids,
    mut report: ReceivedReport,
    budget: u64,
) -> Result<Kept, TrackingError> {
    let digest = digest(&report);
    let known = c.rows(
        "SELECT id FROM received_reports WHERE digest = $1",
        &[P::B(digest.clone())],
        |r| r.text(0),
    )?;
    if let Some(id) = known.into_iter().next() {
        return Ok(Kept::Again(id));
    }
    if report.id.is_empty() {
        report.id = ids.next();
    }
    let record = pack(&report);
    // The budget counts the report as JSON, not as packed: what a reporter makes us keep
    // cannot grow past it by compressing well, and the disk taken is never more.
    let json_len = serde_json::to_vec(&report)
        .expect("reports serialise")
        .len();
    let size = (report.id.len() + json_len) as u64;
    let kept = c
        .one_int(
            "SELECT CAST(coalesce(sum(bytes), 0) AS BIGINT) FROM received_reports",
            &[],
        )?
        .unwrap_or(0) as u64;
    if kept + size > budget {
        return Ok(Kept::Full);
    }
    c.execute(
        "INSERT INTO received_reports (id, organization, digest, bytes, record)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        &[
            P::from(report.id.as_str()),
            P::from(report.organization_name.as_str()),
            P::B(digest),
            P::from(size),
            P::B(record),
        ],
    )?;
    Ok(Kept::New(report.id))
}

pub fn get(c: &mut Conn, id: &str) -> Result<Option<ReceivedReport>, TrackingError> {
    let found = c.rows(
        "SELECT record FROM received_reports WHERE id = $1",
        &[P::from(id)],
        |r| unpack(&r.blob(0)?),
    )?;
    Ok(found.into_iter().next())
}

/// Up to `limit` reports, newest first, of `organization` if given, after `cursor` (the last
/// id of the previous page); and the cursor of the next page.
pub fn page(
    c: &mut Conn,
    organization: Option<&str>,
    limit: usize,
    cursor: Option<&str>,
) -> Result<(Vec<ReceivedReport>, Option<String>), TrackingError> {
    let mut items: Vec<ReceivedReport> = c.rows(
        "SELECT record FROM received_reports
         WHERE ($1 = '' OR organization = $1) AND ($2 = '' OR id < $2)
         ORDER BY id DESC LIMIT $3",
        &[
            P::from(organization.unwrap_or_default()),
            P::from(cursor.unwrap_or_default()),
            P::from(limit as u64 + 1),
        ],
        |r| unpack(&r.blob(0)?),
    )?;
    let next = (items.len() > limit).then(|| {
        items.truncate(limit);
        items.last().map(|r| r.id.clone())
    });
    Ok((items, next.flatten()))
}

/// Removes the reports that arrived before `cutoff_ms` (retention): ids are ULIDs, so they
/// are a range. How many went.
pub fn prune(c: &mut Conn, cutoff_ms: u64) -> Result<u64, TrackingError> {
    let bound = ulid::Ulid::from_parts(cutoff_ms, 0).to_string();
    c.execute(
        "DELETE FROM received_reports WHERE id < $1",
        &[P::from(bound)],
    )
}
