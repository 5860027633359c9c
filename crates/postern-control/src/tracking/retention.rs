//! Retention (docs/src/interfaces.md, `settings.tracking`): messages and connections older than
//! `retention_days` go, and while the store is over `max_bytes` the oldest go too, a slice at
//! a time (sled gives space back lazily, so each pass removes a bounded share and the next pass
//! measures again).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Tracking, TrackingError};
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
    /// `enforce_apart` with one budget for messages and connections.
    pub fn enforce(
        &self,
        retention_days: u32,
        max_bytes: u64,
        now: u64,
    ) -> Result<(u64, u64), TrackingError> {
        self.enforce_apart(retention_days, max_bytes, max_bytes, now)
    }

    /// One retention pass over every store at `now` (unix ms): (messages, connections) removed.
    pub fn enforce_apart(
        &self,
        retention_days: u32,
        max_bytes: u64,
        connections_max_bytes: u64,
        now: u64,
    ) -> Result<(u64, u64), TrackingError> {
        let _turn = self.writing.write().expect("tracking write lock");
        let cutoff = now.saturating_sub(u64::from(retention_days) * 86_400_000);
        let removed = self
            .messages
            .enforce(cutoff, max_bytes, connections_max_bytes)?;
        self.tlsrpt.prune(cutoff)?;
        self.sts.prune(now)?;
        Ok(removed)
    }
}
