//! Uploads the outbox to the control plane (proto/postern/v1/tracking.proto): batches in
//! sequence order, a few in flight, each answered with the highest sequence stored; after a
//! reconnect, everything from the first unanswered event again (the control plane
//! deduplicates). Reconnects back off like the policy stream.

use std::sync::Arc;
use std::time::Duration;

use postern_proto::pb;
use postern_proto::pb::tracking_client::TrackingClient;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::CompressionEncoding;

use super::Outbox;
use crate::sync::{ControlConnection, MAX_MESSAGE, StreamError, fresh_endpoint, reconnecting};

/// Events per batch.
const BATCH: usize = 1000;
/// Batches sent and not yet answered.
const IN_FLIGHT: usize = 4;
/// A batch that is not full waits this long for more events: each batch costs the control
/// plane a transaction (a commit to disk), and tracking may lag a moment behind the mail.
const LINGER: Duration = Duration::from_millis(250);

/// Keeps uploading until `shutdown` turns true.
pub async fn run(
    control: ControlConnection,
    worker_id: String,
    outbox: Arc<Outbox>,
    shutdown: watch::Receiver<bool>,
) {
    if let Err(e) = control.endpoint() {
        tracing::error!(error = %e, "invalid control plane address; events stay in the outbox");
        return;
    }
    let backoff = control.backoff;
    let control = std::sync::Mutex::new(control);
    let stream = || async {
        let endpoint = fresh_endpoint(&control)?;
        session(&endpoint, &worker_id, &outbox).await
    };
    reconnecting(backoff, "event upload", shutdown, stream).await;
}

/// One upload stream; returns whether anything was acknowledged.
async fn session(
    endpoint: &tonic::transport::Endpoint,
    worker_id: &str,
    outbox: &Arc<Outbox>,
) -> Result<bool, StreamError> {
    let channel = endpoint.connect().await?;
    // Batches go uncompressed: gzip cost a few percent of a busy worker's CPU for messages of
    // tens of kilobytes (snapshots, which run to megabytes, are compressed).
    let mut client = TrackingClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
        .accept_compressed(CompressionEncoding::Gzip);
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    let mut acks = client.upload(ReceiverStream::new(rx)).await?.into_inner();
    let mut written = outbox.written();
    let mut next = outbox.acked() + 1;
    let mut in_flight = 0usize;
    let mut cursor = None;
    let mut progressed = false;
    let mut last_send = tokio::time::Instant::now() - LINGER;
    // A read found nothing although events were written: wait for the next write rather than
    // read again at once (the reader stands in gaps for what it cannot read, so this is only
    // a race with trimming; never a loop that burns a core).
    let mut stalled = false;
    loop {
        // Send while there is room in flight and either a full batch or the linger is over.
        loop {
            let available = (*written.borrow_and_update() + 1).saturating_sub(next);
            if in_flight >= IN_FLIGHT
                || available == 0
                || (available < BATCH as u64 && last_send.elapsed() < LINGER)
            {
                break;
            }
            let (o, from) = (outbox.clone(), next);
            let mut c = cursor;
            let (events, c) = tokio::task::spawn_blocking(move || {
                o.read(from, BATCH, &mut c).map(|events| (events, c))
            })
            .await??;
            cursor = c;
            let Some(last) = events.last().map(|e| e.seq) else {
                stalled = true;
                break;
            };
            stalled = false;
            next = last + 1;
            tx.send(pb::EventBatch {
                worker_id: worker_id.to_string(),
                epoch: outbox.epoch.clone(),
                events,
            })
            .await?;
            in_flight += 1;
            last_send = tokio::time::Instant::now();
        }
        let pending = *written.borrow() >= next && !stalled;
        tokio::select! {
            ack = acks.message() => match ack? {
                Some(ack) => {
                    if ack.epoch == outbox.epoch {
                        let o = outbox.clone();
                        tokio::task::spawn_blocking(move || o.ack(ack.stored_seq)).await?;
                        progressed = true;
                    }
                    in_flight = in_flight.saturating_sub(1);
                    if in_flight == 0 && ack.epoch == outbox.epoch && ack.stored_seq + 1 < next {
                        // The control plane stops at a sequence it did not get: send again from
                        // there, after the reconnect's backoff.
                        return Err(format!(
                            "the control plane stored up to {} of the events sent up to {}",
                            ack.stored_seq,
                            next - 1
                        )
                        .into());
                    }
                }
                None => return Ok(progressed),
            },
            changed = written.changed() => {
                changed?;
                stalled = false;
            }
            _ = tokio::time::sleep_until(last_send + LINGER), if pending => {}
        }
    }
}
