//! The message log: a message of up to `INLINE_BYTES` (nearly all mail) is appended to a shared
//! segment file `log/<n>.seg` rather than written as a file of its own, so the messages that
//! finish together share one fdatasync (group commit) and no file is created, synced and
//! removed per message. On this machine's disk that sync per message was most of a relay's cost.
//!
//! A record is: kind (u8), id length (u8), body length (u32 LE), CRC-32 of kind, id and body
//! (u32 LE), the id, the body. A `M` record is a message (its body in the spool file format:
//! envelope line, then the message); a `T` record (tombstone, empty body) says the message
//! left: delivered, bounced, or moved to a file of its own when its first delivery state was
//! written (`Spool::write_state`). A tombstone goes to the segment holding its message, so
//! each segment can be read, and deleted, on its own; it is not synced, like an unlink in
//! Postfix's queue: one lost in a power cut delivers the message again.
//!
//! Crash safety: a message is acknowledged only after an fdatasync that covers its record and
//! every byte before it, so whatever a crash can tear lies after the last acknowledged record.
//! At open each segment is read up to its first invalid record and cut there. A write that
//! fails (a full disk) is cut back at once, so no valid record ever follows a torn one; if even
//! the cut fails, the segment takes no more records. A segment with no message left is deleted
//! once it is not the one being appended to.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::group_sync::GroupSync;

/// Messages up to this size go to the log; larger ones get a file of their own (their sync is
/// small beside their size, and the log holds no more than this in memory per session).
pub(super) const INLINE_BYTES: usize = 256 * 1024;
/// A new segment is started past this size (small in unit tests, to test rotation).
const SEGMENT_BYTES: u64 = if cfg!(test) { 8192 } else { 64 * 1024 * 1024 };
const HEADER: usize = 10;
const MESSAGE: u8 = b'M';
const TOMBSTONE: u8 = b'T';

/// Where a message's body is.
#[derive(Debug, Clone, Copy)]
struct Loc {
    segment: u64,
    offset: u64,
    len: u32,
}

pub(super) struct Segment {
    sync: GroupSync,
}

impl Segment {
    /// Makes every record appended to it so far by this thread durable (blocking).
    pub(super) fn sync(&self) -> io::Result<()> {
        self.sync.sync()
    }

    fn file(&self) -> &File {
        self.sync.file()
    }
}

struct Meta {
    segment: Arc<Segment>,
    end: u64,
    live: usize,
    writable: bool,
}

struct Inner {
    active: u64,
    segments: HashMap<u64, Meta>,
    index: HashMap<String, Loc>,
}

pub(super) struct Log {
    dir: PathBuf,
    /// Synced when a segment is created: its name must be durable before a record in it is
    /// acknowledged.
    dir_file: File,
    inner: Mutex<Inner>,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:016}.seg"))
}

fn record(kind: u8, id: &str, body: &[u8]) -> io::Result<Vec<u8>> {
    let id_len = u8::try_from(id.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "queue id too long"))?;
    let body_len = u32::try_from(body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "record too long"))?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind]);
    crc.update(id.as_bytes());
    crc.update(body);
    let mut r = Vec::with_capacity(HEADER + id.len() + body.len());
    r.push(kind);
    r.push(id_len);
    r.extend_from_slice(&body_len.to_le_bytes());
    r.extend_from_slice(&crc.finalize().to_le_bytes());
    r.extend_from_slice(id.as_bytes());
    r.extend_from_slice(body);
    Ok(r)
}

/// What the segments on disk hold: each segment's number, where its valid records end and the
/// file (opened read-only), and the messages no tombstone has taken out.
struct Survey {
    segments: Vec<(u64, u64, File)>,
    index: HashMap<String, Loc>,
}

/// Reads every segment under `dir` without changing anything.
fn survey(dir: &Path) -> io::Result<Survey> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    let mut survey = Survey {
        segments: Vec::new(),
        index: HashMap::new(),
    };
    for n in numbers {
        let file = match File::open(segment_path(dir, n)) {
            // Emptied and deleted since the listing (another process's log).
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            file => file?,
        };
        let end = scan(&file, n, &mut survey.index)?;
        survey.segments.push((n, end, file));
    }
    Ok(survey)
}

/// Applies segment `n`'s valid records to `index`; where they end.
fn scan(file: &File, n: u64, index: &mut HashMap<String, Loc>) -> io::Result<u64> {
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let (mut end, mut body) = (0u64, Vec::new());
    loop {
        let mut header = [0u8; HEADER];
        if read_full(&mut reader, &mut header)? < HEADER {
            return Ok(end);
        }
        let (kind, id_len) = (header[0], header[1] as usize);
        let body_len = u32::from_le_bytes(header[2..6].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[6..10].try_into().expect("4 bytes"));
        if !(kind == MESSAGE || kind == TOMBSTONE) || body_len > INLINE_BYTES {
            return Ok(end);
        }
        let mut id = vec![0; id_len];
        body.resize(body_len, 0);
        if read_full(&mut reader, &mut id)? < id_len
            || read_full(&mut reader, &mut body)? < body_len
        {
            return Ok(end);
        }
        let mut check = crc32fast::Hasher::new();
        check.update(&[kind]);
        check.update(&id);
        check.update(&body);
        let Ok(id) = String::from_utf8(id) else {
            return Ok(end);
        };
        if check.finalize() != crc {
            return Ok(end);
        }
        let offset = end + (HEADER + id_len) as u64;
        end = offset + body_len as u64;
        if kind == MESSAGE {
            let len = body_len as u32;
            index.insert(
                id,
                Loc {
                    segment: n,
                    offset,
                    len,
                },
            );
        } else if index.get(&id).is_some_and(|l| l.segment == n) {
            index.remove(&id);
        }
    }
}

/// Reads until `buf` is full or the file ends; how much was read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The messages in the log under `dir` as a restart would find them, without changing
/// anything (for inspection, and tests that look at a spool another process holds).
pub(super) fn messages(dir: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let survey = survey(dir)?;
    // Opened during the survey, so readable even if deleted since.
    let files: HashMap<u64, File> = survey
        .segments
        .into_iter()
        .map(|(n, _, file)| (n, file))
        .collect();
    let mut out = Vec::new();
    for (id, loc) in survey.index {
        let file = &files[&loc.segment];
        let mut body = vec![0; loc.len as usize];
        file.read_exact_at(&mut body, loc.offset)?;
        out.push((id, body));
    }
    Ok(out)
}

impl Log {
    /// Opens the log under `dir`: cuts each segment after its last valid record, deletes the
    /// segments with no message left, and starts a new segment to append to.
    pub(super) fn open(dir: &Path) -> io::Result<Log> {
        fs::create_dir_all(dir)?;
        let dir_file = File::open(dir)?;
        let survey = survey(dir)?;
        let mut live: HashMap<u64, usize> = HashMap::new();
        for loc in survey.index.values() {
            *live.entry(loc.segment).or_default() += 1;
        }
        let mut segments = HashMap::new();
        let mut last = 0;
        for (n, end, _) in survey.segments {
            last = n;
            let path = segment_path(dir, n);
            let Some(&count) = live.get(&n) else {
                fs::remove_file(&path)?;
                continue;
            };
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            if file.metadata()?.len() > end {
                tracing::warn!(segment = %path.display(), end, "spool log cut after its last valid record");
                file.set_len(end)?;
            }
            let segment = Arc::new(Segment {
                sync: GroupSync::new(file, true),
            });
            segments.insert(
                n,
                Meta {
                    segment,
                    end,
                    live: count,
                    writable: true,
                },
            );
        }
        let log = Log {
            dir: dir.to_path_buf(),
            dir_file,
            inner: Mutex::new(Inner {
                active: last + 1,
                segments,
                index: survey.index,
            }),
        };
        let first = log.create(last + 1)?;
        log.lock().segments.insert(last + 1, first);
        Ok(log)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn create(&self, n: u64) -> io::Result<Meta> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(segment_path(&self.dir, n))?;
        self.dir_file.sync_all()?;
        Ok(Meta {
            segment: Arc::new(Segment {
                sync: GroupSync::new(file, true),
            }),
            end: 0,
            live: 0,
            writable: true,
        })
    }

    /// Appends message `id`; durable once the returned segment is synced.
    pub(super) fn append(&self, id: &str, body: &[u8]) -> io::Result<Arc<Segment>> {
        let record = record(MESSAGE, id, body)?;
        let mut inner = self.lock();
        let active = &inner.segments[&inner.active];
        // A segment whose sync failed is retired: what follows goes to a new one.
        if !active.writable || active.end >= SEGMENT_BYTES || active.segment.sync.poisoned() {
            let n = inner.active + 1;
            let meta = self.create(n)?;
            let old = inner.active;
            inner.segments.insert(n, meta);
            inner.active = n;
            if inner.segments[&old].live == 0 {
                self.delete(&mut inner, old);
            }
        }
        let n = inner.active;
        let meta = inner.segments.get_mut(&n).expect("the active segment");
        let offset = meta.end + (HEADER + id.len()) as u64;
        write_at(meta, &record)?;
        meta.live += 1;
        let segment = meta.segment.clone();
        let len = body.len() as u32;
        if let Some(old) = inner.index.insert(
            id.to_string(),
            Loc {
                segment: n,
                offset,
                len,
            },
        ) {
            // The same id twice (never made so): the newer record is the message.
            inner
                .segments
                .get_mut(&old.segment)
                .expect("a live segment")
                .live -= 1;
        }
        Ok(segment)
    }

    /// Takes message `id` out of the log; false when it is not in it. Fails when its
    /// tombstone cannot be written.
    pub(super) fn remove(&self, id: &str) -> io::Result<bool> {
        self.take(id, true)
    }

    /// Takes message `id` out of the log even when its tombstone cannot be written: for a
    /// message that now has a file of its own (the next open finds the file and drops the
    /// log's copy), or one that was never acknowledged (a failed sync: at worst it is found
    /// again after a restart and delivered, a duplicate of one the client was told to resend).
    pub(super) fn forget(&self, id: &str) {
        let _ = self.take(id, false);
    }

    fn take(&self, id: &str, tombstone_required: bool) -> io::Result<bool> {
        let mut inner = self.lock();
        let Some(loc) = inner.index.get(id).copied() else {
            return Ok(false);
        };
        let active = inner.active;
        let meta = inner
            .segments
            .get_mut(&loc.segment)
            .expect("a live segment");
        if meta.live == 1 && loc.segment != active {
            // Its last message: the segment goes, and no tombstone is needed.
            inner.index.remove(id);
            self.delete(&mut inner, loc.segment);
            return Ok(true);
        }
        let written = if meta.writable {
            write_at(meta, &record(TOMBSTONE, id, b"")?)
        } else {
            Err(io::Error::other(
                "the spool log segment takes no more records",
            ))
        };
        if let Err(e) = written
            && tombstone_required
        {
            return Err(e);
        }
        meta.live -= 1;
        inner.index.remove(id);
        Ok(true)
    }

    fn delete(&self, inner: &mut Inner, n: u64) {
        inner.segments.remove(&n);
        // Not synced: a segment that comes back after a power cut is read again, tombstones
        // and all.
        if let Err(e) = fs::remove_file(segment_path(&self.dir, n)) {
            tracing::warn!(segment = n, error = %e, "removing an empty spool log segment failed");
        }
    }

    /// The body of message `id`, if it is in the log.
    pub(super) fn read(&self, id: &str) -> io::Result<Option<Vec<u8>>> {
        let (segment, loc) = {
            let inner = self.lock();
            let Some(loc) = inner.index.get(id).copied() else {
                return Ok(None);
            };
            (inner.segments[&loc.segment].segment.clone(), loc)
        };
        let mut body = vec![0; loc.len as usize];
        segment.file().read_exact_at(&mut body, loc.offset)?;
        Ok(Some(body))
    }

    pub(super) fn ids(&self) -> Vec<String> {
        self.lock().index.keys().cloned().collect()
    }

    #[cfg(test)]
    fn segment_count(&self) -> usize {
        self.lock().segments.len()
    }
}

/// Writes `record` at the segment's end; a failed write is cut back so nothing valid ever
/// follows it, and a segment that cannot be cut takes no more records.
fn write_at(meta: &mut Meta, record: &[u8]) -> io::Result<()> {
    if let Err(e) = meta.segment.file().write_all_at(record, meta.end) {
        if meta.segment.file().set_len(meta.end).is_err() {
            meta.writable = false;
        }
        return Err(e);
    }
    meta.end += record.len() as u64;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn segments(dir: &Path) -> Vec<PathBuf> {
        let mut paths: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        paths.sort();
        paths
    }

    /// After a failed fsync, no commit whose bytes were written before the next good sync of
    /// the segment is acknowledged, though a later fsync would succeed; the segment is retired.
    #[test]
    fn a_failed_sync_refuses_every_commit_it_covered_and_retires_the_segment() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path()).unwrap();
        log.append("A", b"durable").unwrap().sync().unwrap();
        let b = log.append("B", b"in the failed range").unwrap();
        let c = log.append("C", b"also written before the failure").unwrap();
        b.sync
            .fail_next
            .store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(b.sync().is_err());
        assert!(
            c.sync().is_err(),
            "a later fsync that would succeed must not acknowledge C"
        );
        assert!(b.sync().is_err(), "nor B on a second try");
        let before = segments(dir.path()).len();
        let d = log.append("D", b"after").unwrap();
        assert!(!Arc::ptr_eq(&d, &c), "D goes to a new segment");
        d.sync().unwrap();
        assert_eq!(segments(dir.path()).len(), before + 1);
    }

    #[test]
    fn records_survive_a_reopen_and_tombstones_take_them_out() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path()).unwrap();
        log.append("A", b"first").unwrap().sync().unwrap();
        log.append("B", b"second").unwrap().sync().unwrap();
        assert!(log.remove("A").unwrap());
        assert!(!log.remove("A").unwrap());
        drop(log);
        let log = Log::open(dir.path()).unwrap();
        assert_eq!(log.ids(), ["B"]);
        assert_eq!(log.read("B").unwrap().unwrap(), b"second");
        assert_eq!(log.read("A").unwrap(), None);
    }

    #[test]
    fn a_torn_tail_is_cut_and_appends_go_on_after_the_last_valid_record() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path()).unwrap();
        log.append("A", b"kept").unwrap().sync().unwrap();
        log.append("B", b"torn").unwrap();
        drop(log);
        // A crash mid-record: the second record loses its last bytes, then garbage follows.
        let path = segments(dir.path()).pop().unwrap();
        let len = fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 2).unwrap();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[b'M', 1, 0, 0, 0, 0, 9, 9, 9, 9, b'X'])
            .unwrap();
        let log = Log::open(dir.path()).unwrap();
        assert_eq!(log.ids(), ["A"]);
        assert!(fs::metadata(&path).unwrap().len() < len);
        drop(log);
        let mut found = messages(dir.path()).unwrap();
        found.sort();
        assert_eq!(found, [("A".to_string(), b"kept".to_vec())]);
    }

    /// A power cut can leave a segment cut anywhere after its last sync: at every length, the
    /// records wholly before the cut are found, intact, and nothing else.
    #[test]
    fn a_cut_at_any_byte_keeps_exactly_the_whole_records_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path()).unwrap();
        let bodies: [&[u8]; 3] = [b"one", b"", b"three\r\n"];
        let mut ends = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            log.append(&format!("M{i}"), body).unwrap().sync().unwrap();
            ends.push(
                fs::metadata(segments(dir.path()).pop().unwrap())
                    .unwrap()
                    .len(),
            );
        }
        log.remove("M1").unwrap();
        let tombstoned = fs::metadata(segments(dir.path()).pop().unwrap())
            .unwrap()
            .len();
        drop(log);
        let whole = fs::read(segments(dir.path()).pop().unwrap()).unwrap();
        for cut in 0..=whole.len() {
            let copy = tempfile::tempdir().unwrap();
            fs::write(copy.path().join("0000000000000001.seg"), &whole[..cut]).unwrap();
            let mut found = messages(copy.path()).unwrap();
            found.sort();
            let expected: Vec<(String, Vec<u8>)> = (0..3)
                .filter(|&i| ends[i] <= cut as u64 && !(i == 1 && tombstoned <= cut as u64))
                .map(|i| (format!("M{i}"), bodies[i].to_vec()))
                .collect();
            assert_eq!(found, expected, "cut at {cut}");
        }
    }

    #[test]
    fn a_flipped_byte_ends_the_segment_there() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path()).unwrap();
        log.append("A", b"one").unwrap().sync().unwrap();
        log.append("B", b"two").unwrap().sync().unwrap();
        drop(log);
        let path = segments(dir.path()).pop().unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        assert_eq!(Log::open(dir.path()).unwrap().ids(), ["A"]);
    }

    #[test]
    fn segments_rotate_and_an_emptied_one_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path()).unwrap();
        let body = vec![b'x'; 3000];
        for id in ["A", "B", "C", "D", "E"] {
            log.append(id, &body).unwrap().sync().unwrap();
        }
        assert!(log.segment_count() >= 2);
        let before = segments(dir.path()).len();
        for id in ["A", "B", "C"] {
            log.remove(id).unwrap();
        }
        assert!(
            segments(dir.path()).len() < before,
            "the first segment stayed"
        );
        drop(log);
        let log = Log::open(dir.path()).unwrap();
        let mut ids = log.ids();
        ids.sort();
        assert_eq!(ids, ["D", "E"]);
        assert_eq!(log.read("E").unwrap().unwrap(), body);
    }

    #[test]
    fn a_segment_with_nothing_left_is_deleted_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path()).unwrap();
        log.append("A", b"a").unwrap().sync().unwrap();
        log.append("B", b"b").unwrap().sync().unwrap();
        log.remove("A").unwrap();
        log.remove("B").unwrap();
        drop(log);
        let _log = Log::open(dir.path()).unwrap();
        // Only the new, empty segment to append to.
        assert_eq!(segments(dir.path()).len(), 1);
    }
}
