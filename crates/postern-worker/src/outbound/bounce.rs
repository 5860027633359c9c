//! DSN production (docs/src/policy.md#queue-retries-and-bounces): failed recipients are reported to
//! the sender in one DSN,
//! queued like any message with the null sender. A message from `<>` (a DSN itself) gets none:
//! it is dropped, and said so.

use super::dsn;
use super::queue::{Queue, QueueError};
use super::submit::Local;
use crate::spool;
use postern_smtp::EnhancedStatus;

/// A recipient to report: its address, the reason, and the next hop's name when the reason is
/// that host's reply.
pub struct Bounce<'a> {
    pub recipient: &'a str,
    pub reason: &'a str,
    /// The reason's enhanced status; `5.0.0` when it had none.
    pub status: Option<EnhancedStatus>,
    pub remote_mta: Option<&'a str>,
}

impl Queue {
    /// Reports `failed` in one DSN; its queue id (`None`: nothing to report, or the sender is
    /// `<>`). `message` is the original, for its headers.
    pub(super) async fn report(
        &self,
        id: &str,
        envelope: &spool::Envelope,
        message: &[u8],
        failed: &[Bounce<'_>],
    ) -> Result<Option<String>, QueueError> {
        if failed.is_empty() {
            return Ok(None);
        }
        if envelope.sender.is_empty() {
            for f in failed {
                tracing::warn!(%id, recipient = f.recipient, reason = f.reason, "undeliverable delivery status notification dropped");
            }
            return Ok(None);
        }
        let report: Vec<dsn::Failed<'_>> = failed
            .iter()
            .map(|f| dsn::Failed {
                recipient: f.recipient,
                status: f.status.unwrap_or(EnhancedStatus(5, 0, 0)).to_string(),
                remote_mta: f.remote_mta,
                diagnostic: f.reason,
            })
            .collect();
        let dsn_id = ulid::Ulid::new().to_string();
        let bytes = dsn::build(
            &self.hostname,
            id,
            &dsn_id,
            &envelope.sender,
            &report,
            message,
            postern_time::now_s(),
        );
        self.spool_dsn(envelope, dsn_id, bytes).await.map(Some)
    }

    /// Queues a bounce to the original sender, with the null envelope sender.
    async fn spool_dsn(
        &self,
        original: &spool::Envelope,
        id: String,
        report: Vec<u8>,
    ) -> Result<String, QueueError> {
        self.spool.fault(spool::Fault::Dsn)?;
        let local = Local {
            sender: String::new(),
            recipients: vec![original.sender.clone()],
            subject: dsn::SUBJECT.into(),
            bytes: report,
            policy_version: original.policy_version,
            tls_optional: false,
        };
        self.queue_local(id.clone(), local).await?;
        tracing::info!(%id, original = %original.id, "queued a delivery status notification");
        Ok(id)
    }
}
