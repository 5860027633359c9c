//! The crash-safe spool (docs/src/smtp.md). A message is its envelope as one JSON line, then the
//! message as received (with our Received header first), and it is durable before the 250.
//! - Up to `log::INLINE_BYTES` (nearly all mail) it is held in memory while it arrives and then
//!   appended to the shared message log (`log.rs`), whose syncs the messages that finish
//!   together share.
//! - A larger message is written as it arrives to a file under `incoming/`, fsynced, renamed
//!   into `queue/`, and `queue/` is fsynced (shared by the renames that finish together too).
//! - A message's delivery state is a file `queue/<id>.state`; when the first one is written a
//!   message still in the log moves to `queue/<id>.msg` first, so the log only holds mail that
//!   has not been tried yet or went out at the first attempt, and a segment rarely lives long.
//!   A message found both in the log and in `queue/` (a move cut short) is the file.
//!
//! On start, whatever is left in `incoming/` was never acknowledged and is removed; every file
//! in `queue/` is complete. Writes use std::fs on blocking threads, because tokio::fs can hide
//! ENOSPC (docs/src/design.md "Traps"); a full disk anywhere on that path is `452 4.3.1`, any other
//! failure `451 4.3.0`. Removals are not synced: one lost in a power cut delivers the message
//! again, as in Postfix, and costs no sync per delivered message.
//!
//! `POSTERN_SPOOL_FAULTS` (a comma-separated list of `state_write`, `remove`, `dsn`) makes
//! those steps fail as on a full disk: the seam the tests use to prove that such failures
//! never re-deliver what was delivered. Never set it in production.

mod group_sync;
mod log;

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use group_sync::GroupSync;
use log::Log;

/// Who sent what to whom, and how (what tracking and delivery need later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: String,
    pub sender: String,
    pub recipients: Vec<String>,
    /// RFC 3339.
    pub received_at: String,
    pub client_ip: String,
    pub helo: String,
    /// e.g. `TLSv1.3 TLS_AES_256_GCM_SHA384`, or null in plaintext.
    pub tls: Option<String>,
    pub policy_version: u64,
    pub smtputf8: bool,
    pub eight_bit: bool,
    /// `TLS-Required: No` (RFC 8689): delivered at most at `may`, no MTA-STS. Set only on
    /// TLS-RPT reports the control plane submits; a client's header is not honoured (a sender
    /// must not be able to lower the operator's policy).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls_optional: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool's disk is full")]
    Full,
    #[error("spool write failed: {0}")]
    Io(io::Error),
    /// The message is in `queue/` but its directory could not be synced nor the file removed:
    /// it must be delivered (a duplicate at worst, if the client sends it again), never left
    /// unscheduled.
    #[error("spool directory sync failed, message kept: {0}")]
    Kept(io::Error),
}

/// A step `POSTERN_SPOOL_FAULTS` can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    StateWrite,
    Remove,
    Dsn,
}

impl Fault {
    fn from_env() -> Vec<Fault> {
        std::env::var("POSTERN_SPOOL_FAULTS")
            .unwrap_or_default()
            .split(',')
            .filter_map(|name| match name.trim() {
                "state_write" => Some(Fault::StateWrite),
                "remove" => Some(Fault::Remove),
                "dsn" => Some(Fault::Dsn),
                _ => None,
            })
            .collect()
    }
}

impl From<io::Error> for SpoolError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::StorageFull {
            SpoolError::Full
        } else {
            SpoolError::Io(e)
        }
    }
}

/// A message being received: in memory while it is small enough for the log, then a file
/// under `incoming/`.
pub struct Incoming {
    id: String,
    /// The message so far, or (once it outgrew the log) what is not yet written to its file.
    inline: Vec<u8>,
    /// Larger than the log takes: the message goes to a file of its own (`flush`).
    spilled: bool,
    file: Option<File>,
    tmp: PathBuf,
    done: PathBuf,
    /// The first error; later writes are skipped and `commit` reports it.
    error: Option<SpoolError>,
}

impl Incoming {
    /// Appends message bytes, in memory (no I/O: an async session may call it); errors are
    /// kept for `commit` so the session can read on to the end of DATA before replying.
    pub fn write(&mut self, bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        self.inline.extend_from_slice(bytes);
        if self.inline.len() > log::INLINE_BYTES {
            self.spilled = true;
        }
    }

    /// Whether enough is held in memory to be written out now (`flush`).
    pub fn wants_flush(&self) -> bool {
        self.spilled && self.inline.len() >= log::INLINE_BYTES
    }

    /// Writes what is held to the message's own file (blocking: run it off the async threads).
    pub fn flush_blocking(&mut self) {
        if !self.spilled || self.error.is_some() || self.inline.is_empty() {
            return;
        }
        if self.file.is_none() {
            match File::create(&self.tmp) {
                Ok(file) => self.file = Some(file),
                Err(e) => {
                    self.error = Some(e.into());
                    return;
                }
            }
        }
        if let Some(file) = self.file.as_mut()
            && let Err(e) = file.write_all(&self.inline)
        {
            self.error = Some(e.into());
        }
        self.inline.clear();
    }

    /// `flush_blocking` on a blocking thread: a session holds at most 256 KiB of a large
    /// message, and its writes never stall the runtime.
    pub async fn flush(mut self) -> Incoming {
        let id = self.id.clone();
        match tokio::task::spawn_blocking(move || {
            self.flush_blocking();
            self
        })
        .await
        {
            Ok(incoming) => incoming,
            // The task cannot panic; if it ever did, the message is refused at commit.
            Err(e) => {
                tracing::error!(%id, error = %e, "spool write task failed");
                Incoming {
                    id,
                    inline: Vec::new(),
                    spilled: false,
                    file: None,
                    tmp: PathBuf::new(),
                    done: PathBuf::new(),
                    error: Some(SpoolError::Io(io::Error::other("spool write task failed"))),
                }
            }
        }
    }

    /// Removes the partial file, if there is one (a refused message). Blocking.
    pub fn discard(mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        // Neither committed nor discarded (the session died): the file must not linger. The
        // removal runs on a blocking thread when there is a runtime to run it.
        if self.file.take().is_some() {
            let tmp = std::mem::take(&mut self.tmp);
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(move || fs::remove_file(tmp))),
                Err(_) => drop(fs::remove_file(tmp)),
            }
        }
    }
}

#[derive(Clone)]
pub struct Spool {
    incoming: PathBuf,
    /// `<spool>/queue`.
    queue: PathBuf,
    /// Group commit of the renames into `queue/`.
    syncer: Arc<GroupSync>,
    log: Arc<Log>,
    faults: Arc<Vec<Fault>>,
}

impl Spool {
    /// The spool directory (other durable state lives beside the queue: MTA-STS policies).
    pub fn root(&self) -> &Path {
        self.queue.parent().unwrap_or(&self.queue)
    }

    /// Opens the spool under `dir`, removing what was never acknowledged, and returns the ids
    /// of the messages in the queue. Must run inside a tokio runtime.
    pub fn open(dir: &Path) -> io::Result<(Spool, Vec<String>)> {
        let incoming = dir.join("incoming");
        let queue = dir.join("queue");
        fs::create_dir_all(&incoming)?;
        fs::create_dir_all(&queue)?;
        for entry in fs::read_dir(&incoming)? {
            fs::remove_file(entry?.path())?;
        }
        File::open(&incoming)?.sync_all()?;
        for entry in fs::read_dir(&queue)? {
            let path = entry?.path();
            // A delivery state that was being replaced when the process died, or one whose
            // message was removed just before (the message goes first).
            let orphan = path.extension().is_some_and(|e| e == "state")
                && !path.with_extension("msg").exists();
            if path.extension().is_some_and(|e| e == "tmp") || orphan {
                fs::remove_file(&path)?;
            }
        }
        let syncer = Arc::new(GroupSync::new(File::open(&queue)?, false));
        let log = Arc::new(Log::open(&dir.join("log"))?);
        let faults = Fault::from_env();
        if !faults.is_empty() {
            tracing::warn!(
                ?faults,
                "POSTERN_SPOOL_FAULTS is set: these spool steps fail"
            );
        }
        let spool = Spool {
            incoming,
            queue,
            syncer,
            log,
            faults: Arc::new(faults),
        };
        for id in spool.files()? {
            // A move out of the log cut short: the file is complete, the log's copy goes
            // (even on a full disk: then it is only forgotten until the next start).
            spool.log.forget(&id);
        }
        let ids = spool.list()?;
        Ok((spool, ids))
    }

    /// The messages under `dir` as `open` would find them, read without changing anything (for
    /// inspection, and tests that look at a spool another process holds).
    pub fn messages(dir: &Path) -> io::Result<Vec<(Envelope, Vec<u8>)>> {
        let mut found = std::collections::BTreeMap::new();
        for (id, bytes) in log::messages(&dir.join("log"))? {
            found.insert(id, bytes);
        }
        for entry in fs::read_dir(dir.join("queue"))? {
            let path = entry?.path();
            if let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".msg"))
            {
                match fs::read(&path) {
                    Ok(bytes) => found.insert(id.to_string(), bytes),
                    // Removed since the listing (delivered).
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
            }
        }
        found
            .into_values()
            .map(|bytes| split(&bytes).map(|(envelope, body)| (envelope, body.to_vec())))
            .collect()
    }

    /// Starts a message with its envelope line and `prefix` (the Received header).
    pub fn begin(&self, envelope: &Envelope, prefix: &[u8]) -> Incoming {
        let tmp = self.incoming.join(format!("{}.tmp", envelope.id));
        let done = self.queue.join(format!("{}.msg", envelope.id));
        let mut incoming = Incoming {
            id: envelope.id.clone(),
            inline: Vec::new(),
            spilled: false,
            file: None,
            tmp,
            done,
            error: None,
        };
        let mut line = serde_json::to_vec(envelope).expect("envelopes serialise");
        line.extend_from_slice(b"\n");
        incoming.write(&line);
        incoming.write(prefix);
        incoming
    }

    /// Makes the message durable: appended to the log and synced, or (a large one) its file
    /// fsynced, renamed into the queue and the queue directory fsynced. Only after this may the
    /// session answer 250.
    pub async fn commit(&self, mut incoming: Incoming) -> Result<(), SpoolError> {
        if incoming.spilled {
            incoming = incoming.flush().await;
        }
        if let Some(e) = incoming.error.take() {
            tokio::task::spawn_blocking(move || incoming.discard());
            return Err(e);
        }
        let Some(file) = incoming.file.take() else {
            let (log, id, bytes) = (
                self.log.clone(),
                incoming.id.clone(),
                std::mem::take(&mut incoming.inline),
            );
            return blocking(move || {
                let segment = log.append(&id, &bytes)?;
                if let Err(e) = segment.sync() {
                    // Not known to be durable, so not acknowledged: it must not be delivered
                    // either (the client sends it again).
                    log.forget(&id);
                    return Err(e.into());
                }
                Ok(())
            })
            .await;
        };
        let (tmp, done) = (incoming.tmp.clone(), incoming.done.clone());
        let syncer = self.syncer.clone();
        // One blocking task for the whole commit: a thread handoff costs more than a rename.
        blocking(move || {
            let renamed = file.sync_all().and_then(|()| {
                drop(file);
                fs::rename(&tmp, &done)
            });
            if let Err(e) = renamed {
                let _ = fs::remove_file(&tmp);
                return Err(e.into());
            }
            let Err(e) = syncer.sync() else {
                return Ok(());
            };
            // Renamed but not durable: take it back (the client is told to try again), or,
            // if even that fails, keep it for delivery.
            match fs::remove_file(&done) {
                Ok(()) => Err(e.into()),
                Err(_) => Err(SpoolError::Kept(e)),
            }
        })
        .await
    }

    /// Fails as a full disk would when `POSTERN_SPOOL_FAULTS` names `fault`.
    pub fn fault(&self, fault: Fault) -> Result<(), SpoolError> {
        if self.faults.contains(&fault) {
            return Err(SpoolError::Full);
        }
        Ok(())
    }

    /// The ids of every queued message.
    pub fn list(&self) -> io::Result<Vec<String>> {
        let mut ids = self.files()?;
        ids.extend(self.log.ids());
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// The ids of the messages in files of their own.
    fn files(&self) -> io::Result<Vec<String>> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.queue)? {
            let path = entry?.path();
            if let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".msg"))
            {
                ids.push(id.to_string());
            }
        }
        Ok(ids)
    }

    /// The delivery state kept beside message `id` (`<id>.state`), if any.
    pub fn read_state<T: serde::de::DeserializeOwned>(&self, id: &str) -> io::Result<Option<T>> {
        match fs::read(self.queue.join(format!("{id}.state"))) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(io::Error::other),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the delivery state of `id` durably (temporary file, fsync, rename, directory);
    /// a message still in the log moves to a file of its own first.
    pub async fn write_state<T: Serialize>(&self, id: &str, state: &T) -> Result<(), SpoolError> {
        self.fault(Fault::StateWrite)?;
        let bytes = serde_json::to_vec(state).expect("states serialise");
        let (spool, id) = (self.clone(), id.to_string());
        blocking(move || {
            let moved = spool.log.read(&id)?;
            if let Some(message) = &moved {
                spool.write_file(&format!("{id}.msg"), message)?;
            }
            spool.write_file(&format!("{id}.state"), &bytes)?;
            spool.syncer.sync()?;
            if moved.is_some() {
                spool.log.forget(&id);
            }
            Ok(())
        })
        .await
    }

    /// Writes `queue/<name>` durably but for the directory (temporary file, fsync, rename).
    fn write_file(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let (tmp, done) = (
            self.queue.join(format!("{name}.tmp")),
            self.queue.join(name),
        );
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, &done)
    }

    /// Removes a message that needs nothing more (delivered, or bounced and reported).
    pub async fn remove(&self, id: &str) -> Result<(), SpoolError> {
        self.fault(Fault::Remove)?;
        let (log, id) = (self.log.clone(), id.to_string());
        let (msg, state) = (
            self.queue.join(format!("{id}.msg")),
            self.queue.join(format!("{id}.state")),
        );
        blocking(move || {
            let logged = log.remove(&id)?;
            // The message first: a state file without its message is ignored and cleaned up.
            for (path, required) in [(msg, !logged), (state, false)] {
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound || required => {
                        return Err(e.into());
                    }
                    _ => {}
                }
            }
            Ok(())
        })
        .await
    }

    /// The stored envelope of `id` and the message's size, without reading a message file.
    pub fn read_envelope(&self, id: &str) -> io::Result<(Envelope, u64)> {
        use std::io::BufRead;
        if let Some(bytes) = self.log.read(id)? {
            let (envelope, body) = split(&bytes)?;
            return Ok((envelope, body.len() as u64));
        }
        let file = File::open(self.queue.join(format!("{id}.msg")))?;
        let total = file.metadata()?.len();
        let mut line = Vec::new();
        io::BufReader::new(file).read_until(b'\n', &mut line)?;
        let envelope = serde_json::from_slice(&line).map_err(io::Error::other)?;
        Ok((envelope, total.saturating_sub(line.len() as u64)))
    }

    /// What a delivery round starts from, in one visit to the disk: the envelope, the delivery
    /// state if any, and the message itself when it is at most `body_limit` bytes (a larger one
    /// is read when a connection is ready for it).
    pub fn load<T: serde::de::DeserializeOwned>(
        &self,
        id: &str,
        body_limit: u64,
    ) -> io::Result<(Envelope, Option<Vec<u8>>, Option<T>)> {
        use std::io::Read;
        if let Some(bytes) = self.log.read(id)? {
            let (envelope, body) = split(&bytes)?;
            let body = (body.len() as u64 <= body_limit).then(|| body.to_vec());
            // A message in the log has no state: its first one moves it out.
            return Ok((envelope, body, None));
        }
        let mut file = File::open(self.queue.join(format!("{id}.msg")))?;
        let total = file.metadata()?.len();
        let (envelope, body) = if total <= body_limit {
            let mut bytes = Vec::with_capacity(total as usize);
            file.read_to_end(&mut bytes)?;
            let (envelope, body) = split(&bytes)?;
            (envelope, Some(body.to_vec()))
        } else {
            drop(file);
            (self.read_envelope(id)?.0, None)
        };
        Ok((envelope, body, self.read_state(id)?))
    }

    /// The stored envelope and message of `id`.
    pub fn read(&self, id: &str) -> io::Result<(Envelope, Vec<u8>)> {
        let bytes = match self.log.read(id)? {
            Some(bytes) => bytes,
            None => fs::read(self.queue.join(format!("{id}.msg")))?,
        };
        let (envelope, body) = split(&bytes)?;
        Ok((envelope, body.to_vec()))
    }
}

/// A spool file's envelope line, parsed, and the message after it.
fn split(bytes: &[u8]) -> io::Result<(Envelope, &[u8])> {
    let end = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| io::Error::other("no envelope line"))?;
    let envelope = serde_json::from_slice(&bytes[..end]).map_err(io::Error::other)?;
    Ok((envelope, &bytes[end + 1..]))
}

/// Runs spool work on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, SpoolError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SpoolError::Io(io::Error::other(e.to_string())))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(id: &str) -> Envelope {
        Envelope {
            id: id.into(),
            sender: "a@b".into(),
            recipients: vec!["c@d".into()],
            received_at: "2026-11-29T00:00:00Z".into(),
            client_ip: "192.0.2.1".into(),
            helo: "client".into(),
            tls: None,
            policy_version: 3,
            smtputf8: false,
            eight_bit: false,
            tls_optional: false,
        }
    }

    #[tokio::test]
    async fn committed_messages_survive_and_partial_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, ids) = Spool::open(dir.path()).unwrap();
        assert!(ids.is_empty());
        let mut m = spool.begin(&envelope("A"), b"Received: x\r\n");
        m.write(b"Subject: hi\r\n\r\nbody\r\n");
        spool.commit(m).await.unwrap();
        let mut partial = spool.begin(&envelope("B"), b"");
        partial.write(b"half");
        std::mem::forget(partial); // as if the process died here
        let refused = spool.begin(&envelope("C"), b"");
        refused.discard();
        // A state left behind by a removal cut short.
        fs::write(dir.path().join("queue/GONE.state"), b"{}").unwrap();
        let (spool, ids) = Spool::open(dir.path()).unwrap();
        assert_eq!(ids, ["A"]);
        let (env, message) = spool.read("A").unwrap();
        assert_eq!(env, envelope("A"));
        assert_eq!(message, b"Received: x\r\nSubject: hi\r\n\r\nbody\r\n");
        assert_eq!(
            fs::read_dir(dir.path().join("incoming")).unwrap().count(),
            0
        );
        assert!(!dir.path().join("queue/GONE.state").exists());
    }

    async fn queue(spool: &Spool, id: &str, body: &[u8]) {
        let mut m = spool.begin(&envelope(id), b"");
        m.write(body);
        spool.commit(m).await.unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// `write` does no I/O (a session calls it on the runtime); a large message reaches its
    /// file only through `flush`, at most `INLINE_BYTES` held in memory at a time.
    #[tokio::test]
    async fn a_large_message_is_written_in_flushes_off_the_session() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let mut incoming = spool.begin(&envelope("BIG"), b"");
        let tmp = dir.path().join("incoming/BIG.tmp");
        let chunk = vec![b'y'; 64 * 1024];
        let mut flushes = 0;
        for _ in 0..32 {
            incoming.write(&chunk);
            assert!(incoming.inline.len() <= log::INLINE_BYTES + chunk.len());
            if incoming.wants_flush() {
                assert_eq!(
                    tmp.exists(),
                    flushes > 0,
                    "the file appears at the first flush"
                );
                incoming = incoming.flush().await;
                flushes += 1;
                assert!(incoming.inline.is_empty());
            }
        }
        assert!(flushes >= 7, "{flushes}");
        spool.commit(incoming).await.unwrap();
        assert_eq!(spool.read_envelope("BIG").unwrap().1, 32 * 64 * 1024);
        // Dropped without a commit (the session died): its file goes.
        let mut dead = spool.begin(&envelope("DEAD"), b"");
        dead.write(&vec![b'z'; log::INLINE_BYTES + 1]);
        let dead = dead.flush().await;
        let dead_tmp = dir.path().join("incoming/DEAD.tmp");
        assert!(dead_tmp.exists());
        drop(dead);
        let gone = async {
            while dead_tmp.exists() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), gone)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn small_messages_go_to_the_log_and_large_ones_to_files() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let large = vec![b'x'; log::INLINE_BYTES + 1];
        queue(&spool, "SMALL", b"small\r\n").await;
        queue(&spool, "LARGE", &large).await;
        assert_eq!(names(&dir.path().join("queue")), ["LARGE.msg"]);
        assert_eq!(spool.list().unwrap(), ["LARGE", "SMALL"]);
        assert_eq!(spool.read("SMALL").unwrap().1, b"small\r\n");
        assert_eq!(
            spool.read_envelope("LARGE").unwrap(),
            (envelope("LARGE"), large.len() as u64)
        );
        let (env, body, state) = spool.load::<serde_json::Value>("SMALL", 3).unwrap();
        assert_eq!((env, body, state), (envelope("SMALL"), None, None));
        drop(spool);
        let (spool, ids) = Spool::open(dir.path()).unwrap();
        assert_eq!(ids, ["LARGE", "SMALL"]);
        let mut found = Spool::messages(dir.path()).unwrap();
        found.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        assert_eq!(
            found,
            [
                (envelope("LARGE"), large),
                (envelope("SMALL"), b"small\r\n".to_vec())
            ]
        );
        spool.remove("SMALL").await.unwrap();
        spool.remove("LARGE").await.unwrap();
        assert!(spool.list().unwrap().is_empty());
        assert!(Spool::open(dir.path()).unwrap().1.is_empty());
    }

    #[tokio::test]
    async fn a_first_state_moves_the_message_out_of_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        queue(&spool, "A", b"body").await;
        spool
            .write_state("A", &serde_json::json!({"tries": 1}))
            .await
            .unwrap();
        assert_eq!(names(&dir.path().join("queue")), ["A.msg", "A.state"]);
        assert!(spool.log.ids().is_empty());
        drop(spool);
        let (spool, ids) = Spool::open(dir.path()).unwrap();
        assert_eq!(ids, ["A"]);
        let (env, body, state) = spool.load::<serde_json::Value>("A", 4096).unwrap();
        assert_eq!(env, envelope("A"));
        assert_eq!(body.unwrap(), b"body");
        assert_eq!(state.unwrap()["tries"], 1);
    }

    #[tokio::test]
    async fn a_move_cut_short_leaves_one_message_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        queue(&spool, "A", b"body").await;
        // The file was written, then the process died before the log's tombstone.
        let bytes = spool.log.read("A").unwrap().unwrap();
        fs::write(dir.path().join("queue/A.msg"), &bytes).unwrap();
        drop(spool);
        let (spool, ids) = Spool::open(dir.path()).unwrap();
        assert_eq!(ids, ["A"]);
        assert!(spool.log.ids().is_empty());
        spool.remove("A").await.unwrap();
        assert!(Spool::open(dir.path()).unwrap().1.is_empty());
    }
}
