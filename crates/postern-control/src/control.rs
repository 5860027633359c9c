//! The control plane's service layer: the current state in memory, serialised writes that each
//! make one durable version (validate, one store transaction, apply, group flush), rollback by
//! replaying the change log, tokens, and the compiled policy for `evaluate`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use postern_policy::CompiledPolicy;
use tokio::sync::watch;

use crate::auth::{Actor, Role, hash_secret, new_secret};
use crate::change::{Change, Op};
use crate::error::ControlError;
use crate::flusher::Flusher;
use crate::metrics::{Gauges, Metrics};
use crate::state::State;
use crate::store::{AuditEntry, Commit, Store, StoreError, TokenRecord};
use crate::tracking::Tracking;
use crate::workers::Workers;

/// What a write decided to do.
pub struct Planned<R> {
    pub ops: Vec<Op>,
    /// One line for the version history and the audit log.
    pub summary: String,
    /// The field a cross-resource conflict (a `verify` rule without trusted CAs) is reported on.
    pub field: &'static str,
    pub out: R,
}

/// A durable version as workers receive it, built once per version (the gRPC side keeps its
/// wire form).
pub struct Snapshot {
    pub version: u64,
    pub policy: postern_policy::Policy,
    pub settings: postern_policy::Settings,
}

/// The snapshot workers may be sent now, and one built ahead of its flush.
#[derive(Default)]
struct Snapshots {
    sendable: Option<Arc<Snapshot>>,
    pending: Option<Arc<Snapshot>>,
}

pub struct Control {
    store: Arc<dyn Store>,
    state: RwLock<State>,
    /// Serialises writers; readers only take `state` briefly.
    writer: Arc<tokio::sync::Mutex<()>>,
    /// Set when a flush failed: see `durable_flush`.
    failed: std::sync::OnceLock<String>,
    flusher: Flusher,
    /// Token records by the SHA-256 of their secret.
    tokens: RwLock<HashMap<String, TokenRecord>>,
    compiled: tokio::sync::Mutex<Option<Arc<CompiledPolicy>>>,
    snapshots: tokio::sync::Mutex<Snapshots>,
    pub workers: Workers,
    ids: Mutex<ulid::Generator>,
    /// The newest durable version; the gRPC side pushes each one to workers.
    durable: watch::Sender<u64>,
    pub metrics: Arc<Metrics>,
    /// Messages and connections as the workers report them.
    pub tracking: Arc<Tracking>,
}

pub fn now_rfc3339() -> String {
    postern_time::rfc3339_ms(postern_time::now_ms())
}

impl Control {
    /// Loads the state from `store`. Must run inside a tokio runtime (the flusher is a task).
    pub fn open(store: Arc<dyn Store>, tracking: Arc<Tracking>) -> Result<Arc<Self>, StoreError> {
        let loaded = store.load()?;
        let tokens = loaded
            .tokens
            .iter()
            .map(|t| (t.sha256.clone(), t.clone()))
            .collect();
        let state = State::from_loaded(loaded);
        let metrics = Arc::new(Metrics::default());
        Ok(Arc::new(Control {
            flusher: Flusher::start(store.clone(), metrics.clone()),
            durable: watch::Sender::new(state.version),
            state: RwLock::new(state),
            store,
            writer: Arc::default(),
            failed: std::sync::OnceLock::new(),
            tokens: RwLock::new(tokens),
            compiled: tokio::sync::Mutex::new(None),
            snapshots: tokio::sync::Mutex::default(),
            workers: Workers::default(),
            ids: Mutex::new(ulid::Generator::new()),
            metrics,
            tracking,
        }))
    }

    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().expect("state lock")
    }

    /// A new rule or token id: a ULID, so ids sort in creation order.
    pub fn new_id(&self) -> String {
        let mut ids = self.ids.lock().expect("id lock");
        ids.generate()
            .unwrap_or_else(|_| ulid::Ulid::new())
            .to_string()
    }

    /// Follows the newest durable policy version.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// Makes one new policy version from what `plan` decides on the current state. `plan` runs
    /// under the writer lock, so its checks (If-Match, duplicates) cannot race another write.
    /// Returns after the version is durable.
    /// `plan`'s own errors (a missing rule, a failed If-Match) are the caller's type, which
    /// this layer's errors convert into.
    pub async fn write<R, E: From<ControlError>>(
        self: &Arc<Self>,
        actor: &Actor,
        action: &str,
        plan: impl FnOnce(&State) -> Result<Planned<R>, E>,
    ) -> Result<(u64, R), E> {
        actor.require_admin()?;
        self.healthy()?;
        let guard = self.writer.clone().lock_owned().await;
        let (commit, out) = {
            let state = self.read();
            let planned = plan(&state)?;
            if let Some(problem) = state.trust_conflict_after(&planned.ops) {
                return Err(ControlError::invalid(planned.field, problem).into());
            }
            let version = state.version + 1;
            let (rules, docs) = state.delta(&planned.ops);
            let at = now_rfc3339();
            let commit = Commit {
                version,
                rules,
                docs,
                audit: AuditEntry {
                    seq: 0,
                    at: at.clone(),
                    actor: actor.id.clone(),
                    role: actor.role.as_str().into(),
                    action: action.into(),
                    summary: planned.summary.clone(),
                    version: Some(version),
                },
                change: Change {
                    version,
                    at,
                    actor: actor.id.clone(),
                    summary: planned.summary,
                    ops: planned.ops,
                },
            };
            (commit, planned.out)
        };
        // From here the write must complete even if the client goes away (axum drops the
        // handler's future on disconnect): commit, apply, flush and publish run in a task.
        let this = self.clone();
        let version = tokio::spawn(async move { this.finish(commit, guard).await })
            .await
            .map_err(ControlError::from)??;
        Ok((version, out))
    }

    /// Commits a planned version, applies it in memory, releases the writer lock, waits for a
    /// (shared) flush and publishes the version as durable.
    async fn finish(
        &self,
        commit: Commit,
        guard: tokio::sync::OwnedMutexGuard<()>,
    ) -> Result<u64, ControlError> {
        let started = std::time::Instant::now();
        let store = self.store.clone();
        // A failed transaction changed nothing, in the store or in memory.
        let commit =
            tokio::task::spawn_blocking(move || store.commit(&commit).map(|()| commit)).await??;
        let version = commit.version;
        let committed_at = started.elapsed();
        {
            let mut state = self.state.write().expect("state lock");
            for op in &commit.change.ops {
                state.apply(op);
            }
            state.version = version;
        }
        self.metrics.policy_writes.inc();
        self.metrics.version_written(version);
        drop(guard);
        self.durable_flush().await?;
        tracing::debug!(version, ?committed_at, durable_at = ?started.elapsed(), "policy write");
        self.durable.send_if_modified(|v| {
            let newer = version > *v;
            if newer {
                *v = version;
            }
            newer
        });
        Ok(version)
    }

    /// Waits for a shared flush. A failed flush leaves memory ahead of what is durable, so the
    /// control plane stops taking writes and reports not ready until it is restarted (and
    /// reloads what the store really holds): fail-stop, as databases do on a failed fsync.
    async fn durable_flush(&self) -> Result<(), ControlError> {
        if let Err(e) = self.flusher.flush().await {
            tracing::error!(error = %e, "store flush failed: refusing further writes until restarted");
            let _ = self.failed.set(e);
        }
        self.healthy()
    }

    /// 503 once a flush has failed.
    pub fn healthy(&self) -> Result<(), ControlError> {
        match self.failed.get() {
            None => Ok(()),
            Some(e) => Err(ControlError::Stopped(e.clone())),
        }
    }

    /// Makes a new version whose content is that of `target` (docs/src/interfaces.md: rollback).
    pub async fn rollback(
        self: &Arc<Self>,
        actor: &Actor,
        target: u64,
    ) -> Result<u64, ControlError> {
        actor.require_admin()?;
        let current = self.read().version;
        if target == 0 || target >= current {
            return Err(ControlError::invalid(
                "/version",
                format!(
                    "version must be an earlier version, between 1 and {}",
                    current.saturating_sub(1)
                ),
            ));
        }
        let store = self.store.clone();
        let then = tokio::task::spawn_blocking(move || replay(store.as_ref(), target)).await??;
        let (version, ()) = self
            .write::<_, ControlError>(actor, "POST /v1/policy/rollback", |now| {
                Ok(Planned {
                    ops: now.diff_to(&then),
                    summary: format!("roll back to version {target}"),
                    field: "/version",
                    out: (),
                })
            })
            .await?;
        Ok(version)
    }

    /// The compiled form of the current version, built (off the async threads) on first use
    /// after each change.
    pub async fn compiled(self: &Arc<Self>) -> Result<Arc<CompiledPolicy>, ControlError> {
        let mut cache = self.compiled.lock().await;
        let version = self.read().version;
        if let Some(c) = cache.as_ref().filter(|c| c.version == version) {
            return Ok(c.clone());
        }
        let this = self.clone();
        let compiled = tokio::task::spawn_blocking(move || {
            let (version, policy, settings) = {
                let state = this.read();
                (state.version, state.policy(), state.settings.clone())
            };
            CompiledPolicy::compile(version, policy, settings)
        })
        .await?
        .map_err(|e| ControlError::Internal(format!("stored policy does not compile: {e}")))?;
        let compiled = Arc::new(compiled);
        *cache = Some(compiled.clone());
        Ok(compiled)
    }

    /// The newest snapshot workers may be sent: never a version a crash could still take back
    /// (it must be durable), and under a stream of overlapping writes still a recent one. A
    /// snapshot built while memory was ahead of the store waits in `pending` until the flush
    /// that covers it; building happens off the async threads.
    pub async fn snapshot(self: &Arc<Self>) -> Option<Arc<Snapshot>> {
        let mut slots = self.snapshots.lock().await;
        let durable = *self.durable.borrow();
        if slots.pending.as_ref().is_some_and(|p| p.version <= durable) {
            slots.sendable = slots.pending.take();
        }
        let built = slots
            .pending
            .as_ref()
            .or(slots.sendable.as_ref())
            .map_or(0, |s| s.version);
        if self.read().version > built {
            let this = self.clone();
            let snapshot = tokio::task::spawn_blocking(move || this.build_snapshot())
                .await
                .ok()?;
            if snapshot.version <= *self.durable.borrow() {
                slots.sendable = Some(snapshot);
                slots.pending = None;
            } else {
                slots.pending = Some(snapshot);
            }
        }
        slots.sendable.clone()
    }

    fn build_snapshot(&self) -> Arc<Snapshot> {
        let (version, policy, settings) = {
            let state = self.read();
            (state.version, state.policy(), state.settings.clone())
        };
        Arc::new(Snapshot {
            version,
            policy,
            settings,
        })
    }

    /// On first start (version 0), writes version 1 with the defaults made explicit, so that
    /// workers always receive a real version.
    pub async fn initialise(self: &Arc<Self>) -> Result<(), ControlError> {
        if self.read().version != 0 {
            return Ok(());
        }
        self.write::<_, ControlError>(&Actor::system(), "initialise", |state| {
            Ok(Planned {
                ops: vec![
                    Op::SetDefault {
                        direction: postern_policy::Direction::Inbound,
                        default: state.inbound_default,
                    },
                    Op::SetDefault {
                        direction: postern_policy::Direction::Outbound,
                        default: state.outbound_default,
                    },
                    Op::SetSettings {
                        settings: Box::new(state.settings.clone()),
                    },
                ],
                summary: "initial policy: defaults".into(),
                field: "",
                out: (),
            })
        })
        .await
        .map(|_| ())
    }

    pub fn gauges(&self) -> Gauges {
        let state = self.read();
        Gauges {
            version: state.version,
            inbound_rules: state.rules(postern_policy::Direction::Inbound).len(),
            outbound_rules: state.rules(postern_policy::Direction::Outbound).len(),
            tokens: self.tokens.read().expect("token lock").len(),
            workers: self
                .workers
                .list()
                .iter()
                .map(|w| (w.applied_version, w.connected))
                .collect(),
            tracking_events: self.tracking.events.load(Relaxed),
            tracking_lost: self.tracking.lost.load(Relaxed),
            tracking_foreign: self.tracking.foreign.load(Relaxed),
            tracking_messages: self.tracking.count(),
            tracking_bytes: self.tracking.size_on_disk(),
            tracking_lag: self.tracking.lag.clone(),
        }
    }

    pub fn authenticate(&self, secret: &str) -> Option<Actor> {
        let tokens = self.tokens.read().expect("token lock");
        tokens.get(&hash_secret(secret)).map(|t| Actor {
            id: t.id.clone(),
            role: t.role,
        })
    }

    pub fn tokens(&self) -> Vec<TokenRecord> {
        let mut list: Vec<_> = self
            .tokens
            .read()
            .expect("token lock")
            .values()
            .cloned()
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// Creates a token; returns its record and the secret (shown once, never stored).
    pub async fn create_token(
        self: &Arc<Self>,
        actor: &Actor,
        role: Role,
        comment: String,
    ) -> Result<(TokenRecord, String), ControlError> {
        let secret = new_secret();
        let record = self.store_token(actor, role, comment, &secret).await?;
        Ok((record, secret))
    }

    async fn store_token(
        self: &Arc<Self>,
        actor: &Actor,
        role: Role,
        comment: String,
        secret: &str,
    ) -> Result<TokenRecord, ControlError> {
        actor.require_admin()?;
        self.healthy()?;
        let record = TokenRecord {
            id: self.new_id(),
            role,
            comment,
            created_at: now_rfc3339(),
            sha256: hash_secret(secret),
        };
        let guard = self.writer.clone().lock_owned().await;
        let summary = format!("create {} token {}", role.as_str(), record.id);
        self.token_change(
            guard,
            actor,
            "POST /v1/tokens".into(),
            record.id.clone(),
            Some(record.clone()),
            summary,
        )
        .await?;
        Ok(record)
    }

    pub async fn delete_token(
        self: &Arc<Self>,
        actor: &Actor,
        id: &str,
    ) -> Result<(), ControlError> {
        actor.require_admin()?;
        self.healthy()?;
        let guard = self.writer.clone().lock_owned().await;
        let tokens = self.tokens();
        let record = tokens
            .iter()
            .find(|t| t.id == id)
            .ok_or_else(|| ControlError::NotFound(format!("no token {id}")))?;
        let admins = tokens.iter().filter(|t| t.role == Role::Admin).count();
        if record.role == Role::Admin && admins == 1 {
            return Err(ControlError::invalid(
                "",
                "this is the last admin token; create another admin token first",
            ));
        }
        let action = format!("DELETE /v1/tokens/{id}");
        self.token_change(
            guard,
            actor,
            action,
            id.to_string(),
            None,
            format!("delete token {id}"),
        )
        .await
    }

    /// Writes `action` by `actor` to the audit log, durably, for a command that changes no
    /// stored state (queue retry, flush, delete, drain).
    pub async fn audit(
        &self,
        actor: &Actor,
        action: String,
        summary: String,
    ) -> Result<(), ControlError> {
        let audit = audit_entry(actor, action, summary);
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.put_audit(&audit)).await??;
        self.durable_flush().await
    }

    /// Stores a token change with its audit entry, then updates memory and waits for a flush;
    /// in a task of its own, so a client going away cannot leave memory and store apart.
    async fn token_change(
        self: &Arc<Self>,
        guard: tokio::sync::OwnedMutexGuard<()>,
        actor: &Actor,
        action: String,
        id: String,
        record: Option<TokenRecord>,
        summary: String,
    ) -> Result<(), ControlError> {
        let audit = audit_entry(actor, action, summary);
        let this = self.clone();
        tokio::spawn(async move {
            let store = this.store.clone();
            let (key, stored) = (id.clone(), record.clone());
            tokio::task::spawn_blocking(move || store.put_token(&key, stored.as_ref(), &audit))
                .await??;
            {
                let mut tokens = this.tokens.write().expect("token lock");
                tokens.retain(|_, t| t.id != id);
                if let Some(r) = record {
                    tokens.insert(r.sha256.clone(), r);
                }
            }
            drop(guard);
            this.durable_flush().await
        })
        .await?
    }

    /// On first start (no token at all), makes an admin token and writes its secret to `path`
    /// (mode 0600) before storing it, so a crash in between cannot leave a stored admin token
    /// nobody knows: the next start simply makes a new one. Returns whether it did.
    pub async fn bootstrap_admin_token(
        self: &Arc<Self>,
        path: &Path,
    ) -> Result<bool, std::io::Error> {
        if !self.tokens.read().expect("token lock").is_empty() {
            return Ok(false);
        }
        let secret = new_secret();
        postern_tls::files::write_durably(path, format!("{secret}\n").as_bytes(), 0o600)?;
        self.store_token(
            &Actor::system(),
            Role::Admin,
            "created on first start".into(),
            &secret,
        )
        .await
        .map_err(std::io::Error::other)?;
        Ok(true)
    }
}

/// The state as it was at `version`, rebuilt from the change log.
fn replay(store: &dyn Store, version: u64) -> Result<State, ControlError> {
    let mut state = State::default();
    for v in 1..=version {
        let change = store
            .change(v)?
            .ok_or_else(|| ControlError::Internal(format!("the change log has no version {v}")))?;
        for op in &change.ops {
            state.apply(op);
        }
    }
    state.version = version;
    Ok(state)
}

/// An audit entry for an action that made no policy version.
fn audit_entry(actor: &Actor, action: String, summary: String) -> AuditEntry {
    AuditEntry {
        seq: 0,
        at: now_rfc3339(),
        actor: actor.id.clone(),
        role: actor.role.as_str().into(),
        action,
        summary,
        version: None,
    }
}
