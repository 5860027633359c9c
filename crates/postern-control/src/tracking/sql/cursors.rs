//! Each worker epoch's ingest cursor: the highest sequence stored (what a batch is
//! acknowledged with) and the last sequence a gap event reported lost. Read and written in the
//! batch's own transaction, so an event is stored exactly when its cursor moves past it.

use super::{Conn, P};
use crate::tracking::TrackingError;

/// (highest sequence stored, last sequence reported lost) of `worker`'s `epoch`.
pub fn get(c: &mut Conn, worker: &str, epoch: &str) -> Result<(u64, u64), TrackingError> {
    let found = c.rows(
        "SELECT seq, lost FROM cursors WHERE worker = $1 AND epoch = $2",
        &[P::from(worker), P::from(epoch)],
        |r| Ok((r.int(0)? as u64, r.int(1)? as u64)),
    )?;
    Ok(found.first().copied().unwrap_or((0, 0)))
}

pub fn set(
    c: &mut Conn,
    worker: &str,
    epoch: &str,
    seq: u64,
    lost: u64,
) -> Result<(), TrackingError> {
    c.execute(
        "INSERT INTO cursors (worker, epoch, seq, lost) VALUES ($1, $2, $3, $4)
         ON CONFLICT (worker, epoch) DO UPDATE SET seq = excluded.seq, lost = excluded.lost",
        &[P::from(worker), P::from(epoch), P::from(seq), P::from(lost)],
    )?;
    Ok(())
}

/// Moves a cursor forward to at least (`seq`, `lost`), never back (the sled import).
pub fn raise(
    c: &mut Conn,
    worker: &str,
    epoch: &str,
    seq: u64,
    lost: u64,
) -> Result<(), TrackingError> {
    let (had, had_lost) = get(c, worker, epoch)?;
    set(c, worker, epoch, had.max(seq), had_lost.max(lost))
}
