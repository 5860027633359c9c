//! The policy distribution service (proto/postern/v1/policy.proto): each worker's stream gets
//! the newest durable snapshot whenever it differs from what the worker enforces, with a fresh
//! nonce; ACKs and NACKs with a stale nonce are ignored. Operators' commands go down the same
//! stream, each with an id its result repeats.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use postern_proto::pb::policy_distribution_server::{PolicyDistribution, PolicyDistributionServer};
use postern_proto::pb::tracking_server::{Tracking, TrackingServer};
use postern_proto::pb::{self, command, control_message, worker_message};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_rustls::rustls::server::ResolvesServerCert;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::CompressionEncoding;
use tonic::transport::Server;
use tonic::{Request, Response, Status, Streaming};

use crate::commands::{
    CommandOutcome, QueueCommand, QueuedMessage, QueuedRecipient, ReportDelivery,
};
use crate::control::{Control, Snapshot};
use crate::workers::{Answer, WorkerInfo};

/// Snapshots of 100,000 + 100,000 rules run to tens of MB before compression.
pub const MAX_MESSAGE: usize = 512 * 1024 * 1024;

/// HTTP/2 pings, so a partitioned worker is seen as gone within about this much twice.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// The gRPC server's TLS material.
pub struct GrpcTls {
    /// The server certificate: fixed (`from_pem`), or a `ReloadingCert` that follows its files.
    pub cert: Arc<dyn ResolvesServerCert>,
    /// The CA that signs worker client certificates (PEM).
    pub client_ca_pem: String,
}

impl GrpcTls {
    pub fn from_pem(cert_pem: &str, key_pem: &str, client_ca_pem: &str) -> Result<GrpcTls, String> {
        let key = postern_tls::reload::certified_key(cert_pem, key_pem)?;
        Ok(GrpcTls {
            cert: Arc::new(tokio_rustls::rustls::sign::SingleCertAndKey::from(key)),
            client_ca_pem: client_ca_pem.to_string(),
        })
    }
}

/// Serves the gRPC services on `listener` with mutual TLS until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    control: Arc<Control>,
    tls: GrpcTls,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), GrpcError> {
    let config =
        postern_tls::mtls_server_config(tls.cert, &tls.client_ca_pem).map_err(GrpcError::Tls)?;
    let incoming = crate::incoming::tls_incoming(listener, Arc::new(config));
    // Open worker streams never end by themselves; they must end for the server to stop.
    let (stop, stopping) = watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    let service = PolicyDistributionServer::new(PolicyService {
        control: control.clone(),
        stopping: stopping.clone(),
        wire: Arc::default(),
    })
    .max_decoding_message_size(MAX_MESSAGE)
    .max_encoding_message_size(MAX_MESSAGE)
    .send_compressed(CompressionEncoding::Gzip)
    .accept_compressed(CompressionEncoding::Gzip);
    let tracking = TrackingServer::new(TrackingService {
        control: control.clone(),
        stopping: stopping.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE)
    .send_compressed(CompressionEncoding::Gzip)
    .accept_compressed(CompressionEncoding::Gzip);
    Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE))
        .http2_keepalive_timeout(Some(KEEPALIVE))
        .add_service(service)
        .add_service(tracking)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(GrpcError::Transport)
}

#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("gRPC TLS: {0}")]
    Tls(String),
    #[error("gRPC: {0}")]
    Transport(#[from] tonic::transport::Error),
}

#[derive(Clone)]
pub struct PolicyService {
    control: Arc<Control>,
    stopping: watch::Receiver<bool>,
    wire: Arc<WireCache>,
}

/// The newest snapshot in its wire form, converted once per version for every stream.
#[derive(Default)]
struct WireCache(tokio::sync::Mutex<Option<Arc<WireSnapshot>>>);

struct WireSnapshot {
    version: u64,
    policy: pb::Policy,
    settings_json: String,
}

impl WireCache {
    async fn of(&self, snapshot: Arc<Snapshot>) -> Option<Arc<WireSnapshot>> {
        let mut cached = self.0.lock().await;
        if let Some(w) = cached.as_ref().filter(|w| w.version == snapshot.version) {
            return Some(w.clone());
        }
        // Off the async threads: a large policy takes a while to convert.
        let wire = tokio::task::spawn_blocking(move || WireSnapshot {
            version: snapshot.version,
            policy: pb::Policy::from(&snapshot.policy),
            settings_json: serde_json::to_string(&snapshot.settings).expect("settings serialise"),
        })
        .await
        .ok()?;
        let wire = Arc::new(wire);
        *cached = Some(wire.clone());
        Some(wire)
    }
}

/// A command as the worker receives it.
fn command_op(c: QueueCommand) -> command::Op {
    match c {
        QueueCommand::List {
            destination,
            reason,
            after,
            limit,
        } => command::Op::List(pb::ListQueue {
            destination,
            reason,
            after,
            limit,
        }),
        QueueCommand::Retry { queue_id } => command::Op::Retry(pb::RetryMessage { queue_id }),
        QueueCommand::Flush { destination } => command::Op::Flush(pb::FlushQueue { destination }),
        QueueCommand::Delete { queue_id, dsn } => {
            command::Op::Delete(pb::DeleteMessage { queue_id, dsn })
        }
        QueueCommand::Drain => command::Op::Drain(pb::Drain {}),
        QueueCommand::SendTlsReport(r) => command::Op::SendTlsReport(pb::SendTlsReport {
            policy_domain: r.policy_domain,
            report: r.json,
            report_id: r.report_id,
            submitter: r.submitter,
            from: r.from,
            start_s: r.start_s,
            end_s: r.end_s,
        }),
    }
}

/// A worker's result in the control plane's terms; empty strings are absent values.
fn answer(r: pb::CommandResult) -> Answer {
    if !r.error.is_empty() {
        return Err(r.error);
    }
    let some = |s: String| (!s.is_empty()).then_some(s);
    Ok(CommandOutcome {
        found: r.found,
        count: r.count,
        messages: r
            .messages
            .into_iter()
            .map(|m| QueuedMessage {
                queue_id: m.queue_id,
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
                        next_attempt: some(r.next_attempt),
                        last_reply: some(r.last_reply),
                        host: some(r.host),
                    })
                    .collect(),
            })
            .collect(),
        deliveries: r
            .deliveries
            .into_iter()
            .map(|d| ReportDelivery {
                rua: d.rua,
                ok: d.ok,
                detail: d.detail,
            })
            .collect(),
    })
}

type Outbound = Pin<Box<dyn Stream<Item = Result<pb::ControlMessage, Status>> + Send>>;

#[tonic::async_trait]
impl PolicyDistribution for PolicyService {
    type StreamStream = Outbound;

    async fn stream(
        &self,
        request: Request<Streaming<pb::WorkerMessage>>,
    ) -> Result<Response<Outbound>, Status> {
        let remote = request
            .remote_addr()
            .map_or_else(String::new, |a: SocketAddr| a.to_string());
        let cert = request
            .peer_certs()
            .and_then(|certs| certs.first().cloned())
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
            Some(pb::WorkerMessage {
                msg: Some(worker_message::Msg::Hello(h)),
            }) => h,
            _ => return Err(Status::invalid_argument("the first message must be Hello")),
        };
        if !postern_tls::names::certificate_has_name(&cert, &hello.worker_id) {
            tracing::warn!(worker = %hello.worker_id, %remote, "worker id is not a name in its certificate");
            return Err(Status::permission_denied(format!(
                "worker id '{}' is not a name in the client certificate",
                hello.worker_id
            )));
        }
        let (commands, command_rx) = mpsc::channel(16);
        let info = WorkerInfo {
            id: hello.worker_id.clone(),
            remote_addr: remote.clone(),
            smtp_addr: hello.smtp_addr.clone(),
            connected: true,
            last_seen: String::new(),
            applied_version: hello.version,
            last_nack: None,
            draining: hello.draining,
        };
        let token = self.control.workers.connected(info, commands);
        tracing::info!(worker = %hello.worker_id, %remote, version = hello.version, "worker connected");
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(session(self.clone(), hello, token, inbound, tx, command_rx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// One worker's stream: send the newest snapshot it lacks, record its ACKs and NACKs.
async fn session(
    service: PolicyService,
    hello: pb::Hello,
    token: u64,
    mut inbound: Streaming<pb::WorkerMessage>,
    tx: mpsc::Sender<Result<pb::ControlMessage, Status>>,
    mut commands: mpsc::Receiver<(QueueCommand, oneshot::Sender<Answer>)>,
) {
    let PolicyService {
        control,
        mut stopping,
        wire,
    } = service;
    let id = hello.worker_id;
    let mut versions = control.subscribe();
    let mut applied = hello.version;
    let connected = std::time::Instant::now();
    // (nonce, version, where its push latency starts) of the last snapshot sent; only a reply
    // with this nonce counts.
    let mut sent: Option<(String, u64, std::time::Instant)> = None;
    // Nothing new is sent while a snapshot awaits its answer, so a worker that falls behind
    // (slow to compile, say) gets only the newest version once it answers.
    let mut awaiting = false;
    // Commands sent and not yet answered, by id. Dropped with the session, so their senders
    // learn that the worker went away.
    let mut pending: HashMap<String, oneshot::Sender<Answer>> = HashMap::new();
    let mut outgoing = None;
    loop {
        versions.borrow_and_update();
        if !awaiting
            && let Some(snapshot) = control.snapshot().await
            && snapshot.version != applied
            && sent.as_ref().is_none_or(|(_, v, _)| *v != snapshot.version)
            && let Some(snapshot) = wire.of(snapshot).await
        {
            let nonce = control.new_id();
            let message = pb::ControlMessage {
                msg: Some(control_message::Msg::Snapshot(pb::Snapshot {
                    version: snapshot.version,
                    nonce: nonce.clone(),
                    policy: Some(snapshot.policy.clone()),
                    settings_json: snapshot.settings_json.clone(),
                })),
            };
            if tx.send(Ok(message)).await.is_err() {
                break;
            }
            let started = control.metrics.push_started(snapshot.version, connected);
            sent = Some((nonce, snapshot.version, started));
            awaiting = true;
        }
        tokio::select! {
            _ = stopping.wait_for(|s| *s) => break,
            changed = versions.changed() => if changed.is_err() { break },
            Some(command) = commands.recv() => outgoing = Some(command),
            message = inbound.message() => match message {
                Ok(Some(pb::WorkerMessage { msg: Some(worker_message::Msg::Result(result)) })) => {
                    control.workers.update(&id, token, |_| {});
                    if let Some(reply) = pending.remove(&result.id) {
                        let _ = reply.send(answer(result));
                    }
                }
                Ok(Some(pb::WorkerMessage { msg: Some(msg) })) => {
                    if handle_reply(&control, &id, token, &sent, &mut applied, msg) {
                        awaiting = false;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(worker = %id, error = %e, "worker stream failed");
                    break;
                }
            },
        }
        // Sent here, not in the select: its `wait_for` guard must not live across an await.
        if let Some((op, reply)) = outgoing.take() {
            let command_id = control.new_id();
            let message = pb::ControlMessage {
                msg: Some(control_message::Msg::Command(pb::Command {
                    id: command_id.clone(),
                    op: Some(command_op(op)),
                })),
            };
            if tx.send(Ok(message)).await.is_err() {
                break;
            }
            pending.insert(command_id, reply);
        }
    }
    control.workers.disconnected(&id, token);
    tracing::info!(worker = %id, "worker disconnected");
}

/// Records an ACK or NACK; returns whether it answered the snapshot awaiting an answer.
fn handle_reply(
    control: &Control,
    id: &str,
    token: u64,
    sent: &Option<(String, u64, std::time::Instant)>,
    applied: &mut u64,
    msg: worker_message::Msg,
) -> bool {
    let current_nonce = sent.as_ref().map(|(n, _, _)| n.as_str());
    match msg {
        worker_message::Msg::Ack(ack) if Some(ack.nonce.as_str()) == current_nonce => {
            if let Some((_, _, started)) = sent {
                let took = started.elapsed().as_secs_f64();
                control.metrics.policy_push.observe(took);
            }
            *applied = ack.version;
            control.workers.update(id, token, |w| {
                w.applied_version = ack.version;
                w.last_nack = None;
            });
            true
        }
        worker_message::Msg::Nack(nack) if Some(nack.nonce.as_str()) == current_nonce => {
            tracing::warn!(worker = %id, version = nack.rejected_version, error = %nack.error, "worker refused a snapshot");
            *applied = nack.version;
            control.workers.update(id, token, |w| {
                w.applied_version = nack.version;
                w.last_nack = Some(format!("version {}: {}", nack.rejected_version, nack.error));
            });
            true
        }
        // A stale nonce, or a second Hello: nothing to record but the sign of life.
        _ => {
            control.workers.update(id, token, |_| {});
            false
        }
    }
}

/// The event upload service (proto/postern/v1/tracking.proto).
pub struct TrackingService {
    control: Arc<Control>,
    stopping: watch::Receiver<bool>,
}

type Acks = Pin<Box<dyn Stream<Item = Result<pb::UploadAck, Status>> + Send>>;

#[tonic::async_trait]
impl Tracking for TrackingService {
    type UploadStream = Acks;

    async fn upload(
        &self,
        request: Request<Streaming<pb::EventBatch>>,
    ) -> Result<Response<Acks>, Status> {
        let cert = request
            .peer_certs()
            .and_then(|certs| certs.first().cloned())
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let mut batches = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let (control, mut stopping) = (self.control.clone(), self.stopping.clone());
        tokio::spawn(async move {
            // Batches are stored one after another, in the order the worker sent them. The
            // stream ends on shutdown, or the server would wait for it for ever.
            loop {
                let message = tokio::select! {
                    m = batches.message() => m,
                    _ = stopping.wait_for(|s| *s) => return,
                };
                let batch = match message {
                    Ok(Some(b)) => b,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::info!(error = %e, "event upload stream failed");
                        return;
                    }
                };
                let reply = store_batch(&control, &cert, batch).await;
                // After an error nothing more is stored from this stream: a later batch would
                // move the worker's cursor past the one that failed, and it would be lost.
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn store_batch(
    control: &Control,
    cert: &tonic::transport::CertificateDer<'static>,
    batch: pb::EventBatch,
) -> Result<pb::UploadAck, Status> {
    if !postern_tls::names::certificate_has_name(cert, &batch.worker_id) {
        return Err(Status::permission_denied(format!(
            "worker id '{}' is not a name in the client certificate",
            batch.worker_id
        )));
    }
    let mut records = Vec::with_capacity(batch.events.len());
    for event in batch.events {
        let seq = event.seq;
        match postern_events::Record::try_from(event) {
            Ok(r) => records.push(Ok(r)),
            // One event this control plane cannot read must not stop the worker's outbox: its
            // sequence still counts as received.
            Err(e) => {
                tracing::warn!(worker = %batch.worker_id, seq, error = %e, "tracking event skipped");
                records.push(Err(seq));
            }
        }
    }
    match control
        .tracking
        .ingest(&batch.worker_id, &batch.epoch, records)
        .await
    {
        Ok(stored_seq) => Ok(pb::UploadAck {
            epoch: batch.epoch,
            stored_seq,
        }),
        Err(e) => {
            tracing::error!(error = %e, "tracking events could not be stored");
            Err(Status::unavailable(e.to_string()))
        }
    }
}
