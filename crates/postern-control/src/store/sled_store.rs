//! The sled implementation of `Store`. Trees: `meta` (current version), `rules/inbound` and
//! `rules/outbound` (id -> rule), `docs` (defaults, relay, trust, settings, chunked), `versions`
//! (version -> summary), `changes` (version -> change, chunked), `audit` (seq -> entry),
//! `tokens` (id -> token record). One sled transaction per version or token change.

use std::path::Path;

use postern_policy::{Direction, Rule};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::{
    AuditEntry, Commit, Doc, Loaded, Store, StoreError, TokenRecord, VersionSummary, chunks,
};
use crate::change::Change;

const VERSION_KEY: &[u8] = b"version";

pub struct SledStore {
    db: sled::Db,
    meta: sled::Tree,
    inbound: sled::Tree,
    outbound: sled::Tree,
    docs: sled::Tree,
    versions: sled::Tree,
    changes: sled::Tree,
    audit: sled::Tree,
    tokens: sled::Tree,
}

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        what: what.to_string(),
        detail: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("our types serialise")
}

impl SledStore {
    /// Opens (or creates) the store in `path`. sled allows one process per directory; a second
    /// one gets an error here.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(256 * 1024 * 1024)
            .open()?;
        Ok(SledStore {
            meta: db.open_tree("meta")?,
            inbound: db.open_tree("rules/inbound")?,
            outbound: db.open_tree("rules/outbound")?,
            docs: db.open_tree("docs")?,
            versions: db.open_tree("versions")?,
            changes: db.open_tree("changes")?,
            audit: db.open_tree("audit")?,
            tokens: db.open_tree("tokens")?,
            db,
        })
    }

    fn rules(tree: &sled::Tree, what: &str) -> Result<Vec<Rule>, StoreError> {
        tree.iter().values().map(|v| decode(what, &v?)).collect()
    }

    fn doc<T: DeserializeOwned>(&self, doc: Doc) -> Result<Option<T>, StoreError> {
        chunks::read(&self.docs, doc.key().as_bytes())?
            .map(|bytes| decode(doc.key(), &bytes))
            .transpose()
    }
}

impl Store for SledStore {
    fn load(&self) -> Result<Loaded, StoreError> {
        let version = self
            .meta
            .get(VERSION_KEY)?
            .map(|v| decode::<u64>("meta/version", &v))
            .transpose()?
            .unwrap_or(0);
        Ok(Loaded {
            version,
            inbound: Self::rules(&self.inbound, "rules/inbound")?,
            outbound: Self::rules(&self.outbound, "rules/outbound")?,
            inbound_default: self.doc(Doc::InboundDefault)?,
            outbound_default: self.doc(Doc::OutboundDefault)?,
            relay: self.doc(Doc::Relay)?,
            trust: self.doc(Doc::Trust)?,
            settings: self.doc(Doc::Settings)?,
            tokens: self
                .tokens
                .iter()
                .values()
                .map(|v| decode("tokens", &v?))
                .collect::<Result<_, _>>()?,
        })
    }

    fn commit(&self, c: &Commit) -> Result<(), StoreError> {
        let version_key = c.version.to_be_bytes();
        let summary = encode(&VersionSummary {
            version: c.version,
            at: c.change.at.clone(),
            actor: c.change.actor.clone(),
            summary: c.change.summary.clone(),
        });
        let change = encode(&c.change);
        let rules: Vec<_> = c
            .rules
            .iter()
            .map(|(d, id, rule)| (*d, id.as_bytes(), rule.as_ref().map(encode)))
            .collect();
        (
            &self.meta,
            &self.inbound,
            &self.outbound,
            &self.docs,
            &self.versions,
            &self.changes,
            &self.audit,
        )
            .transaction(
                |(meta, inbound, outbound, docs, versions, changes, audit)| {
                    let current = meta
                        .get(VERSION_KEY)?
                        .map(|v| decode::<u64>("meta/version", &v))
                        .transpose()
                        .map_err(ConflictableTransactionError::Abort)?
                        .unwrap_or(0);
                    if c.version != current + 1 {
                        return Err(ConflictableTransactionError::Abort(StoreError::Corrupt {
                            what: "meta/version".into(),
                            detail: format!("committing version {} on top of {current}", c.version),
                        }));
                    }
                    for (direction, id, rule) in &rules {
                        let tree = match direction {
                            Direction::Inbound => inbound,
                            Direction::Outbound => outbound,
                        };
                        match rule {
                            Some(bytes) => tree.insert(*id, bytes.as_slice())?,
                            None => tree.remove(*id)?,
                        };
                    }
                    for (doc, bytes) in &c.docs {
                        chunks::write(docs, doc.key().as_bytes(), bytes)?;
                    }
                    chunks::write(changes, &version_key, &change)?;
                    versions.insert(&version_key, summary.as_slice())?;
                    let mut entry = c.audit.clone();
                    entry.seq = audit.generate_id()?;
                    audit.insert(&entry.seq.to_be_bytes(), encode(&entry))?;
                    meta.insert(VERSION_KEY, encode(&c.version))?;
                    Ok(())
                },
            )?;
        Ok(())
    }

    fn change(&self, version: u64) -> Result<Option<Change>, StoreError> {
        chunks::read(&self.changes, &version.to_be_bytes())?
            .map(|bytes| decode("changes", &bytes))
            .transpose()
    }

    fn versions(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<VersionSummary>, StoreError> {
        let end = before.unwrap_or(u64::MAX).to_be_bytes();
        self.versions
            .range(..end)
            .rev()
            .take(limit)
            .map(|kv| decode("versions", &kv?.1))
            .collect()
    }

    fn put_token(
        &self,
        id: &str,
        token: Option<&TokenRecord>,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let record = token.map(encode);
        (&self.tokens, &self.audit).transaction(|(tokens, log)| {
            match &record {
                Some(bytes) => tokens.insert(id.as_bytes(), bytes.as_slice())?,
                None => tokens.remove(id.as_bytes())?,
            };
            let mut entry = audit.clone();
            entry.seq = log.generate_id()?;
            log.insert(&entry.seq.to_be_bytes(), encode(&entry))?;
            Ok(())
        })?;
        Ok(())
    }

    fn put_audit(&self, audit: &AuditEntry) -> Result<(), StoreError> {
        let mut entry = audit.clone();
        entry.seq = self.db.generate_id()?;
        self.audit.insert(entry.seq.to_be_bytes(), encode(&entry))?;
        Ok(())
    }

    fn audit(&self, before: Option<u64>, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let end = before.unwrap_or(u64::MAX).to_be_bytes();
        self.audit
            .range(..end)
            .rev()
            .take(limit)
            .map(|kv| decode("audit", &kv?.1))
            .collect()
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}
