//! Operators' commands from the control plane (the policy stream's `Command`): the queue
//! commands and drain. The edge where they turn from wire types into queue calls and back.

use std::sync::Arc;

use postern_proto::pb::{self, command};
use tokio::sync::watch;

use crate::outbound::manage::{Filter, Listed};
use crate::outbound::queue::Queue;
use crate::outbound::report::TlsReport;
use crate::outbound::state::RcptStatus;

/// The most messages one list command returns.
const MAX_LIST: usize = 1000;

pub struct Commands {
    pub queue: Arc<Queue>,
    /// True once drained: the SMTP listener closes and `/readyz` says so.
    pub draining: watch::Sender<bool>,
}

fn listed(m: Listed) -> pb::QueuedMessage {
    pb::QueuedMessage {
        queue_id: m.envelope.id,
        sender: m.envelope.sender,
        received_at: m.envelope.received_at,
        size: m.size,
        in_delivery: m.in_delivery,
        recipients: m
            .recipients
            .into_iter()
            .map(|r| pb::QueuedRecipient {
                status: format!("{:?}", r.status).to_lowercase(),
                next_attempt: if r.status == RcptStatus::Deferred {
                    postern_time::rfc3339_s(r.next_attempt)
                } else {
                    String::new()
                },
                address: r.address,
                attempts: r.attempts,
                last_reply: r.last.unwrap_or_default(),
                host: r.host.unwrap_or_default(),
            })
            .collect(),
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl Commands {
    /// Carries out one command; failures are in the result's `error`.
    pub async fn handle(&self, command: pb::Command) -> pb::CommandResult {
        let mut result = pb::CommandResult {
            id: command.id,
            ..Default::default()
        };
        let queue = self.queue.clone();
        let outcome: Result<(), String> = match command.op {
            Some(command::Op::List(list)) => {
                let filter = Filter {
                    destination: non_empty(list.destination),
                    reason: non_empty(list.reason),
                    after: non_empty(list.after),
                    limit: (list.limit as usize).clamp(1, MAX_LIST),
                };
                blocking(move || queue.list(&filter)).await.map(|messages| {
                    result.messages = messages.into_iter().map(listed).collect();
                })
            }
            Some(command::Op::Retry(retry)) => {
                result.found = queue.retry(&retry.queue_id);
                Ok(())
            }
            Some(command::Op::Flush(flush)) => {
                let destination = non_empty(flush.destination);
                blocking(move || queue.flush(destination.as_deref()))
                    .await
                    .map(|n| result.count = n as u32)
            }
            Some(command::Op::Delete(delete)) => queue
                .delete(&delete.queue_id, delete.dsn)
                .await
                .map(|found| result.found = found)
                .map_err(|e| format!("deleting {}: {e}", delete.queue_id)),
            Some(command::Op::Drain(_)) => self.drain().await.map(|n| result.count = n as u32),
            Some(command::Op::SendTlsReport(r)) => {
                let report = TlsReport {
                    policy_domain: r.policy_domain,
                    json: r.report,
                    report_id: r.report_id,
                    submitter: r.submitter,
                    from: r.from,
                    start_s: r.start_s,
                    end_s: r.end_s,
                };
                queue.send_tls_report(report).await.map(|sent| {
                    result.found = sent.is_some();
                    result.deliveries = sent
                        .unwrap_or_default()
                        .into_iter()
                        .map(|s| pb::ReportDelivery {
                            rua: s.rua,
                            ok: s.ok,
                            detail: s.detail,
                        })
                        .collect();
                })
            }
            None => Err("unknown command (a newer control plane?)".into()),
        };
        if let Err(e) = outcome {
            result.error = e;
        }
        result
    }

    /// Stops new SMTP sessions and makes the whole queue due; the messages still queued.
    /// From the control plane's drain command or the worker's own `POST /drain`.
    pub async fn drain(&self) -> Result<usize, String> {
        if !*self.draining.borrow() {
            tracing::warn!("draining: no new SMTP sessions, the whole queue due now");
        }
        self.draining.send_replace(true);
        let queue = self.queue.clone();
        blocking(move || queue.flush(None)).await?;
        Ok(self.queue.queued())
    }
}

/// Runs spool reads on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}
