//! The workers the control plane knows of, for `GET /v1/workers`. Kept in memory: after a
//! control plane restart the list fills again as workers reconnect.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

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
}

#[derive(Debug)]
pub struct Workers {
    entries: Mutex<BTreeMap<String, (WorkerInfo, u64)>>,
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
    /// Records a new connection and returns its token; a newer connection of the same worker
    /// supersedes the older one, whose later updates are then ignored.
    pub fn connected(&self, id: &str, remote_addr: String, smtp_addr: String, version: u64) -> u64 {
        let token = self
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let mut entries = self.entries.lock().expect("workers lock");
        let last_nack = entries.get(id).and_then(|(w, _)| w.last_nack.clone());
        let info = WorkerInfo {
            id: id.to_string(),
            remote_addr,
            smtp_addr,
            connected: true,
            last_seen: now_rfc3339(),
            applied_version: version,
            last_nack,
        };
        entries.insert(id.to_string(), (info, token));
        self.changes.send_modify(|c| *c += 1);
        token
    }

    /// Updates the worker if `token` is still its current connection.
    pub fn update(&self, id: &str, token: u64, f: impl FnOnce(&mut WorkerInfo)) {
        let mut entries = self.entries.lock().expect("workers lock");
        if let Some((info, current)) = entries.get_mut(id)
            && *current == token
        {
            info.last_seen = now_rfc3339();
            f(info);
            self.changes.send_modify(|c| *c += 1);
        }
    }

    /// Follows changes to the registry.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn disconnected(&self, id: &str, token: u64) {
        self.update(id, token, |w| w.connected = false);
    }

    pub fn list(&self) -> Vec<WorkerInfo> {
        let entries = self.entries.lock().expect("workers lock");
        entries.values().map(|(w, _)| w.clone()).collect()
    }
}
