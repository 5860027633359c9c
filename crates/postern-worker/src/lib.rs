//! Postern's worker (data plane). It has no configuration authority: everything it enforces
//! comes from the control plane over the policy stream; locally it has its identity, listeners,
//! TLS files and hostname. Under `--spool-dir` it keeps its last accepted policy (and, with later
//! issues, the mail it acknowledged and its event outbox), and it locks that directory.

#![forbid(unsafe_code)]

pub mod commands;
pub mod http;
pub mod inbound;
pub mod lkg;
pub mod lock;
pub mod metrics;
pub mod outbound;
pub mod outbox;
pub mod policy;
pub mod spool;
pub mod sts;
pub mod sync;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use policy::PolicyStore;
pub use sync::{Backoff, ControlConnection, PemFiles};

/// Everything a worker needs besides its listeners.
pub struct WorkerConfig {
    pub worker_id: String,
    pub control: ControlConnection,
    pub spool_dir: PathBuf,
    pub hostname: String,
    /// Addresses that reach this worker through NAT or a load balancer (an MX host there loops).
    pub proxy_interfaces: Vec<std::net::IpAddr>,
    /// Networks of the load balancers whose connections start with a PROXY protocol header
    /// (v1 or v2); empty: the listener takes none.
    pub proxy_protocol_from: Vec<ipnet::IpNet>,
    /// The SMTP server certificate chain and key files (PEM) for STARTTLS, re-read when they
    /// change.
    pub smtp_cert: PathBuf,
    pub smtp_key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("--spool-dir {path}: {detail}")]
    Spool { path: String, detail: String },
    #[error("--tls-cert/--tls-key: {0}")]
    Tls(String),
}

/// A worker that holds its spool lock and its last-known-good policy.
pub struct Worker {
    config: WorkerConfig,
    policy: Arc<PolicyStore>,
    inbound: Arc<inbound::Inbound>,
    spool: spool::Spool,
    new_ids: tokio::sync::mpsc::UnboundedReceiver<String>,
    outbox: Arc<outbox::Outbox>,
    _lock: lock::SpoolLock,
}

impl Worker {
    /// Locks the spool directory, recovers the spool and loads the last-known-good policy, if
    /// any. Must run inside a tokio runtime.
    pub fn start(config: WorkerConfig) -> Result<Worker, StartError> {
        let spool = |detail: String| StartError::Spool {
            path: config.spool_dir.display().to_string(),
            detail,
        };
        let lock = lock::SpoolLock::acquire(&config.spool_dir).map_err(spool)?;
        let metrics = Arc::new(metrics::Metrics::default());
        let policy = Arc::new(
            PolicyStore::open(config.spool_dir.join("policy"), metrics.clone())
                .map_err(|e| spool(e.to_string()))?,
        );
        let outbox = outbox::Outbox::open(&config.spool_dir.join("outbox"), metrics)
            .map_err(|e| spool(format!("event outbox: {e}")))?;
        let tls = inbound::TlsConfigs::new(&config.smtp_cert, &config.smtp_key)
            .map_err(StartError::Tls)?;
        let (spool_store, queued) =
            spool::Spool::open(&config.spool_dir).map_err(|e| spool(e.to_string()))?;
        if !queued.is_empty() {
            tracing::info!(
                messages = queued.len(),
                "recovered queued messages from the spool"
            );
        }
        let (queued, new_ids) = tokio::sync::mpsc::unbounded_channel();
        let inbound = inbound::Inbound::new(
            policy.clone(),
            spool_store.clone(),
            config.hostname.clone(),
            tls,
            queued,
            outbox.clone(),
            config.proxy_protocol_from.clone(),
        );
        Ok(Worker {
            config,
            policy,
            outbox,
            inbound,
            spool: spool_store,
            new_ids,
            _lock: lock,
        })
    }

    pub fn policy(&self) -> Arc<PolicyStore> {
        self.policy.clone()
    }

    /// Runs the policy sync, the SMTP listener and (if given) the HTTP listener until
    /// `shutdown` turns true.
    pub async fn run(
        self,
        smtp: TcpListener,
        http: Option<TcpListener>,
        mut shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        let smtp_addr = smtp.local_addr()?.to_string();
        let queue = outbound::queue::Queue::new(
            self.spool.clone(),
            self.policy.clone(),
            self.config.hostname.clone(),
            outbound::own::OwnAddresses::new(
                smtp.local_addr()?,
                self.config.proxy_interfaces.clone(),
            ),
            self.inbound.queued.clone(),
            self.outbox.clone(),
        );
        let writer = tokio::spawn(self.outbox.clone().run_writer());
        let upload = tokio::spawn(outbox::upload::run(
            self.config.control.clone(),
            self.config.worker_id.clone(),
            self.outbox.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(follow_outbox_limit(
            self.policy.clone(),
            self.outbox.clone(),
        ));
        let (draining, drained) = watch::channel(false);
        let commands = Arc::new(commands::Commands {
            queue: queue.clone(),
            draining,
        });
        let sync = tokio::spawn(sync::run(
            self.config.control.clone(),
            self.config.worker_id.clone(),
            smtp_addr,
            self.policy.clone(),
            Some(commands.clone()),
            shutdown.clone(),
        ));
        if let Some(http) = http {
            let router = http::router(
                self.policy.clone(),
                self.config.spool_dir.clone(),
                commands.clone(),
                self.outbox.clone(),
            );
            let mut stop = shutdown.clone();
            tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                let limits = postern_http::Limits::default();
                let _ = postern_http::serve(http, router, None, limits, stopped).await;
            });
        }
        let queue_task = tokio::spawn(queue.run(self.new_ids, shutdown.clone()));
        let smtp_task = tokio::spawn(inbound::serve(
            smtp,
            self.inbound.clone(),
            drained,
            shutdown.clone(),
        ));
        let _ = shutdown.wait_for(|s| *s).await;
        let _ = smtp_task.await;
        let _ = queue_task.await;
        sync.abort();
        // The last events of the sessions and rounds just ended go to disk before exiting.
        self.outbox.settle(std::time::Duration::from_secs(5)).await;
        writer.abort();
        upload.abort();
        Ok(())
    }
}

/// Applies `tracking.outbox_max_bytes` from each policy version.
async fn follow_outbox_limit(policy: Arc<PolicyStore>, outbox: Arc<outbox::Outbox>) {
    let mut versions = policy.subscribe();
    loop {
        if let Some(p) = versions.borrow_and_update().as_ref() {
            outbox.set_max_bytes(p.settings.tracking.outbox_max_bytes);
        }
        if versions.changed().await.is_err() {
            return;
        }
    }
}
