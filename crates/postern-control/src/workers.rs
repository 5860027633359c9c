//! The workers the control plane knows of, for `GET /v1/workers`, and the way to send each
//! connected one a command. Kept in memory: after a control plane restart the list fills again
//! as workers reconnect.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::commands::{CommandOutcome, QueueCommand};
use crate::control::now_rfc3339;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct WorkerInfo {
    pub id: String,
    /// The address the worker's gRPC connection comes from.
    pub remote_addr: String,
    /// The worker's SMTP listener, as it reports it.
    pub smtp_addr: String,
    pub connected: bool,
    /// RFC 3339: the last message from the worker, or when it disconnected.
    pub last_seen: String,
    /// The policy version the worker enforces (0: none).
    pub applied_version: u64,
    /// The error of the worker's last NACK, cleared by its next ACK.
    pub last_nack: Option<String>,
    /// Drained: it accepts no SMTP sessions and delivers what it has queued.
    pub draining: bool,
}

/// A worker's answer: what it did, or why it could not.
pub type Answer = Result<CommandOutcome, String>;

/// A command for one worker's stream, and where its answer goes.
pub type CommandTx = mpsc::Sender<(QueueCommand, oneshot::Sender<Answer>)>;

/// How long a worker has to answer a command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("worker '{0}' is unknown")]
    Unknown(String),
    #[error("worker '{0}' is not connected")]
    NotConnected(String),
    #[error("worker '{0}' did not answer in time")]
    Timeout(String),
    #[error("worker '{0}' disconnected before answering")]
    Disconnected(String),
    #[error("worker '{0}': {1}")]
    Failed(String, String),
}

#[derive(Debug)]
struct Entry {
    info: WorkerInfo,
    /// The current connection's token.
    token: u64,
    commands: Option<CommandTx>,
}

#[derive(Debug)]
pub struct Workers {
    entries: Mutex<BTreeMap<String, Entry>>,
    connections: std::sync::atomic::AtomicU64,
    /// Counts changes, so tests and benchmarks can wait for them instead of polling.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Default for Workers {
    fn default() -> Self {
        Workers {
            entries: Mutex::default(),
            connections: Default::default(),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Workers {
    /// Records a new connection (`info` as its Hello says; the last NACK is kept) and
    /// returns its token; a newer connection of the same worker supersedes the older one, whose
    /// later updates are then ignored.
    pub fn connected(&self, mut info: WorkerInfo, commands: CommandTx) -> u64 {
        let id = info.id.clone();
        let token = self
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let mut entries = self.entries.lock().expect("workers lock");
        info.last_nack = entries.get(&id).and_then(|e| e.info.last_nack.clone());
        info.connected = true;
        info.last_seen = now_rfc3339();
        entries.insert(
            id,
            Entry {
                info,
                token,
                commands: Some(commands),
            },
        );
        self.changes.send_modify(|c| *c += 1);
        token
    }

    /// Updates the worker if `token` is still its current connection.
    pub fn update(&self, id: &str, token: u64, f: impl FnOnce(&mut WorkerInfo)) {
        let mut entries = self.entries.lock().expect("workers lock");
        if let Some(entry) = entries.get_mut(id)
            && entry.token == token
        {
            entry.info.last_seen = now_rfc3339();
            f(&mut entry.info);
            self.changes.send_modify(|c| *c += 1);
        }
    }

    /// Follows changes to the registry.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn disconnected(&self, id: &str, token: u64) {
        let mut entries = self.entries.lock().expect("workers lock");
        if let Some(entry) = entries.get_mut(id)
            && entry.token == token
        {
            entry.commands = None;
        }
        drop(entries);
        self.update(id, token, |w| w.connected = false);
    }

    /// Records that worker `id` acknowledged a drain.
    pub fn drained(&self, id: &str) {
        let mut entries = self.entries.lock().expect("workers lock");
        if let Some(entry) = entries.get_mut(id) {
            entry.info.draining = true;
            drop(entries);
            self.changes.send_modify(|c| *c += 1);
        }
    }

    /// The ids of the connected workers.
    pub fn connected_ids(&self) -> Vec<String> {
        let entries = self.entries.lock().expect("workers lock");
        entries
            .values()
            .filter(|e| e.commands.is_some())
            .map(|e| e.info.id.clone())
            .collect()
    }

    /// Sends `op` to worker `id` and waits for its answer. A failure it reports is an `Err`.
    pub async fn command(
        &self,
        id: &str,
        op: QueueCommand,
    ) -> Result<CommandOutcome, CommandError> {
        self.command_within(id, op, COMMAND_TIMEOUT).await
    }

    /// `command` with its own time limit (a command that does network I/O on the worker).
    pub async fn command_within(
        &self,
        id: &str,
        op: QueueCommand,
        limit: Duration,
    ) -> Result<CommandOutcome, CommandError> {
        let deadline = tokio::time::Instant::now() + limit;
        let pending = self.send(id, op, deadline).await?;
        Self::answer(id, pending, deadline).await
    }

    /// Sends `op` to every connected worker at once; each worker's result.
    pub async fn broadcast(
        &self,
        op: QueueCommand,
    ) -> Vec<(String, Result<CommandOutcome, CommandError>)> {
        let deadline = tokio::time::Instant::now() + COMMAND_TIMEOUT;
        let mut pending = Vec::new();
        for id in self.connected_ids() {
            let sent = self.send(&id, op.clone(), deadline).await;
            pending.push((id, sent));
        }
        let mut results = Vec::new();
        for (id, sent) in pending {
            let result = match sent {
                Ok(rx) => Self::answer(&id, rx, deadline).await,
                Err(e) => Err(e),
            };
            results.push((id, result));
        }
        results
    }

    async fn send(
        &self,
        id: &str,
        op: QueueCommand,
        deadline: tokio::time::Instant,
    ) -> Result<oneshot::Receiver<Answer>, CommandError> {
        let tx = {
            let entries = self.entries.lock().expect("workers lock");
            match entries.get(id) {
                None => return Err(CommandError::Unknown(id.into())),
                Some(Entry { commands: None, .. }) => {
                    return Err(CommandError::NotConnected(id.into()));
                }
                Some(Entry {
                    commands: Some(tx), ..
                }) => tx.clone(),
            }
        };
        let (reply, result) = oneshot::channel();
        match tokio::time::timeout_at(deadline, tx.send((op, reply))).await {
            Ok(Ok(())) => Ok(result),
            Ok(Err(_)) => Err(CommandError::Disconnected(id.into())),
            Err(_) => Err(CommandError::Timeout(id.into())),
        }
    }

    async fn answer(
        id: &str,
        pending: oneshot::Receiver<Answer>,
        deadline: tokio::time::Instant,
    ) -> Result<CommandOutcome, CommandError> {
        tokio::time::timeout_at(deadline, pending)
            .await
            .map_err(|_| CommandError::Timeout(id.into()))?
            .map_err(|_| CommandError::Disconnected(id.into()))?
            .map_err(|e| CommandError::Failed(id.into(), e))
    }

    pub fn list(&self) -> Vec<WorkerInfo> {
        let entries = self.entries.lock().expect("workers lock");
        entries.values().map(|e| e.info.clone()).collect()
    }
}
