//! The policy stream to the control plane (xDS-style): Hello with the version held, then for
//! each snapshot an ACK (now enforced) or a NACK (kept, and why). Reconnects with exponential
//! backoff and full jitter; HTTP/2 keepalives notice a partitioned control plane. Operators'
//! commands arrive on the same stream and are answered as each finishes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use postern_proto::pb::policy_distribution_client::PolicyDistributionClient;
use postern_proto::pb::{self, control_message, worker_message};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::commands::Commands;
use crate::policy::PolicyStore;

/// The same limit as the control plane's: snapshots of 100,000 + 100,000 rules.
pub const MAX_MESSAGE: usize = 512 * 1024 * 1024;

/// How to reach and authenticate to the control plane.
#[derive(Clone)]
pub struct ControlConnection {
    /// `https://host:port`.
    pub url: String,
    pub ca_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
    pub backoff: Backoff,
    /// Where the PEMs came from: read again before each connection, so a renewed client
    /// certificate (or CA) is used from the next one on, with no restart.
    pub files: Option<PemFiles>,
}

#[derive(Debug, Clone)]
pub struct PemFiles {
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// Reconnect delays: doubling from `initial` to `max`, each drawn uniformly below the current
/// ceiling (full jitter), so a fleet does not reconnect in step after an outage.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(10),
        }
    }
}

fn jittered(ceiling: Duration) -> Duration {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    let fraction = (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64;
    ceiling.mul_f64(fraction.max(0.1))
}

impl ControlConnection {
    /// This connection with its PEMs read again from their files. Files that do not read, or
    /// a certificate and key that do not match (a renewal half written), leave it as it was.
    pub fn reread(&mut self) {
        let Some(files) = &self.files else { return };
        let read =
            |p: &PathBuf| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
        let fresh = (|| {
            let (ca, cert, key) = (
                read(&files.ca)?,
                read(&files.client_cert)?,
                read(&files.client_key)?,
            );
            postern_tls::reload::certified_key(&cert, &key)?;
            if postern_tls::files::ders(&ca).is_empty() {
                return Err(format!("{}: no certificate", files.ca.display()));
            }
            Ok::<_, String>((ca, cert, key))
        })();
        match fresh {
            Ok((ca, cert, key)) => {
                if cert != self.client_cert_pem || key != self.client_key_pem || ca != self.ca_pem {
                    tracing::info!(cert = %files.client_cert.display(), "control plane client certificate reloaded");
                }
                (self.ca_pem, self.client_cert_pem, self.client_key_pem) = (ca, cert, key);
            }
            Err(e) => {
                tracing::warn!(error = %e, "client certificate files do not load; keeping the previous ones")
            }
        }
    }

    pub fn endpoint(&self) -> Result<Endpoint, tonic::transport::Error> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(
                &self.client_cert_pem,
                &self.client_key_pem,
            ));
        Ok(Endpoint::from_shared(self.url.clone())?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true))
    }
}

/// Keeps a policy stream open until `shutdown` turns true.
pub async fn run(
    control: ControlConnection,
    worker_id: String,
    smtp_addr: String,
    policy: Arc<PolicyStore>,
    commands: Option<Arc<Commands>>,
    shutdown: watch::Receiver<bool>,
) {
    if let Err(e) = control.endpoint() {
        tracing::error!(error = %e, url = %control.url, "invalid control plane address; the worker will not receive policy");
        return;
    }
    let backoff = control.backoff;
    let control = std::sync::Mutex::new(control);
    let stream = || async {
        let endpoint = fresh_endpoint(&control)?;
        let outcome = session(
            &endpoint,
            &worker_id,
            &smtp_addr,
            &policy,
            commands.as_ref(),
        )
        .await;
        policy.metrics.control_connected.set(0);
        outcome
    };
    reconnecting(backoff, "policy stream", shutdown, stream).await;
}

/// The endpoint for the next connection, from the certificate files as they are now.
pub(crate) fn fresh_endpoint(
    control: &std::sync::Mutex<ControlConnection>,
) -> Result<Endpoint, StreamError> {
    let mut control = control.lock().expect("connection lock");
    control.reread();
    Ok(control.endpoint()?)
}

pub(crate) type StreamError = Box<dyn std::error::Error + Send + Sync>;

/// Runs `stream` again and again until `shutdown` turns true, backing off between runs with
/// full jitter; a run that returned `Ok(true)` (it got somewhere) starts the backoff over.
pub(crate) async fn reconnecting<F, Fut>(
    backoff: Backoff,
    what: &str,
    mut shutdown: watch::Receiver<bool>,
    mut stream: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, StreamError>>,
{
    let mut ceiling = backoff.initial;
    loop {
        let outcome = tokio::select! {
            r = stream() => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match outcome {
            Ok(true) => ceiling = backoff.initial,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "{what} to the control plane failed"),
        }
        let delay = jittered(ceiling);
        ceiling = (ceiling * 2).min(backoff.max);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// One stream; returns whether any snapshot arrived.
async fn session(
    endpoint: &Endpoint,
    worker_id: &str,
    smtp_addr: &str,
    policy: &PolicyStore,
    commands: Option<&Arc<Commands>>,
) -> Result<bool, StreamError> {
    let channel = endpoint.connect().await?;
    let mut client = PolicyDistributionClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let (tx, rx) = mpsc::channel(4);
    let hello = pb::Hello {
        worker_id: worker_id.to_string(),
        smtp_addr: smtp_addr.to_string(),
        version: policy.version(),
        draining: commands.is_some_and(|c| *c.draining.borrow()),
    };
    tx.send(pb::WorkerMessage {
        msg: Some(worker_message::Msg::Hello(hello)),
    })
    .await?;
    let mut inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    policy.metrics.control_connected.set(1);
    policy.metrics.control_connects.inc();
    tracing::info!(url = ?endpoint.uri(), version = policy.version(), "policy stream open");
    let mut received = false;
    while let Some(message) = inbound.message().await? {
        let snapshot = match message.msg {
            Some(control_message::Msg::Snapshot(snapshot)) => snapshot,
            // Commands run beside snapshots; each result goes back when it is ready.
            Some(control_message::Msg::Command(command)) => {
                let (tx, commands) = (tx.clone(), commands.cloned());
                tokio::spawn(async move {
                    let result = match commands {
                        Some(commands) => commands.handle(command).await,
                        None => pb::CommandResult {
                            id: command.id,
                            error: "this worker has no queue".into(),
                            ..Default::default()
                        },
                    };
                    let _ = tx
                        .send(pb::WorkerMessage {
                            msg: Some(worker_message::Msg::Result(result)),
                        })
                        .await;
                });
                continue;
            }
            None => continue,
        };
        received = true;
        let (nonce, version) = (snapshot.nonce.clone(), snapshot.version);
        let reply = match policy.apply(snapshot).await {
            Ok(applied) => {
                tracing::info!(version = applied, "policy applied");
                worker_message::Msg::Ack(pb::Ack {
                    nonce,
                    version: applied,
                })
            }
            Err(e) => {
                tracing::error!(version, error = %e, "policy refused; keeping version {}", policy.version());
                worker_message::Msg::Nack(pb::Nack {
                    nonce,
                    version: policy.version(),
                    rejected_version: version,
                    error: e.to_string(),
                })
            }
        };
        tx.send(pb::WorkerMessage { msg: Some(reply) }).await?;
    }
    Ok(received)
}
