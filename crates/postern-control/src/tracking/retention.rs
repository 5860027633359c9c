//! The control plane's tracking tasks: retention (docs/src/interfaces.md, `settings.tracking`)
//! every `EVERY`, and a probe of the database every `PROBE` so that `/readyz` says at once
//! when it cannot be reached, and when it can again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Tracking;
use crate::control::Control;

/// How often retention runs.
pub const EVERY: Duration = Duration::from_secs(60);
/// How often the database is probed.
pub const PROBE: Duration = Duration::from_secs(2);

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

/// Probes the database until shutdown; each failure and each recovery is logged once.
pub async fn run_health(tracking: Arc<Tracking>, mut shutdown: watch::Receiver<bool>) {
    let mut was_down = false;
    loop {
        let t = tracking.clone();
        let probe = tokio::task::spawn_blocking(move || t.db.probe()).await;
        match probe {
            Ok(Err(e)) if !was_down => {
                tracing::error!(error = %e, "the tracking database cannot be reached; workers keep their events until it can");
                was_down = true;
            }
            Ok(Ok(())) if was_down => {
                tracing::info!("the tracking database answers again");
                was_down = false;
            }
            _ => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(PROBE) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}
