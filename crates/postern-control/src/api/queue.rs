//! `/v1/queue` and `/v1/workers/{id}/drain` (docs/src/policy.md#queue-retries-and-bounces,
//! interfaces.md): the queues live on the workers,
//! so each request is a command on the workers' policy streams, answered by each of them.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use postern_policy::normalize_lookup_domain;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiJson, ApiQuery};
use super::{ApiError, Problem};
use crate::auth::Actor;
use crate::commands::{self, QueueCommand};
use crate::control::Control;
use crate::workers::CommandError;

#[derive(Debug, Serialize, ToSchema)]
pub struct QueuedRecipient {
    pub address: String,
    /// `pending` (not tried yet), `deferred`, `delivered` or `bounced`.
    pub status: String,
    pub attempts: u32,
    /// RFC 3339, when deferred.
    pub next_attempt: Option<String>,
    /// The last reply or reason.
    pub last_reply: Option<String>,
    /// The last attempt's next hop, `host[ip]`.
    pub host: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueuedMessage {
    /// The queue id (as in `250 2.0.0 Ok: queued as <ID>`).
    pub id: String,
    /// The worker whose spool holds it.
    pub worker: String,
    pub sender: String,
    /// RFC 3339.
    pub received_at: String,
    /// Octets.
    pub size: u64,
    /// A delivery round for it is running now.
    pub in_delivery: bool,
    pub recipients: Vec<QueuedRecipient>,
}

/// A worker that did not answer (the list or count is then partial).
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerProblem {
    pub worker: String,
    pub detail: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueList {
    /// In queue id order (oldest first).
    pub items: Vec<QueuedMessage>,
    pub next_cursor: Option<String>,
    /// Connected workers that did not answer.
    pub unreachable: Vec<WorkerProblem>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QueueQuery {
    /// Only messages with a recipient not yet final in this domain.
    pub destination: Option<String>,
    /// Only messages with a recipient not yet final whose last reply contains this (any case),
    /// e.g. `4.7.5` or `not trusted`.
    pub reason: Option<String>,
    /// Only this worker's queue.
    pub worker: Option<String>,
    /// Page size (default 100, at most 1000).
    pub limit: Option<usize>,
    /// `next_cursor` from the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct QueuePath {
    /// The queue id.
    pub id: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Bounce the recipients not yet final to the sender (a DSN) before deleting.
    #[serde(default)]
    pub dsn: bool,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlushRequest {
    /// Only messages with a recipient not yet final in this domain; absent: the whole queue.
    pub destination: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerCount {
    pub worker: String,
    pub messages: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FlushResult {
    /// Messages made due now, over all workers.
    pub flushed: u32,
    pub workers: Vec<WorkerCount>,
    pub unreachable: Vec<WorkerProblem>,
}

/// Which worker acted on a message.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueAction {
    pub id: String,
    pub worker: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DrainResult {
    pub id: String,
    pub draining: bool,
    /// Messages still queued on the worker when it acknowledged.
    pub queued: u32,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct WorkerPath {
    /// The worker id.
    pub id: String,
}

fn queue_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::not_found(format!("no queued message '{id}'")));
    }
    Ok(())
}

fn destination(d: Option<String>, pointer: &str) -> Result<String, ApiError> {
    match d {
        None => Ok(String::new()),
        Some(d) => normalize_lookup_domain(&d)
            .ok_or_else(|| ApiError::bad_request(pointer, format!("'{d}' is not a domain"))),
    }
}

fn unreachable(id: String, e: CommandError) -> WorkerProblem {
    WorkerProblem {
        worker: id,
        detail: e.to_string(),
    }
}

fn message(worker: &str, m: commands::QueuedMessage) -> QueuedMessage {
    QueuedMessage {
        id: m.queue_id,
        worker: worker.to_string(),
        sender: m.sender,
        received_at: m.received_at,
        size: m.size,
        in_delivery: m.in_delivery,
        recipients: m
            .recipients
            .into_iter()
            .map(|r| QueuedRecipient {
                address: r.address,
                status: r.status,
                attempts: r.attempts,
                next_attempt: r.next_attempt,
                last_reply: r.last_reply,
                host: r.host,
            })
            .collect(),
    }
}

#[utoipa::path(get, path = "/v1/queue", tag = "queue", operation_id = "list_queue",
    params(QueueQuery), security(("bearer" = [])),
    responses((status = 200, body = QueueList, description = "Queued and deferred mail of every connected worker"),
        (status = 400, body = Problem, description = "Bad filter"),
        (status = 404, body = Problem, description = "No such worker (the `worker` filter)")))]
pub async fn list_queue(
    State(c): State<Arc<Control>>,
    _a: Actor,
    ApiQuery(q): ApiQuery<QueueQuery>,
) -> Result<Json<QueueList>, ApiError> {
    let limit = match q.limit {
        None => 100,
        Some(l) if (1..=1000).contains(&l) => l,
        Some(_) => {
            return Err(ApiError::bad_request(
                "limit",
                "limit must be between 1 and 1000",
            ));
        }
    };
    let op = QueueCommand::List {
        destination: destination(q.destination, "destination")?,
        reason: q.reason.unwrap_or_default(),
        after: q.cursor.unwrap_or_default(),
        limit: limit as u32,
    };
    let results = match &q.worker {
        Some(w) => vec![(w.clone(), c.workers.command(w, op).await)],
        None => c.workers.broadcast(op).await,
    };
    let (mut items, mut problems, mut more) = (Vec::new(), Vec::new(), false);
    for (worker, result) in results {
        match result {
            Ok(r) => {
                // A worker that filled the page may have more after it.
                more |= r.messages.len() >= limit;
                items.extend(r.messages.into_iter().map(|m| message(&worker, m)));
            }
            Err(CommandError::Unknown(w)) => {
                return Err(ApiError::not_found(format!("no worker '{w}'")));
            }
            Err(e) => problems.push(unreachable(worker, e)),
        }
    }
    items.sort_by(|a, b| a.id.cmp(&b.id));
    more |= items.len() > limit;
    items.truncate(limit);
    let next_cursor = if more {
        items.last().map(|m| m.id.clone())
    } else {
        None
    };
    Ok(Json(QueueList {
        items,
        next_cursor,
        unreachable: problems,
    }))
}

/// Sends a command about one message to every worker; the one that holds it.
async fn on_message(c: &Control, id: &str, op: QueueCommand) -> Result<QueueAction, ApiError> {
    queue_id(id)?;
    let mut problems = Vec::new();
    for (worker, result) in c.workers.broadcast(op).await {
        match result {
            Ok(r) if r.found => {
                return Ok(QueueAction {
                    id: id.to_string(),
                    worker,
                });
            }
            Ok(_) => {}
            Err(e) => problems.push(e.to_string()),
        }
    }
    if problems.is_empty() {
        Err(ApiError::not_found(format!("no queued message '{id}'")))
    } else {
        Err(ApiError::unavailable(format!(
            "'{id}' is not queued on the workers that answered; {}",
            problems.join("; ")
        )))
    }
}

#[utoipa::path(post, path = "/v1/queue/{id}/retry", tag = "queue", operation_id = "retry_queued",
    params(QueuePath), security(("bearer" = [])),
    responses((status = 200, body = QueueAction, description = "Its deferred recipients are due now"),
        (status = 403, body = Problem, description = "A viewer token cannot do this"),
        (status = 404, body = Problem, description = "No worker holds it"),
        (status = 503, body = Problem, description = "Not found, and some worker did not answer")))]
pub async fn retry(
    State(c): State<Arc<Control>>,
    a: Actor,
    Path(p): Path<QueuePath>,
) -> Result<Json<QueueAction>, ApiError> {
    a.require_admin()?;
    let op = QueueCommand::Retry {
        queue_id: p.id.clone(),
    };
    let done = on_message(&c, &p.id, op).await?;
    tracing::info!(actor = %a.id, id = %done.id, worker = %done.worker, "queue: retry");
    c.audit(
        &a,
        format!("POST /v1/queue/{}/retry", done.id),
        format!("retry {} on worker {}", done.id, done.worker),
    )
    .await?;
    Ok(Json(done))
}

#[utoipa::path(delete, path = "/v1/queue/{id}", tag = "queue", operation_id = "delete_queued",
    params(QueuePath, DeleteQuery), security(("bearer" = [])),
    responses((status = 204, description = "Deleted (after its delivery round, if one is running)"),
        (status = 403, body = Problem, description = "A viewer token cannot do this"),
        (status = 404, body = Problem, description = "No worker holds it"),
        (status = 503, body = Problem, description = "Not found, and some worker did not answer")))]
pub async fn delete(
    State(c): State<Arc<Control>>,
    a: Actor,
    Path(p): Path<QueuePath>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    a.require_admin()?;
    let op = QueueCommand::Delete {
        queue_id: p.id.clone(),
        dsn: q.dsn,
    };
    let done = on_message(&c, &p.id, op).await?;
    tracing::info!(actor = %a.id, id = %done.id, worker = %done.worker, dsn = q.dsn, "queue: delete");
    let dsn = if q.dsn {
        " with a DSN"
    } else {
        " without a DSN"
    };
    c.audit(
        &a,
        format!("DELETE /v1/queue/{}", done.id),
        format!("delete {}{dsn} on worker {}", done.id, done.worker),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/queue/flush", tag = "queue", operation_id = "flush_queue",
    request_body = FlushRequest, security(("bearer" = [])),
    responses((status = 200, body = FlushResult, description = "Messages made due now"),
        (status = 400, body = Problem, description = "Not a domain"),
        (status = 403, body = Problem, description = "A viewer token cannot do this")))]
pub async fn flush(
    State(c): State<Arc<Control>>,
    a: Actor,
    body: Option<ApiJson<FlushRequest>>,
) -> Result<Json<FlushResult>, ApiError> {
    a.require_admin()?;
    let req = body.map(|ApiJson(r)| r).unwrap_or_default();
    let req_destination = destination(req.destination, "/destination")?;
    let op = QueueCommand::Flush {
        destination: req_destination.clone(),
    };
    let (mut workers, mut problems) = (Vec::new(), Vec::new());
    for (worker, result) in c.workers.broadcast(op).await {
        match result {
            Ok(r) => workers.push(WorkerCount {
                worker,
                messages: r.count,
            }),
            Err(e) => problems.push(unreachable(worker, e)),
        }
    }
    let flushed = workers.iter().map(|w| w.messages).sum();
    tracing::info!(actor = %a.id, flushed, "queue: flush");
    let scope = if req_destination.is_empty() {
        "the whole queue"
    } else {
        &req_destination
    };
    c.audit(
        &a,
        "POST /v1/queue/flush".into(),
        format!("flush {scope}: {flushed} message(s) made due"),
    )
    .await?;
    Ok(Json(FlushResult {
        flushed,
        workers,
        unreachable: problems,
    }))
}

#[utoipa::path(post, path = "/v1/workers/{id}/drain", tag = "workers", operation_id = "drain_worker",
    params(WorkerPath), security(("bearer" = [])),
    responses((status = 200, body = DrainResult, description = "The worker takes no new SMTP sessions and delivers its queue now"),
        (status = 403, body = Problem, description = "A viewer token cannot do this"),
        (status = 404, body = Problem, description = "No such worker"),
        (status = 409, body = Problem, description = "The worker is not connected"),
        (status = 503, body = Problem, description = "The worker did not answer")))]
pub async fn drain(
    State(c): State<Arc<Control>>,
    a: Actor,
    Path(p): Path<WorkerPath>,
) -> Result<Json<DrainResult>, ApiError> {
    a.require_admin()?;
    let result = c
        .workers
        .command(&p.id, QueueCommand::Drain)
        .await
        .map_err(|e| match e {
            CommandError::Unknown(_) => ApiError::not_found(e.to_string()),
            CommandError::NotConnected(_) => ApiError::conflict(e.to_string()),
            _ => ApiError::unavailable(e.to_string()),
        })?;
    c.workers.drained(&p.id);
    tracing::warn!(actor = %a.id, worker = %p.id, queued = result.count, "worker drained");
    c.audit(
        &a,
        format!("POST /v1/workers/{}/drain", p.id),
        format!("drain worker {} ({} message(s) queued)", p.id, result.count),
    )
    .await?;
    Ok(Json(DrainResult {
        id: p.id,
        draining: true,
        queued: result.count,
    }))
}
