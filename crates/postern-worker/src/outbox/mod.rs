//! The event outbox (docs/src/tracking.md): tracking events wait here, on disk, until the control
//! plane
//! has stored them. Emitting never blocks SMTP: events get their sequence number at once and go
//! to a writer task that appends them in batches (one fdatasync per batch) to segment files
//! `outbox/<first seq>.seg` (records: u32 little-endian length, protobuf `EventRecord`). The
//! uploader (`upload.rs`) reads what is durable and sends it; acknowledged segments are removed.
//! The outbox is bounded (`tracking.outbox_max_bytes`): on overflow the oldest segment goes, and
//! an `OutboxGap` event records the sequences lost, as it does for events the writer could not
//! keep up with or could not write (a full disk).

pub mod upload;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use postern_events::{Event, OutboxGap, Record};
use postern_proto::pb;
use prost::Message;
use tokio::sync::{mpsc, watch};

use crate::metrics::Metrics;

/// A new segment is started past this size (small in unit tests, to test rotation).
const SEGMENT_BYTES: u64 = if cfg!(test) { 2048 } else { 4 * 1024 * 1024 };
/// Events waiting for the writer; beyond this they are lost (and reported as a gap).
const QUEUE: usize = 65_536;
/// Events the writer takes per batch.
const BATCH: usize = 4096;
/// How long the writer lets events gather before a write.
const GATHER: std::time::Duration = std::time::Duration::from_millis(10);

#[derive(Debug, Clone, Copy)]
struct Segment {
    first: u64,
    /// The last sequence written to it (`first - 1` while empty).
    last: u64,
    bytes: u64,
    /// The reader found a record it cannot read: nothing more is appended after it.
    sealed: bool,
}

#[derive(Debug)]
struct State {
    next_seq: u64,
    /// Sequences lost and not yet reported by a gap event.
    lost: Option<(u64, u64)>,
    segments: VecDeque<Segment>,
    acked: u64,
    /// (first sequence, emitted at ms), at most one a second: the age of the oldest
    /// unacknowledged event to within a second, at the cost of one entry per second of lag.
    marks: VecDeque<(u64, u64)>,
}

impl State {
    fn mark(&mut self, seq: u64, at_ms: u64) {
        if self.marks.back().is_none_or(|&(_, at)| at_ms >= at + 1000) {
            self.marks.push_back((seq, at_ms));
        }
    }

    /// Forgets the marks whose events are all acknowledged.
    fn unmark(&mut self) {
        let oldest = self.acked + 1;
        if oldest >= self.next_seq {
            self.marks.clear();
        }
        while self.marks.len() > 1 && self.marks[1].0 <= oldest {
            self.marks.pop_front();
        }
    }
}

pub struct Outbox {
    dir: PathBuf,
    /// Made when the outbox is created (docs/src/tracking.md).
    pub epoch: String,
    tx: mpsc::Sender<Record>,
    rx: Mutex<Option<mpsc::Receiver<Record>>>,
    state: Mutex<State>,
    /// The highest sequence on disk (fdatasynced).
    written: watch::Sender<u64>,
    pub metrics: Arc<Metrics>,
    /// `tracking.outbox_max_bytes`, from the policy.
    max_bytes: std::sync::atomic::AtomicU64,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

/// A record is never this long; a length beyond it is a torn or garbage tail. Events are
/// bounded where they are made (`Event::bound`, 640 KiB of text), and the writer checks every
/// record against this before it writes: a record the writer makes is always one the reader
/// takes.
const MAX_RECORD: usize = 1 << 20;

/// Why `read_records` stopped.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// `keep` asked to stop.
    Stopped,
    /// The end of the file, or a record that cannot be read: a torn tail after a crash, the
    /// zeros a file system may leave there, or damage.
    Unreadable,
}

/// Reads the records of a segment from `offset`, whose sequences must follow `after` and
/// increase: (record, offset after it). Returns the offset it stopped at and why.
fn read_records(
    path: &Path,
    offset: u64,
    after: u64,
    mut keep: impl FnMut(pb::EventRecord, u64) -> bool,
) -> io::Result<(u64, End)> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut reader = BufReader::new(file);
    let (mut at, mut previous) = (offset, after);
    loop {
        let mut len = [0u8; 4];
        if reader.read_exact(&mut len).is_err() {
            return Ok((at, End::Unreadable));
        }
        let len = u32::from_le_bytes(len) as usize;
        if len == 0 || len > MAX_RECORD {
            return Ok((at, End::Unreadable));
        }
        let mut bytes = vec![0u8; len];
        if reader.read_exact(&mut bytes).is_err() {
            return Ok((at, End::Unreadable));
        }
        let record = match pb::EventRecord::decode(bytes.as_slice()) {
            Ok(r) if r.seq > previous => r,
            _ => return Ok((at, End::Unreadable)),
        };
        previous = record.seq;
        at += 4 + len as u64;
        if !keep(record, at) {
            return Ok((at, End::Stopped));
        }
    }
}

/// The record the reader puts where sequences `first..=last` are missing from the files (lost
/// to a full writer queue, a failed write, a trimmed segment or damage): a gap, under the
/// last missing sequence, so the control plane can acknowledge past the hole knowingly.
fn gap_record(first: u64, last: u64) -> pb::EventRecord {
    pb::EventRecord::from(Record {
        seq: last,
        at_ms: postern_time::now_ms(),
        policy_version: 0,
        event: Event::OutboxGap(OutboxGap {
            first_seq: first,
            last_seq: last,
        }),
        truncated: false,
    })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Outbox {
    /// Opens (or creates, with a new epoch) the outbox under `dir`, dropping any torn tail.
    pub fn open(dir: &Path, metrics: Arc<Metrics>) -> io::Result<Arc<Outbox>> {
        fs::create_dir_all(dir)?;
        let epoch_file = dir.join("epoch");
        let epoch = match fs::read_to_string(&epoch_file) {
            Ok(e) if !e.trim().is_empty() => e.trim().to_string(),
            _ => {
                let mut bytes = [0u8; 16];
                getrandom::fill(&mut bytes).map_err(io::Error::other)?;
                let epoch: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                // A new epoch starts numbering again: no segment of another epoch may stay.
                for entry in fs::read_dir(dir)? {
                    let path = entry?.path();
                    if path.extension().is_some_and(|x| x == "seg") {
                        fs::remove_file(path)?;
                    }
                }
                postern_tls::files::write_durably(&epoch_file, epoch.as_bytes(), 0o600)?;
                epoch
            }
        };
        let acked = fs::read_to_string(dir.join("acked"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let mut firsts: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        firsts.sort();
        let mut segments = VecDeque::new();
        for first in firsts {
            let path = segment_path(dir, first);
            let mut last = first - 1;
            let (end, _) = read_records(&path, 0, first - 1, |r, _| {
                last = r.seq;
                true
            })?;
            if end == 0 {
                // Created, then the crash: nothing in it.
                fs::remove_file(&path)?;
                continue;
            }
            // Cut a torn tail, so that appends continue from a record boundary.
            OpenOptions::new().write(true).open(&path)?.set_len(end)?;
            segments.push_back(Segment {
                first,
                last,
                bytes: end,
                sealed: false,
            });
        }
        let last_written = segments.back().map_or(acked, |s| s.last.max(acked));
        let (tx, rx) = mpsc::channel(QUEUE);
        Ok(Arc::new(Outbox {
            dir: dir.to_path_buf(),
            epoch,
            tx,
            rx: Mutex::new(Some(rx)),
            state: Mutex::new(State {
                next_seq: last_written + 1,
                lost: None,
                segments,
                acked,
                // Events left from before the restart: their age counts from now.
                marks: (last_written > acked)
                    .then(|| (acked + 1, postern_time::now_ms()))
                    .into_iter()
                    .collect(),
            }),
            written: watch::Sender::new(last_written),
            metrics,
            max_bytes: std::sync::atomic::AtomicU64::new(1 << 30),
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("outbox lock")
    }

    /// Records `event` (under policy `version`). Never waits: when the writer is too far behind
    /// the event is lost, and a gap event says so.
    pub fn emit(&self, version: u64, mut event: Event) {
        let truncated = event.bound();
        let mut state = self.state();
        let seq = state.next_seq;
        state.next_seq += 1;
        let at_ms = postern_time::now_ms();
        state.mark(seq, at_ms);
        let record = Record {
            seq,
            at_ms,
            policy_version: version,
            event,
            truncated,
        };
        if self.tx.try_send(record).is_err() {
            lose(&mut state, seq, seq);
            self.metrics.events_lost.inc();
        }
    }

    pub fn set_max_bytes(&self, max: u64) {
        self.max_bytes.store(max, Relaxed);
    }

    /// The highest sequence on disk, as it changes.
    pub fn written(&self) -> watch::Receiver<u64> {
        self.written.subscribe()
    }

    /// Waits (at most `limit`) until every event emitted so far is on disk.
    pub async fn settle(&self, limit: std::time::Duration) {
        let emitted = self.state().next_seq - 1;
        let mut written = self.written();
        let _ = tokio::time::timeout(limit, written.wait_for(|w| *w >= emitted)).await;
    }

    pub fn acked(&self) -> u64 {
        self.state().acked
    }

    /// Seconds since the oldest event the control plane has not acknowledged was emitted.
    pub fn lag_s(&self) -> f64 {
        let state = self.state();
        state.marks.front().map_or(0.0, |&(_, at)| {
            postern_time::now_ms().saturating_sub(at) as f64 / 1000.0
        })
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.state().segments.iter().map(|s| s.bytes).sum()
    }

    /// Appends emitted events until every sender is gone. Run it once.
    pub async fn run_writer(self: Arc<Self>) {
        let Some(mut rx) = self.rx.lock().expect("outbox lock").take() else {
            return;
        };
        while let Some(first) = rx.recv().await {
            // A moment for more to come: one fdatasync then serves them all, instead of one
            // per session beside the spool's own.
            tokio::time::sleep(GATHER).await;
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let this = self.clone();
            let result = tokio::task::spawn_blocking(move || this.append(batch)).await;
            if let Ok(Err((e, first, last))) = result {
                tracing::error!(error = %e, first, last, "tracking events could not be written; they are lost");
                lose(&mut self.state(), first, last);
                self.metrics.events_lost.inc_by(last - first + 1);
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            // Report what was lost, in sequence like any other event.
            let lost = self.state().lost.take();
            if let Some((first_seq, last_seq)) = lost {
                self.emit(
                    0,
                    Event::OutboxGap(OutboxGap {
                        first_seq,
                        last_seq,
                    }),
                );
            }
        }
    }

    /// Writes a batch durably; on failure, the range it held.
    fn append(&self, batch: Vec<Record>) -> Result<(), (io::Error, u64, u64)> {
        let (first, last) = (batch[0].seq, batch[batch.len() - 1].seq);
        let mut bytes = Vec::new();
        for record in batch {
            let seq = record.seq;
            let encoded = pb::EventRecord::from(record).encode_to_vec();
            if encoded.len() > MAX_RECORD {
                // Cannot happen for a bounded event; if it ever did, the reader would take
                // the record for a torn tail. It is lost instead, and the gap says so.
                tracing::error!(
                    seq,
                    bytes = encoded.len(),
                    "a tracking event too large to keep"
                );
                lose(&mut self.state(), seq, seq);
                self.metrics.events_lost.inc();
                continue;
            }
            bytes.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&encoded);
        }
        let current = self.state().segments.back().copied();
        let (segment, new) = match current {
            Some(s) if s.bytes < SEGMENT_BYTES && !s.sealed => (s, false),
            _ => (
                Segment {
                    first,
                    last: first - 1,
                    bytes: 0,
                    sealed: false,
                },
                true,
            ),
        };
        let path = segment_path(&self.dir, segment.first);
        let write = || -> io::Result<()> {
            let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
            file.write_all(&bytes)?;
            file.sync_data()?;
            if new {
                sync_dir(&self.dir)?;
            }
            Ok(())
        };
        if let Err(e) = write() {
            // Keep the file at its last good record, for the appends that follow.
            if new {
                let _ = fs::remove_file(&path);
            } else if let Ok(f) = OpenOptions::new().write(true).open(&path) {
                let _ = f.set_len(segment.bytes);
            }
            return Err((e, first, last));
        }
        let mut state = self.state();
        let updated = Segment {
            first: segment.first,
            last,
            bytes: segment.bytes + bytes.len() as u64,
            sealed: false,
        };
        if new {
            state.segments.push_back(updated);
        } else if let Some(back) = state.segments.back_mut() {
            *back = updated;
        }
        self.trim_to_limit(&mut state);
        drop(state);
        self.written.send_replace(last);
        Ok(())
    }

    /// Drops the oldest segments while the outbox is over its limit; what was not yet
    /// acknowledged is lost and reported.
    fn trim_to_limit(&self, state: &mut State) {
        let max = self.max_bytes.load(Relaxed);
        while state.segments.len() > 1 && state.segments.iter().map(|s| s.bytes).sum::<u64>() > max
        {
            let Some(oldest) = state.segments.pop_front() else {
                break;
            };
            let _ = fs::remove_file(segment_path(&self.dir, oldest.first));
            if oldest.last > state.acked {
                let first = oldest.first.max(state.acked + 1);
                tracing::warn!(
                    first,
                    last = oldest.last,
                    "the event outbox is full: unacknowledged events dropped"
                );
                self.metrics.events_lost.inc_by(oldest.last - first + 1);
                // The gap runs from the last acknowledged event, so that it also covers the
                // earlier gap events that may have been dropped with this segment.
                lose(state, state.acked + 1, oldest.last);
            }
        }
    }

    /// The control plane stored everything up to `seq`: whole segments up to it go. Blocking
    /// file I/O: run it off the async threads.
    pub fn ack(&self, seq: u64) {
        let mut state = self.state();
        if seq <= state.acked {
            return;
        }
        state.acked = seq;
        state.unmark();
        let mut done = Vec::new();
        while state.segments.len() > 1 && state.segments[0].last <= seq {
            done.extend(state.segments.pop_front());
        }
        // Files go after the lock is released: emitting (SMTP sessions) waits on it.
        drop(state);
        for s in done {
            let _ = fs::remove_file(segment_path(&self.dir, s.first));
        }
        // Not synced: after a crash the control plane deduplicates what is sent again.
        let _ = fs::write(self.dir.join("acked"), seq.to_string());
    }

    /// Up to `max` durable records from sequence `from` on, as the wire carries them, with no
    /// sequence missing: where the files lack some (`gap_record`), a gap record stands for
    /// them. `cursor` remembers where the last read ended, so reading on is not a rescan.
    pub fn read(
        &self,
        from: u64,
        max: usize,
        cursor: &mut Option<(u64, u64, u64)>,
    ) -> io::Result<Vec<pb::EventRecord>> {
        let written = *self.written.borrow();
        let segments: Vec<Segment> = self.state().segments.iter().copied().collect();
        let mut out = Vec::new();
        // The next sequence owed.
        let mut next = from;
        for segment in segments {
            if out.len() >= max || next > written {
                break;
            }
            if segment.last < next {
                continue;
            }
            // (segment, offset, next seq there) from the last read, if it ended where we start.
            let (offset, after) = match *cursor {
                Some((first, offset, at)) if first == segment.first && at <= next => {
                    (offset, at - 1)
                }
                _ => (0, segment.first - 1),
            };
            let path = segment_path(&self.dir, segment.first);
            let result = read_records(&path, offset, after, |record, end| {
                if record.seq > written {
                    return false;
                }
                if record.seq >= next {
                    if record.seq > next {
                        out.push(gap_record(next, record.seq - 1));
                    }
                    next = record.seq + 1;
                    *cursor = Some((segment.first, end, next));
                    out.push(record);
                }
                out.len() < max
            });
            match result {
                Ok((_, End::Stopped)) => {}
                Ok((_, End::Unreadable)) => {
                    // The segment holds sequences up to `last` that cannot be read: they are
                    // lost, and nothing more is appended behind the damage.
                    let last = segment.last.min(written);
                    if next <= last {
                        tracing::error!(
                            segment = segment.first,
                            first = next,
                            last,
                            "tracking events in the outbox cannot be read; they are lost"
                        );
                        self.metrics.events_lost.inc_by(last - next + 1);
                        out.push(gap_record(next, last));
                        next = last + 1;
                        self.seal(segment.first);
                    }
                }
                // Trimmed away meanwhile: the next segment has the rest.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Appends go to a new segment from now on (`first`'s holds a record that cannot be read).
    fn seal(&self, first: u64) {
        let mut state = self.state();
        if let Some(s) = state.segments.iter_mut().find(|s| s.first == first) {
            s.sealed = true;
        }
    }
}

fn lose(state: &mut State, first: u64, last: u64) {
    state.lost = Some(match state.lost {
        Some((a, b)) => (a.min(first), b.max(last)),
        None => (first, last),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_events::{Deleted, Event};

    fn event(n: u64) -> Event {
        Event::Deleted(Deleted {
            queue_id: format!("Q{n:040}"),
            dsn: false,
        })
    }

    async fn started(dir: &Path) -> Arc<Outbox> {
        let outbox = Outbox::open(dir, Arc::default()).unwrap();
        tokio::spawn(outbox.clone().run_writer());
        outbox
    }

    fn seqs(records: &[pb::EventRecord]) -> Vec<u64> {
        records.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn the_lag_is_the_age_of_the_oldest_unacknowledged_event_within_a_second() {
        let mut s = State {
            next_seq: 1,
            lost: None,
            segments: VecDeque::new(),
            acked: 0,
            marks: VecDeque::new(),
        };
        for (seq, at) in [(1, 0), (2, 500), (3, 1000), (4, 2500)] {
            s.next_seq = seq + 1;
            s.mark(seq, at);
        }
        assert_eq!(Vec::from(s.marks.clone()), [(1, 0), (3, 1000), (4, 2500)]);
        let front = |s: &State| s.marks.front().copied();
        s.acked = 1;
        s.unmark();
        assert_eq!(
            front(&s),
            Some((1, 0)),
            "2 was emitted within a second of 1"
        );
        s.acked = 2;
        s.unmark();
        assert_eq!(front(&s), Some((3, 1000)));
        s.acked = 3;
        s.unmark();
        assert_eq!(front(&s), Some((4, 2500)));
        s.acked = 4;
        s.unmark();
        assert_eq!(front(&s), None, "all acknowledged: no lag");
    }

    #[tokio::test]
    async fn events_persist_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = started(dir.path()).await;
        let epoch = outbox.epoch.clone();
        for n in 0..100 {
            outbox.emit(7, event(n));
        }
        outbox.settle(std::time::Duration::from_secs(5)).await;
        let all = outbox.read(1, 1000, &mut None).unwrap();
        assert_eq!(seqs(&all), (1..=100).collect::<Vec<_>>());
        assert_eq!(all[0].policy_version, 7);
        // Reading on from a cursor gives the same as reading afresh.
        let mut cursor = None;
        let first = outbox.read(1, 30, &mut cursor).unwrap();
        let next = outbox.read(31, 30, &mut cursor).unwrap();
        assert_eq!(seqs(&first), (1..=30).collect::<Vec<_>>());
        assert_eq!(seqs(&next), (31..=60).collect::<Vec<_>>());
        outbox.ack(60);
        let segments_after_ack = fs::read_dir(dir.path()).unwrap().count();
        drop(outbox);
        // A torn record at the end (a crash in a write) is cut at reopening.
        let last = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .max()
            .unwrap();
        OpenOptions::new()
            .append(true)
            .open(&last)
            .unwrap()
            .write_all(&[200, 0, 0, 0, 1, 2])
            .unwrap();
        // Another crash left a newer segment created but empty (or zero-filled).
        fs::write(segment_path(dir.path(), 1_000), [0u8; 64]).unwrap();
        let outbox = started(dir.path()).await;
        assert_eq!(outbox.epoch, epoch, "the epoch stays with the outbox");
        assert_eq!(outbox.acked(), 60);
        outbox.emit(7, event(100));
        outbox.settle(std::time::Duration::from_secs(5)).await;
        let rest = outbox.read(61, 1000, &mut None).unwrap();
        assert_eq!(seqs(&rest), (61..=101).collect::<Vec<_>>());
        // Acknowledging everything keeps the newest segment with what it holds.
        outbox.ack(101);
        outbox.emit(7, event(101));
        outbox.settle(std::time::Duration::from_secs(5)).await;
        let rest = outbox.read(102, 1000, &mut None).unwrap();
        assert_eq!(seqs(&rest), [102]);
        assert!(segments_after_ack > 2, "acknowledged segments went");
    }

    #[tokio::test]
    async fn a_full_outbox_drops_the_oldest_and_reports_the_gap() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = started(dir.path()).await;
        outbox.set_max_bytes(3 * SEGMENT_BYTES);
        for n in 0..400 {
            outbox.emit(1, event(n));
            if n % 50 == 0 {
                outbox.settle(std::time::Duration::from_secs(5)).await;
            }
        }
        outbox.settle(std::time::Duration::from_secs(5)).await;
        // The last trim's gap event is emitted after the write that trimmed.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        outbox.settle(std::time::Duration::from_secs(5)).await;
        assert!(outbox.bytes() <= 4 * SEGMENT_BYTES, "{}", outbox.bytes());
        let lost = outbox.metrics.events_lost.get();
        assert!(lost > 0);
        let records = outbox.read(1, 10_000, &mut None).unwrap();
        let gaps: Vec<(u64, u64)> = records
            .iter()
            .filter_map(|r| match &r.event {
                Some(pb::event_record::Event::OutboxGap(g)) => Some((g.first_seq, g.last_seq)),
                _ => None,
            })
            .collect();
        // Gaps run from the last acknowledged event (none here), so the newest covers them all.
        let newest = *gaps.last().expect("a gap event");
        assert_eq!(newest.0, 1, "{gaps:?}");
        let first_kept = records.iter().map(|r| r.seq).find(|s| *s > newest.1);
        assert!(
            newest.1 >= lost,
            "every lost event is in the gap: {gaps:?}, lost {lost}"
        );
        assert!(first_kept.is_some());
        // What is left is in order.
        let s = seqs(&records);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
    }

    #[tokio::test]
    async fn a_huge_event_is_cut_and_the_ones_after_it_arrive() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = started(dir.path()).await;
        outbox.emit(
            1,
            Event::TlsReportReceived(postern_events::TlsReportReceived {
                queue_id: "Q".into(),
                sender: "a@b".into(),
                report: "\u{fffd}".repeat(1_100_000 / 3 + 1),
            }),
        );
        for n in 0..10 {
            outbox.emit(1, event(n));
        }
        outbox.settle(std::time::Duration::from_secs(5)).await;
        let records = outbox.read(1, 1000, &mut None).unwrap();
        assert_eq!(seqs(&records), (1..=11).collect::<Vec<_>>());
        assert!(records[0].truncated && !records[1].truncated);
        let Some(pb::event_record::Event::TlsReportReceived(r)) = &records[0].event else {
            panic!("{:?}", records[0].event)
        };
        assert!(r.report.len() <= postern_events::MAX_REPORT);
    }

    #[tokio::test]
    async fn what_cannot_be_read_becomes_a_gap_and_appends_go_on_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = started(dir.path()).await;
        for n in 0..5 {
            outbox.emit(1, event(n));
        }
        outbox.settle(std::time::Duration::from_secs(5)).await;
        // Damage the third record's length: the rest of the segment cannot be read.
        let path = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&path).unwrap();
        let one = bytes.len() / 5;
        bytes[2 * one..2 * one + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        fs::write(&path, &bytes).unwrap();
        let records = outbox.read(1, 1000, &mut None).unwrap();
        assert_eq!(seqs(&records), [1, 2, 5]);
        let Some(pb::event_record::Event::OutboxGap(g)) = &records[2].event else {
            panic!("{:?}", records[2].event)
        };
        assert_eq!((g.first_seq, g.last_seq), (3, 5));
        // Reading again from after the gap finds nothing new: no record, no spin.
        assert!(outbox.read(6, 1000, &mut None).unwrap().is_empty());
        // New events go to a new segment and are read.
        outbox.emit(1, event(5));
        outbox.settle(std::time::Duration::from_secs(5)).await;
        let records = outbox.read(6, 1000, &mut None).unwrap();
        assert_eq!(seqs(&records), [6]);
        assert!(segment_path(dir.path(), 6).exists());
        assert_eq!(outbox.metrics.events_lost.get(), 3);
    }

    #[tokio::test]
    async fn sequences_missing_from_the_files_are_read_as_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = started(dir.path()).await;
        outbox.emit(1, event(0));
        outbox.settle(std::time::Duration::from_secs(5)).await;
        // As when the writer's queue was full: sequence 2 is handed out and never written.
        outbox.state().next_seq += 1;
        outbox.emit(1, event(2));
        outbox.settle(std::time::Duration::from_secs(5)).await;
        let records = outbox.read(1, 1000, &mut None).unwrap();
        assert_eq!(seqs(&records), [1, 2, 3]);
        assert!(matches!(
            &records[1].event,
            Some(pb::event_record::Event::OutboxGap(g)) if (g.first_seq, g.last_seq) == (2, 2)
        ));
    }
}
