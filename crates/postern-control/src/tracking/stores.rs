//! The three stores tracking is made of, each behind its own trait as the policy store is
//! (`store::Store`): message tracking (messages and connections), TLS-RPT (the sessions our
//! reports are built from, the reports built and those received) and MTA-STS knowledge (the
//! domains' policies as workers fetched them). `Tracking` routes each ingested event to its
//! store and acknowledges a batch once every store it touched is durable. Today's engine is
//! sled (`messages::SledMessages`, `tlsrpt::SledTlsRpt`, `sts::SledSts`); an SQL engine
//! implements the same traits. Every method blocks: call them off the async threads.

use postern_events::{Record, StsPolicy, TlsSession};
use postern_sts::tlsrpt::Aggregate;

use super::TrackingError;
use super::messages::query::{ConnectionFilter, MessageFilter};
use super::messages::record::{ConnectionRecord, MessageRecord, SummaryRecord};
use super::sts::KnownSts;
use crate::reports::received::ReceivedReport;
use crate::reports::store::Kept;

/// A page of records and the cursor of the next page.
pub type Page<T> = (Vec<T>, Option<String>);

/// What folding a batch did, for the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Folded {
    /// Events refused because their message belongs to another worker.
    pub foreign: u64,
}

/// Messages and connections (docs/src/tracking.md, interfaces.md).
pub trait MessageStore: Send + Sync {
    /// Folds a batch of `worker`'s message and connection events of `epoch`, in sequence
    /// order (an event folded in before changes nothing).
    fn fold(&self, worker: &str, epoch: &str, records: &[&Record])
    -> Result<Folded, TrackingError>;
    /// A message with its newest timeline entries.
    fn message(&self, id: &str) -> Result<Option<MessageRecord>, TrackingError>;
    fn search_messages(
        &self,
        f: &MessageFilter,
        limit: usize,
        cursor: Option<&[u8]>,
    ) -> Result<Page<SummaryRecord>, TrackingError>;
    fn search_connections(
        &self,
        f: &ConnectionFilter,
        limit: usize,
        cursor: Option<&[u8]>,
    ) -> Result<Page<ConnectionRecord>, TrackingError>;
    /// Removes messages and connections older than `cutoff_ms`, then the oldest while either
    /// is over its byte budget; (messages, connections) removed.
    fn enforce(
        &self,
        cutoff_ms: u64,
        max_bytes: u64,
        connections_max_bytes: u64,
    ) -> Result<(u64, u64), TrackingError>;
    /// Messages stored.
    fn count(&self) -> u64;
    /// Bytes on disk of messages (what `tracking.max_bytes` limits), and of connections.
    fn size_on_disk(&self) -> u64;
    fn connections_size_on_disk(&self) -> u64;
    fn flush(&self) -> Result<(), TrackingError>;
}

/// TLS-RPT (RFC 8460): sessions by UTC day and domain, reports built from them, and the reports
/// other organisations sent about our domains.
pub trait TlsRptStore: Send + Sync {
    /// Stores a session (keyed by worker, epoch and sequence: a replay overwrites itself).
    fn put_session(
        &self,
        worker: &str,
        epoch: &str,
        seq: u64,
        s: &TlsSession,
    ) -> Result<(), TrackingError>;
    /// The sessions of `day` (`YYYY-MM-DD`), one domain's aggregate at a time, in domain order.
    fn sessions_by_domain(
        &self,
        day: &str,
        each: &mut dyn FnMut(String, Aggregate),
    ) -> Result<(), TrackingError>;
    /// Stores built reports, (domain, JSON) each, replacing that day's earlier ones.
    fn put_reports(&self, date: &str, reports: &[(String, Vec<u8>)]) -> Result<(), TrackingError>;
    /// Built reports, newest day first, optionally of one day or one domain.
    fn reports(
        &self,
        date: Option<&str>,
        domain: Option<&str>,
    ) -> Result<Vec<Vec<u8>>, TrackingError>;
    /// Keeps a received report within `budget` bytes (a duplicate is kept once).
    fn put_received(&self, report: ReceivedReport, budget: u64) -> Result<Kept, TrackingError>;
    /// Received reports, newest first, of `organization` if given, after `cursor`.
    fn received(
        &self,
        organization: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<ReceivedReport>, TrackingError>;
    /// Drops what is older than `cutoff_ms` (retention); how many entries went.
    fn prune(&self, cutoff_ms: u64) -> Result<u64, TrackingError>;
    /// Bytes on disk of sessions and built reports.
    fn size_on_disk(&self) -> u64;
    fn flush(&self) -> Result<(), TrackingError>;
}

/// The recipient domains' MTA-STS policies as workers last fetched them.
pub trait StsKnowledge: Send + Sync {
    /// Keeps `p` if it is newer than what is known of its domain.
    fn record(&self, worker: &str, p: &StsPolicy) -> Result<(), TrackingError>;
    fn get(&self, domain: &str) -> Result<Option<KnownSts>, TrackingError>;
    /// Forgets the policies expired at `now_ms`; how many went.
    fn prune(&self, now_ms: u64) -> Result<u64, TrackingError>;
    fn flush(&self) -> Result<(), TrackingError>;
}
