//! Messages the worker queues itself rather than receives over SMTP: DSNs (`bounce`) and the
//! TLS-RPT reports the control plane asks it to send. They are spooled and tracked like any
//! received message, from 127.0.0.1 with the worker's hostname as HELO.

use postern_events::{self as events, Event};

use super::queue::{Queue, QueueError};
use crate::spool;

/// A locally made message.
pub struct Local {
    /// The envelope sender (`<>` for a DSN).
    pub sender: String,
    pub recipients: Vec<String>,
    /// For tracking (the message's own header says the same).
    pub subject: String,
    /// The whole message, headers and body, CRLF line ends.
    pub bytes: Vec<u8>,
    pub policy_version: u64,
    /// `TLS-Required: No` (RFC 8689): see `spool::Envelope::tls_optional`.
    pub tls_optional: bool,
}

impl Queue {
    /// Spools `m` under `id` and schedules it for delivery.
    pub async fn queue_local(&self, id: String, m: Local) -> Result<(), QueueError> {
        // Defence in depth: whatever produced these addresses (a DNS record, a received
        // message) checked them, and still nothing we queue can put a line end in a command.
        if let Some(bad) = std::iter::once(&m.sender)
            .chain(&m.recipients)
            .find(|a| !postern_smtp::is_envelope_address(a))
        {
            return Err(QueueError::Address(postern_smtp::escaped_controls(bad)));
        }
        if m.recipients.is_empty() {
            return Err(QueueError::Address("no recipient".into()));
        }
        let envelope = spool::Envelope {
            id: id.clone(),
            sender: m.sender,
            recipients: m.recipients,
            received_at: postern_time::rfc3339_s(postern_time::now_s()),
            client_ip: "127.0.0.1".into(),
            helo: self.hostname.clone(),
            tls: None,
            policy_version: m.policy_version,
            smtputf8: false,
            eight_bit: false,
            tls_optional: m.tls_optional,
        };
        let received = events::Received {
            queue_id: id.clone(),
            session: String::new(),
            source: events::Source {
                ip: envelope.client_ip.clone(),
                helo: envelope.helo.clone(),
                tls: None,
            },
            sender: envelope.sender.clone(),
            recipients: envelope.recipients.clone(),
            size: m.bytes.len() as u64,
            subject: Some(m.subject),
            message_id: Some(format!("{id}@{}", self.hostname)),
        };
        let spool = self.spool.clone();
        let bytes = m.bytes;
        let incoming = tokio::task::spawn_blocking(move || {
            let mut incoming = spool.begin(&envelope, b"");
            incoming.write(&bytes);
            incoming
        })
        .await
        .map_err(|e| QueueError::Task(e.to_string()))?;
        self.spool.commit(incoming).await?;
        self.outbox
            .emit(self.policy_version(), Event::Received(received));
        let _ = self.queued.send(id);
        Ok(())
    }
}
