//! Persistence behind a trait, so the control plane's logic does not depend on sled (and a test
//! or a future store can stand in). The store is deliberately dumb: the service decides what
//! changes, the store writes each change atomically and makes it durable when asked.

mod chunks;
mod sled_store;

pub use sled_store::SledStore;

use postern_policy::{DefaultRule, Direction, Relay, Rule, Settings, Trust};
use serde::{Deserialize, Serialize};

use crate::change::Change;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt record in {what}: {detail}")]
    Corrupt { what: String, detail: String },
}

impl From<sled::transaction::TransactionError<StoreError>> for StoreError {
    fn from(e: sled::transaction::TransactionError<StoreError>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}

/// The singleton documents of the policy, stored whole (in chunks when large).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doc {
    InboundDefault,
    OutboundDefault,
    Relay,
    Trust,
    Settings,
}

impl Doc {
    pub fn key(self) -> &'static str {
        match self {
            Doc::InboundDefault => "inbound_default",
            Doc::OutboundDefault => "outbound_default",
            Doc::Relay => "relay",
            Doc::Trust => "trust",
            Doc::Settings => "settings",
        }
    }
}

/// A rule to write (`Some`) or remove (`None`), by direction and id.
pub type RuleWrite = (Direction, String, Option<Rule>);
/// A singleton document to replace, as JSON.
pub type DocWrite = (Doc, Vec<u8>);

/// Everything a new policy version changes in the current state, plus its history records.
#[derive(Debug)]
pub struct Commit {
    pub version: u64,
    pub rules: Vec<RuleWrite>,
    pub docs: Vec<DocWrite>,
    /// The change log entry for this version.
    pub change: Change,
    pub audit: AuditEntry,
}

/// The current state as the store holds it.
#[derive(Debug, Default)]
pub struct Loaded {
    pub version: u64,
    pub inbound: Vec<Rule>,
    pub outbound: Vec<Rule>,
    pub inbound_default: Option<DefaultRule>,
    pub outbound_default: Option<DefaultRule>,
    pub relay: Option<Relay>,
    pub trust: Option<Trust>,
    pub settings: Option<Settings>,
    pub tokens: Vec<TokenRecord>,
}

/// One version in the history listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VersionSummary {
    pub version: u64,
    /// RFC 3339.
    pub at: String,
    /// The id of the token that made the change.
    pub actor: String,
    pub summary: String,
}

/// Who changed what, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Filled in by the store.
    #[serde(default)]
    pub seq: u64,
    /// RFC 3339.
    pub at: String,
    /// Token id, or `postern` for changes the server makes itself.
    pub actor: String,
    pub role: String,
    /// e.g. `POST /v1/policy/inbound/rules`.
    pub action: String,
    pub summary: String,
    /// The policy version the change made, if it made one.
    pub version: Option<u64>,
}

/// An API token as stored: the secret itself is never stored, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub role: crate::auth::Role,
    pub comment: String,
    pub created_at: String,
    pub sha256: String,
}

/// Durable storage of the control plane's state.
pub trait Store: Send + Sync + 'static {
    fn load(&self) -> Result<Loaded, StoreError>;
    /// Writes one version atomically (not yet durable: see `flush`).
    fn commit(&self, commit: &Commit) -> Result<(), StoreError>;
    /// The change that made `version`.
    fn change(&self, version: u64) -> Result<Option<Change>, StoreError>;
    /// Versions below `before` (all when `None`), newest first.
    fn versions(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<VersionSummary>, StoreError>;
    /// Writes a token change and its audit entry atomically; `None` removes the token.
    fn put_token(
        &self,
        id: &str,
        token: Option<&TokenRecord>,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;
    /// Writes an audit entry for an action that changes no stored state (queue commands).
    fn put_audit(&self, audit: &AuditEntry) -> Result<(), StoreError>;
    /// Audit entries with `seq` below `before`, newest first.
    fn audit(&self, before: Option<u64>, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;
    /// Makes everything written so far survive the process being killed.
    fn flush(&self) -> Result<(), StoreError>;
}
