//! Where received TLS-RPT reports live: a sled database of their own, apart from message
//! tracking (anyone may send a report; what they send must never make tracking's retention
//! delete the operator's message records), on a byte budget
//! (`settings.reports.received_max_bytes`). Each report is kept under an id of our own (a
//! ULID: arrival order), so no report sent later, forged or not, can overwrite one kept; the
//! same bytes sent again are kept once.
//!
//! Trees: `reports` (id -> the report's JSON record), `by_org` (organisation \0 id -> ()),
//! `digests` (SHA-256 of the report -> id).

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use sha2::Digest as _;

use super::received::ReceivedReport;
use crate::tracking::TrackingError;

pub struct ReceivedStore {
    db: sled::Db,
    reports: sled::Tree,
    by_org: sled::Tree,
    digests: sled::Tree,
    /// Bytes of the kept records (keys and values of `reports`), counted at open.
    bytes: AtomicU64,
    /// Ids in order even within a millisecond.
    ids: std::sync::Mutex<ulid::Generator>,
}

/// What became of a report offered to the store.
#[derive(Debug, PartialEq, Eq)]
pub enum Kept {
    New(String),
    /// The same report was kept already, under this id.
    Again(String),
    /// The budget is spent.
    Full,
}

fn corrupt(e: impl std::fmt::Display) -> TrackingError {
    TrackingError::Corrupt(e.to_string())
}

impl ReceivedStore {
    pub fn open(dir: &Path) -> Result<ReceivedStore, TrackingError> {
        let db = sled::Config::new().path(dir).open()?;
        let reports = db.open_tree("reports")?;
        let mut bytes = 0;
        for entry in reports.iter() {
            let (k, v) = entry?;
            bytes += (k.len() + v.len()) as u64;
        }
        Ok(ReceivedStore {
            by_org: db.open_tree("by_org")?,
            digests: db.open_tree("digests")?,
            reports,
            db,
            bytes: AtomicU64::new(bytes),
            ids: std::sync::Mutex::new(ulid::Generator::new()),
        })
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }

    /// Keeps `report` (its `id` is set here) unless `budget` bytes are kept already.
    pub fn put(&self, mut report: ReceivedReport, budget: u64) -> Result<Kept, TrackingError> {
        let raw = serde_json::to_vec(&report.report).expect("JSON serialises");
        let digest = sha2::Sha256::digest(&raw);
        if let Some(id) = self.digests.get(digest)? {
            return Ok(Kept::Again(String::from_utf8_lossy(&id).into_owned()));
        }
        let id = {
            let mut ids = self.ids.lock().expect("ids lock");
            // Only fails when 2^80 ids were made in one millisecond.
            ids.generate()
                .unwrap_or_else(|_| ulid::Ulid::new())
                .to_string()
        };
        report.id = id.clone();
        let value = serde_json::to_vec(&report).expect("reports serialise");
        let size = (id.len() + value.len()) as u64;
        if self.bytes() + size > budget {
            return Ok(Kept::Full);
        }
        self.reports.insert(id.as_bytes(), value)?;
        self.by_org
            .insert(org_key(&report.organization_name, &id), &[])?;
        self.digests.insert(digest, id.as_bytes())?;
        self.bytes.fetch_add(size, Relaxed);
        Ok(Kept::New(id))
    }

    pub fn get(&self, id: &str) -> Result<Option<ReceivedReport>, TrackingError> {
        self.reports
            .get(id)?
            .map(|v| serde_json::from_slice(&v).map_err(corrupt))
            .transpose()
    }

    /// Up to `limit` reports, newest first, of `organization` if given, after `cursor` (the
    /// last id of the previous page); and the cursor of the next page.
    pub fn page(
        &self,
        organization: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<ReceivedReport>, Option<String>), TrackingError> {
        let ids: Box<dyn Iterator<Item = Result<String, TrackingError>>> = match organization {
            Some(org) => {
                let prefix = org_key(org, "");
                let end = match cursor {
                    Some(c) => org_key(org, c),
                    None => {
                        let mut e = prefix.clone();
                        e.push(0xff);
                        e
                    }
                };
                Box::new(self.by_org.range(prefix.clone()..end).rev().map(move |e| {
                    let (k, _) = e?;
                    Ok(String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
                }))
            }
            None => {
                let range = match cursor {
                    Some(c) => self.reports.range(..c.as_bytes().to_vec()),
                    None => self.reports.range::<Vec<u8>, _>(..),
                };
                Box::new(range.rev().map(|e| {
                    let (k, _) = e?;
                    Ok(String::from_utf8_lossy(&k).into_owned())
                }))
            }
        };
        let mut items = Vec::new();
        for id in ids.take(limit + 1) {
            if let Some(r) = self.get(&id?)? {
                items.push(r);
            }
        }
        let next = (items.len() > limit).then(|| {
            items.truncate(limit);
            items.last().map(|r| r.id.clone())
        });
        Ok((items, next.flatten()))
    }

    /// Removes the reports that arrived before `cutoff_ms` (retention): ids are ULIDs, so they
    /// are a range. How many went.
    pub fn prune(&self, cutoff_ms: u64) -> Result<u64, TrackingError> {
        let bound = ulid::Ulid::from_parts(cutoff_ms, 0).to_string();
        let mut removed = 0;
        for entry in self.reports.range(..bound.as_bytes()) {
            let (key, value) = entry?;
            let report: ReceivedReport = serde_json::from_slice(&value).map_err(corrupt)?;
            let raw = serde_json::to_vec(&report.report).expect("JSON serialises");
            self.digests.remove(sha2::Sha256::digest(&raw))?;
            self.by_org
                .remove(org_key(&report.organization_name, &report.id))?;
            self.reports.remove(&key)?;
            self.bytes
                .fetch_sub((key.len() + value.len()) as u64, Relaxed);
            removed += 1;
        }
        Ok(removed)
    }

    pub async fn flush_async(&self) -> Result<(), TrackingError> {
        self.db.flush_async().await?;
        Ok(())
    }

    pub fn flush(&self) -> Result<(), TrackingError> {
        self.db.flush()?;
        Ok(())
    }
}

fn org_key(org: &str, id: &str) -> Vec<u8> {
    format!("{org}\0{id}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(org: &str, n: u32) -> ReceivedReport {
        ReceivedReport {
            id: String::new(),
            organization_name: org.into(),
            report_id: "same-id".into(),
            start_datetime: "2026-12-06T00:00:00Z".into(),
            end_datetime: "2026-12-06T23:59:59Z".into(),
            contact_info: "x@y".into(),
            received_ms: 1_765_065_600_000,
            via: super::super::received::Via::Https,
            source: "t".into(),
            policy_domains: vec!["ours.test".into()],
            successful_sessions: n.into(),
            failed_sessions: 0,
            report: serde_json::json!({"n": n, "organization-name": org}),
        }
    }

    #[test]
    fn reports_keep_their_own_ids_page_newest_first_and_stay_on_budget() {
        let dir = tempfile::tempdir().unwrap();
        let s = ReceivedStore::open(dir.path()).unwrap();
        let mut ids = Vec::new();
        for n in 0..5 {
            let org = if n % 2 == 0 { "Even" } else { "Odd" };
            match s.put(report(org, n), 1 << 20).unwrap() {
                Kept::New(id) => ids.push(id),
                other => panic!("{other:?}"),
            }
        }
        // The same report-id with other contents (a forgery, say) is kept beside, never over.
        assert_eq!(s.get(&ids[0]).unwrap().unwrap().successful_sessions, 0);
        // The same bytes again are kept once.
        assert_eq!(
            s.put(report("Even", 0), 1 << 20).unwrap(),
            Kept::Again(ids[0].clone())
        );

        let (page, next) = s.page(None, 2, None).unwrap();
        assert_eq!(
            page.iter().map(|r| &r.id).collect::<Vec<_>>(),
            [&ids[4], &ids[3]]
        );
        let (page, next) = s.page(None, 2, next.as_deref()).unwrap();
        assert_eq!(
            page.iter().map(|r| &r.id).collect::<Vec<_>>(),
            [&ids[2], &ids[1]]
        );
        let (page, next) = s.page(None, 2, next.as_deref()).unwrap();
        assert_eq!(page.len(), 1);
        assert!(next.is_none());
        let (even, next) = s.page(Some("Even"), 2, None).unwrap();
        assert_eq!(
            even.iter().map(|r| &r.id).collect::<Vec<_>>(),
            [&ids[4], &ids[2]]
        );
        let (even, _) = s.page(Some("Even"), 2, next.as_deref()).unwrap();
        assert_eq!(even.iter().map(|r| &r.id).collect::<Vec<_>>(), [&ids[0]]);

        // The budget: nothing more once it is spent; retention frees it.
        let used = s.bytes();
        assert_eq!(s.put(report("Odd", 99), used).unwrap(), Kept::Full);
        drop(s);
        let s = ReceivedStore::open(dir.path()).unwrap();
        assert_eq!(s.bytes(), used, "counted again at open");
        assert_eq!(s.prune((1 << 48) - 1).unwrap(), 5);
        assert_eq!(s.bytes(), 0);
        assert!(matches!(
            s.put(report("Odd", 99), used).unwrap(),
            Kept::New(_)
        ));
    }
}
