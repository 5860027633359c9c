//! The policy a worker enforces: compiled snapshots behind a `watch` of `Arc`, so a session pins
//! the version it started with while new sessions get a new one at once. A snapshot is
//! compiled, saved as last-known-good, then swapped in; one that fails any step is refused and
//! the old one stays.

use std::path::PathBuf;
use std::sync::Arc;

use postern_policy::{CompiledPolicy, Policy, Settings};
use postern_proto::pb;
use tokio::sync::watch;

use crate::lkg;
use crate::metrics::Metrics;

pub type Current = Option<Arc<CompiledPolicy>>;

pub struct PolicyStore {
    dir: PathBuf,
    current: watch::Sender<Current>,
    pub metrics: Arc<Metrics>,
}

/// Why a snapshot was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the snapshot has no policy")]
    NoPolicy,
    #[error(transparent)]
    Wire(#[from] postern_proto::WireError),
    #[error("settings: {0}")]
    Settings(String),
    #[error("the policy does not compile: {0}")]
    Compile(#[from] postern_policy::ValidationErrors),
    #[error("cannot save it as last-known-good: {0}")]
    Save(#[from] std::io::Error),
}

/// Converts and compiles a snapshot, without side effects.
pub fn compile(snapshot: &pb::Snapshot) -> Result<CompiledPolicy, ApplyError> {
    let policy = Policy::try_from(snapshot.policy.clone().ok_or(ApplyError::NoPolicy)?)?;
    let settings: Settings = serde_json::from_str(&snapshot.settings_json)
        .map_err(|e| ApplyError::Settings(e.to_string()))?;
    Ok(CompiledPolicy::compile(snapshot.version, policy, settings)?)
}

impl PolicyStore {
    /// Opens the policy directory and loads the last-known-good snapshot, if one is there and
    /// still compiles.
    pub fn open(dir: PathBuf, metrics: Arc<Metrics>) -> std::io::Result<PolicyStore> {
        std::fs::create_dir_all(&dir)?;
        let current = match lkg::load(&dir) {
            Ok(Some(snapshot)) => match compile(&snapshot) {
                Ok(compiled) => {
                    tracing::info!(
                        version = compiled.version,
                        "enforcing the last-known-good policy"
                    );
                    Some(Arc::new(compiled))
                }
                Err(e) => {
                    tracing::error!(error = %e, "the last-known-good policy no longer compiles; waiting for the control plane");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the last-known-good policy; waiting for the control plane");
                None
            }
        };
        Ok(PolicyStore {
            dir,
            current: watch::Sender::new(current),
            metrics,
        })
    }

    /// The version enforced now (0: none).
    pub fn version(&self) -> u64 {
        self.current.borrow().as_ref().map_or(0, |p| p.version)
    }

    pub fn current(&self) -> Current {
        self.current.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Current> {
        self.current.subscribe()
    }

    /// Compiles, saves and swaps in `snapshot`; on error the current policy stays.
    pub async fn apply(&self, snapshot: pb::Snapshot) -> Result<u64, ApplyError> {
        let dir = self.dir.clone();
        let result = tokio::task::spawn_blocking(move || {
            let compiled = compile(&snapshot)?;
            lkg::save(&dir, &snapshot)?;
            Ok::<_, ApplyError>(compiled)
        })
        .await
        .unwrap_or_else(|e| Err(ApplyError::Save(std::io::Error::other(e.to_string()))));
        match result {
            Ok(compiled) => {
                let version = compiled.version;
                self.current.send_replace(Some(Arc::new(compiled)));
                self.metrics.snapshots_applied.inc();
                Ok(version)
            }
            Err(e) => {
                self.metrics.snapshots_rejected.inc();
                Err(e)
            }
        }
    }
}
