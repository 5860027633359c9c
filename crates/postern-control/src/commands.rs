//! Commands to workers' queues (docs/src/policy.md#queue-retries-and-bounces, interfaces.md:
//! `/v1/queue`, drain) in the control plane's own
//! terms. The REST handlers build them; the gRPC stream (`grpc.rs`) is the only code that turns
//! them into protobuf and the answers back.

/// What a worker is asked to do with its queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueCommand {
    /// Messages with a recipient not yet final, in queue id order.
    List {
        /// Only those with such a recipient in this domain (empty: any).
        destination: String,
        /// Only those whose such recipient's last reply contains this, ignoring case.
        reason: String,
        /// Only queue ids after this (the cursor).
        after: String,
        limit: u32,
    },
    /// Every deferred recipient of one message due now.
    Retry { queue_id: String },
    /// Every message with a recipient not yet final in `destination` due now (empty: all).
    Flush { destination: String },
    /// Removes one message; with `dsn`, its recipients not yet final are bounced first.
    Delete { queue_id: String, dsn: bool },
    /// No new SMTP sessions; the whole queue due now.
    Drain,
    /// Sends a TLS-RPT report to its domain's `rua` (`found`: the domain has a record).
    SendTlsReport(TlsReportCommand),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsReportCommand {
    pub policy_domain: String,
    /// The report's JSON.
    pub json: Vec<u8>,
    pub report_id: String,
    pub submitter: String,
    pub from: String,
    pub start_s: u64,
    pub end_s: u64,
}

/// What became of a TLS-RPT report at one `rua` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportDelivery {
    pub rua: String,
    pub ok: bool,
    /// The mailed report's queue id, the HTTP status, or the failure.
    pub detail: String,
}

/// A worker's answer to a command that it carried out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutcome {
    /// Retry and delete: the message is in this worker's queue.
    pub found: bool,
    /// Flush: messages made due. Drain: messages still queued.
    pub count: u32,
    /// List: the page.
    pub messages: Vec<QueuedMessage>,
    /// SendTlsReport: each `rua` address.
    pub deliveries: Vec<ReportDelivery>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    pub queue_id: String,
    pub sender: String,
    /// RFC 3339.
    pub received_at: String,
    pub size: u64,
    pub recipients: Vec<QueuedRecipient>,
    /// A delivery round for it is running now.
    pub in_delivery: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRecipient {
    pub address: String,
    /// `pending`, `deferred`, `delivered` or `bounced`.
    pub status: String,
    pub attempts: u32,
    /// RFC 3339, when deferred.
    pub next_attempt: Option<String>,
    pub last_reply: Option<String>,
    /// `host[ip]` of the last attempt.
    pub host: Option<String>,
}
