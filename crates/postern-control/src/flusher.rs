//! Group commit: writes that finish while a flush is running share the next one, so N
//! concurrent REST writes cost far fewer than N flushes. A write replies only after a flush that
//! started after its transaction committed has completed.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::store::Store;

type Waiter = oneshot::Sender<Result<(), String>>;

pub struct Flusher {
    requests: mpsc::UnboundedSender<Waiter>,
}

impl Flusher {
    /// Starts the flushing task on the current runtime.
    pub fn start(store: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        let (requests, mut rx) = mpsc::unbounded_channel::<Waiter>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut waiters = vec![first];
                while let Ok(w) = rx.try_recv() {
                    waiters.push(w);
                }
                let store = store.clone();
                let started = Instant::now();
                let result = tokio::task::spawn_blocking(move || store.flush())
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()));
                metrics.store_flushes.inc();
                metrics.store_flush_waiters.inc_by(waiters.len() as u64);
                metrics
                    .store_flush_seconds
                    .inc_by(started.elapsed().as_secs_f64());
                if let Err(e) = &result {
                    tracing::error!(error = %e, "store flush failed");
                }
                for w in waiters {
                    let _ = w.send(result.clone());
                }
            }
        });
        Flusher { requests }
    }

    /// Returns once everything committed before this call is durable.
    pub async fn flush(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(tx)
            .map_err(|_| "the flusher has stopped".to_string())?;
        rx.await
            .map_err(|_| "the flusher has stopped".to_string())?
    }
}
