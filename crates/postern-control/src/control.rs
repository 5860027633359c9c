//! The control plane's service layer: the current state in memory, serialised writes that each
//! make one durable version (validate, one store transaction, apply, group flush), rollback by
//! replaying the change log, tokens, and the compiled policy for `evaluate`.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::SystemTime;

use postern_policy::CompiledPolicy;
use tokio::sync::watch;

use crate::api::ApiError;
use crate::auth::{Actor, Role, hash_secret, new_secret};
use crate::change::{Change, Op};
use crate::flusher::Flusher;
use crate::metrics::{Gauges, Metrics};
use crate::state::State;
use crate::store::{AuditEntry, Commit, Store, StoreError, TokenRecord};
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

/// A durable version as workers receive it, built once per version.
pub struct Snapshot {
    pub version: u64,
    pub policy: postern_proto::pb::Policy,
    pub settings_json: String,
}

pub struct Control {
    store: Arc<dyn Store>,
    state: RwLock<State>,
    /// Serialises writers; readers only take `state` briefly.
    writer: tokio::sync::Mutex<()>,
    flusher: Flusher,
    /// Token records by the SHA-256 of their secret.
    tokens: RwLock<HashMap<String, TokenRecord>>,
    compiled: Mutex<Option<Arc<CompiledPolicy>>>,
    snapshot: Mutex<Option<Arc<Snapshot>>>,
    pub workers: Workers,
    ids: Mutex<ulid::Generator>,
    /// The newest durable version; the gRPC side pushes each one to workers.
    durable: watch::Sender<u64>,
    pub metrics: Arc<Metrics>,
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

impl Control {
    /// Loads the state from `store`. Must run inside a tokio runtime (the flusher is a task).
    pub fn open(store: Arc<dyn Store>) -> Result<Arc<Self>, StoreError> {
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
            writer: tokio::sync::Mutex::new(()),
            tokens: RwLock::new(tokens),
            compiled: Mutex::new(None),
            snapshot: Mutex::new(None),
            workers: Workers::default(),
            ids: Mutex::new(ulid::Generator::new()),
            metrics,
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
    pub async fn write<R>(
        &self,
        actor: &Actor,
        action: &str,
        plan: impl FnOnce(&State) -> Result<Planned<R>, ApiError>,
    ) -> Result<(u64, R), ApiError> {
        actor.require_admin()?;
        let started = std::time::Instant::now();
        let guard = self.writer.lock().await;
        let (commit, out) = {
            let state = self.read();
            let planned = plan(&state)?;
            if let Some(problem) = state.trust_conflict_after(&planned.ops) {
                return Err(ApiError::unprocessable(planned.field, problem));
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
        let planned_at = started.elapsed();
        let store = self.store.clone();
        let commit = tokio::task::spawn_blocking(move || store.commit(&commit).map(|()| commit))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))??;
        let version = commit.version;
        let committed_at = started.elapsed();
        {
            let mut state = self.state.write().expect("state lock");
            for op in &commit.change.ops {
                state.apply(op);
            }
            state.version = version;
        }
        self.metrics.policy_writes.fetch_add(1, Relaxed);
        drop(guard);
        let applied_at = started.elapsed();
        self.flusher.flush().await.map_err(ApiError::internal)?;
        tracing::debug!(
            version,
            ?planned_at,
            ?committed_at,
            ?applied_at,
            durable_at = ?started.elapsed(),
            "policy write"
        );
        self.durable.send_if_modified(|v| {
            let newer = version > *v;
            if newer {
                *v = version;
            }
            newer
        });
        Ok((version, out))
    }

    /// Makes a new version whose content is that of `target` (PRODUCT.md 6: rollback).
    pub async fn rollback(&self, actor: &Actor, target: u64) -> Result<u64, ApiError> {
        let current = self.read().version;
        if target == 0 || target >= current {
            return Err(ApiError::unprocessable(
                "/version",
                format!(
                    "version must be an earlier version, between 1 and {}",
                    current.saturating_sub(1)
                ),
            ));
        }
        let store = self.store.clone();
        let then = tokio::task::spawn_blocking(move || replay(store.as_ref(), target))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))??;
        let (version, ()) = self
            .write(actor, "POST /v1/policy/rollback", |now| {
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

    /// The compiled form of the current version, built on first use after each change.
    pub fn compiled(&self) -> Result<Arc<CompiledPolicy>, ApiError> {
        let state = self.read();
        let mut cache = self.compiled.lock().expect("compiled lock");
        if let Some(c) = cache.as_ref().filter(|c| c.version == state.version) {
            return Ok(c.clone());
        }
        let compiled =
            CompiledPolicy::compile(state.version, state.policy(), state.settings.clone())
                .map_err(|e| ApiError::internal(format!("stored policy does not compile: {e}")))?;
        let compiled = Arc::new(compiled);
        *cache = Some(compiled.clone());
        Ok(compiled)
    }

    /// The snapshot of the newest durable version; `None` while the newest version in memory is
    /// not yet durable (a worker must never hold a version a crash could take back) or before
    /// the first version.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        let durable = *self.durable.borrow();
        let state = self.read();
        if state.version != durable || durable == 0 {
            return None;
        }
        let mut cache = self.snapshot.lock().expect("snapshot lock");
        if let Some(s) = cache.as_ref().filter(|s| s.version == durable) {
            return Some(s.clone());
        }
        let snapshot = Arc::new(Snapshot {
            version: durable,
            policy: postern_proto::pb::Policy::from(&state.policy()),
            settings_json: serde_json::to_string(&state.settings).expect("settings serialise"),
        });
        *cache = Some(snapshot.clone());
        Some(snapshot)
    }

    /// On first start (version 0), writes version 1 with the defaults made explicit, so that
    /// workers always receive a real version.
    pub async fn initialise(&self) -> Result<(), ApiError> {
        if self.read().version != 0 {
            return Ok(());
        }
        self.write(&Actor::system(), "initialise", |state| {
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
                        settings: state.settings.clone(),
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
        &self,
        actor: &Actor,
        role: Role,
        comment: String,
    ) -> Result<(TokenRecord, String), ApiError> {
        actor.require_admin()?;
        let secret = new_secret();
        let record = TokenRecord {
            id: self.new_id(),
            role,
            comment,
            created_at: now_rfc3339(),
            sha256: hash_secret(&secret),
        };
        let summary = format!("create {} token {}", role.as_str(), record.id);
        self.token_change(
            actor,
            "POST /v1/tokens",
            &record.id.clone(),
            Some(record.clone()),
            summary,
        )
        .await?;
        Ok((record, secret))
    }

    pub async fn delete_token(&self, actor: &Actor, id: &str) -> Result<(), ApiError> {
        actor.require_admin()?;
        let _guard = self.writer.lock().await;
        let tokens = self.tokens();
        let record = tokens
            .iter()
            .find(|t| t.id == id)
            .ok_or_else(|| ApiError::not_found(format!("no token {id}")))?;
        let admins = tokens.iter().filter(|t| t.role == Role::Admin).count();
        if record.role == Role::Admin && admins == 1 {
            return Err(ApiError::unprocessable(
                "",
                "this is the last admin token; create another admin token first",
            ));
        }
        self.token_change_locked(
            actor,
            &format!("DELETE /v1/tokens/{id}"),
            id,
            None,
            format!("delete token {id}"),
        )
        .await
    }

    async fn token_change(
        &self,
        actor: &Actor,
        action: &str,
        id: &str,
        record: Option<TokenRecord>,
        summary: String,
    ) -> Result<(), ApiError> {
        let _guard = self.writer.lock().await;
        self.token_change_locked(actor, action, id, record, summary)
            .await
    }

    async fn token_change_locked(
        &self,
        actor: &Actor,
        action: &str,
        id: &str,
        record: Option<TokenRecord>,
        summary: String,
    ) -> Result<(), ApiError> {
        let audit = AuditEntry {
            seq: 0,
            at: now_rfc3339(),
            actor: actor.id.clone(),
            role: actor.role.as_str().into(),
            action: action.into(),
            summary,
            version: None,
        };
        let store = self.store.clone();
        let (id_owned, rec) = (id.to_string(), record.clone());
        tokio::task::spawn_blocking(move || store.put_token(&id_owned, rec.as_ref(), &audit))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))??;
        {
            let mut tokens = self.tokens.write().expect("token lock");
            tokens.retain(|_, t| t.id != id);
            if let Some(r) = record {
                tokens.insert(r.sha256.clone(), r);
            }
        }
        self.flusher.flush().await.map_err(ApiError::internal)
    }

    /// On first start (no token at all), creates an admin token and writes its secret to `path`
    /// with mode 0600. Returns whether it did.
    pub async fn bootstrap_admin_token(&self, path: &Path) -> Result<bool, std::io::Error> {
        if !self.tokens.read().expect("token lock").is_empty() {
            return Ok(false);
        }
        let (_, secret) = self
            .create_token(
                &Actor::system(),
                Role::Admin,
                "created on first start".into(),
            )
            .await
            .map_err(|e| std::io::Error::other(e.detail))?;
        write_private(path, format!("{secret}\n").as_bytes())?;
        Ok(true)
    }
}

/// The state as it was at `version`, rebuilt from the change log.
fn replay(store: &dyn Store, version: u64) -> Result<State, ApiError> {
    let mut state = State::default();
    for v in 1..=version {
        let change = store
            .change(v)?
            .ok_or_else(|| ApiError::internal(format!("the change log has no version {v}")))?;
        for op in &change.ops {
            state.apply(op);
        }
    }
    state.version = version;
    Ok(state)
}

/// Writes a secret file readable by its owner only, durably.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}
