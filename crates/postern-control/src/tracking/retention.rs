//! Retention (PRODUCT.md 6, `settings.tracking`): messages and connections older than
//! `retention_days` go, and while the store is over `max_bytes` the oldest go too, a slice at
//! a time (sled gives space back lazily, so each pass removes a bounded share and the next pass
//! measures again).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::watch;

use super::fold::Stored;
use super::{Tracking, TrackingError, corrupt, keys};
use crate::control::Control;

/// How often retention runs.
pub const EVERY: Duration = Duration::from_secs(60);

pub async fn run(
    tracking: Arc<Tracking>,
    control: Arc<Control>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (settings, budget) = {
            let state = control.read();
            let s = &state.settings;
            (s.tracking.clone(), s.reports.received_max_bytes)
        };
        tracking
            .received_budget
            .store(budget, std::sync::atomic::Ordering::Relaxed);
        let t = tracking.clone();
        let result = tokio::task::spawn_blocking(move || {
            t.enforce_apart(
                settings.retention_days,
                settings.max_bytes,
                settings.connections_max_bytes,
                postern_time::now_ms(),
            )
        })
        .await;
        match result {
            Ok(Ok((0, 0))) => {}
            Ok(Ok((messages, connections))) => {
                tracing::info!(
                    messages,
                    connections,
                    "tracking retention removed old records"
                )
            }
            Ok(Err(e)) => tracing::error!(error = %e, "tracking retention failed"),
            Err(e) => tracing::error!(error = %e, "tracking retention failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

impl Tracking {
    /// One retention pass at time `now`: (messages, connections) removed.
    pub fn enforce(
        &self,
        retention_days: u32,
        max_bytes: u64,
        now: u64,
    ) -> Result<(u64, u64), TrackingError> {
        self.enforce_apart(retention_days, max_bytes, max_bytes, now)
    }

    /// `enforce` with a size limit of their own for connection records: each kind is
    /// measured and trimmed on its own, so many connections never push messages out.
    pub fn enforce_apart(
        &self,
        retention_days: u32,
        max_bytes: u64,
        connections_max_bytes: u64,
        now: u64,
    ) -> Result<(u64, u64), TrackingError> {
        let _turn = self.writing.write().expect("tracking write lock");
        let cutoff = now.saturating_sub(u64::from(retention_days) * 86_400_000);
        let over = self.size_on_disk() > max_bytes;
        // Over the size limit: a hundredth of the messages (at least 100), oldest first.
        let extra = if over {
            (self.count.load(Relaxed) / 100).max(100)
        } else {
            0
        };
        let mut messages = 0;
        let mut removed_by_size = 0;
        // Inverted times: the oldest keys come last.
        for entry in self.by_time.iter().rev() {
            let (key, _) = entry?;
            let Some((ms, id)) = keys::split_timed(&key, 0) else {
                continue;
            };
            if ms >= cutoff {
                if removed_by_size >= extra {
                    break;
                }
                removed_by_size += 1;
            }
            self.remove_message(&key, &id)?;
            messages += 1;
        }
        let mut connections = 0;
        let over = self.connections_size_on_disk() > connections_max_bytes;
        let extra = if over {
            (self.connections.len() as u64 / 100).max(100)
        } else {
            0
        };
        let mut removed_by_size = 0;
        for entry in self.connections.iter().rev() {
            let (key, value) = entry?;
            let Some((ms, _)) = keys::split_timed(&key, 0) else {
                continue;
            };
            if ms >= cutoff {
                if removed_by_size >= extra {
                    break;
                }
                removed_by_size += 1;
            }
            let view: super::view::ConnectionView =
                serde_json::from_slice(&value).map_err(corrupt)?;
            let mut ip_key = keys::prefix(&view.ip);
            ip_key.extend_from_slice(&key);
            self.conn_by_ip.remove(ip_key)?;
            self.connections.remove(&key)?;
            connections += 1;
        }
        self.prune_tls(&super::tlsrpt::day_of(cutoff))?;
        self.received.prune(cutoff)?;
        self.prune_known_sts(now)?;
        Ok((messages, connections))
    }

    pub(super) fn remove_message(&self, time_key: &[u8], id: &str) -> Result<(), TrackingError> {
        if let Some(bytes) = self.messages.remove(id)? {
            let s: Stored = super::record_of(&bytes)?;
            let at = s.first_ms;
            let v = &s.view;
            self.by_sender
                .remove(keys::indexed(&v.sender.to_lowercase(), at, id))?;
            for r in &v.recipients {
                self.by_rcpt
                    .remove(keys::indexed(&r.to_lowercase(), at, id))?;
            }
            if let Some(m) = &v.message_id {
                self.by_msgid.remove(keys::indexed(m, at, id))?;
            }
            self.summaries.remove(id)?;
            self.remove_timeline(id)?;
            for facet in keys::facets(&s.summary()) {
                self.by_facet.remove(keys::indexed(&facet, at, id))?;
            }
            self.count.fetch_sub(1, Relaxed);
        }
        self.by_time.remove(time_key)?;
        Ok(())
    }
}
