//! The crash-safe spool (PRODUCT.md 4). A message is one file: its envelope as one JSON line,
//! then the message as received (with our Received header first). It is written under
//! `incoming/`, fsynced, renamed into `queue/`, and `queue/` is fsynced, all before the 250.
//! On start, whatever is left in `incoming/` was never acknowledged and is removed; every file
//! in `queue/` is complete. Writes use std::fs on blocking threads, because tokio::fs can hide
//! ENOSPC (DESIGN.md "Traps"); a full disk anywhere on that path is `452 4.3.1`, any other
//! failure `451 4.3.0`. Directory fsyncs are shared by the messages that finish together (group
//! commit). Removals are not fsynced: one lost in a power cut delivers the message again, as
//! in Postfix, and costs no sync per delivered message.
//!
//! `POSTERN_SPOOL_FAULTS` (a comma-separated list of `state_write`, `remove`, `dsn`) makes
//! those steps fail as on a full disk: the seam the tests use to prove that such failures
//! never re-deliver what was delivered. Never set it in production.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

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

/// A message being received: a file under `incoming/`.
pub struct Incoming {
    file: Option<File>,
    tmp: PathBuf,
    done: PathBuf,
    /// The first error; later writes are skipped and `commit` reports it.
    error: Option<SpoolError>,
}

impl Incoming {
    /// Appends message bytes; errors are kept for `commit` so the session can read on to the
    /// end of DATA before replying.
    pub fn write(&mut self, bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if let Some(file) = self.file.as_mut()
            && let Err(e) = file.write_all(bytes)
        {
            self.error = Some(e.into());
        }
    }

    /// A message that could not even be started; `commit` reports `error`.
    pub fn failed(error: io::Error) -> Incoming {
        Incoming {
            file: None,
            tmp: PathBuf::new(),
            done: PathBuf::new(),
            error: Some(error.into()),
        }
    }

    /// Removes the partial file (a refused message).
    pub fn discard(mut self) {
        self.file = None;
        let _ = fs::remove_file(&self.tmp);
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        // Neither committed nor discarded (the session died): the file must not linger.
        if self.file.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[derive(Clone)]
pub struct Spool {
    incoming: PathBuf,
    queue: PathBuf,
    syncer: Arc<DirSync>,
    faults: Arc<Vec<Fault>>,
}

impl Spool {
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
        let syncer = Arc::new(DirSync::new(&queue)?);
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
            faults: Arc::new(faults),
        };
        let ids = spool.list()?;
        Ok((spool, ids))
    }

    /// Starts a message: its envelope line and `prefix` (the Received header) are written now.
    pub fn begin(&self, envelope: &Envelope, prefix: &[u8]) -> Incoming {
        let tmp = self.incoming.join(format!("{}.tmp", envelope.id));
        let done = self.queue.join(format!("{}.msg", envelope.id));
        let mut incoming = Incoming {
            file: None,
            tmp,
            done,
            error: None,
        };
        match File::create(&incoming.tmp) {
            Ok(file) => incoming.file = Some(file),
            Err(e) => incoming.error = Some(e.into()),
        }
        let mut line = serde_json::to_vec(envelope).expect("envelopes serialise");
        line.extend_from_slice(b"\n");
        incoming.write(&line);
        incoming.write(prefix);
        incoming
    }

    /// Makes the message durable: fsync, rename into the queue, fsync the queue directory.
    /// Only after this may the session answer 250.
    pub async fn commit(&self, mut incoming: Incoming) -> Result<(), SpoolError> {
        if let Some(e) = incoming.error.take() {
            incoming.discard();
            return Err(e);
        }
        let file = incoming.file.take().expect("an open file without an error");
        let (tmp, done) = (incoming.tmp.clone(), incoming.done.clone());
        let syncer = self.syncer.clone();
        // One blocking task for the whole commit: a thread handoff costs more than a rename.
        tokio::task::spawn_blocking(move || -> Result<(), SpoolError> {
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
        .map_err(|e| SpoolError::Io(io::Error::other(e.to_string())))?
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
        ids.sort();
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

    /// Replaces the delivery state of `id` durably (temporary file, fsync, rename, directory).
    pub async fn write_state<T: Serialize>(&self, id: &str, state: &T) -> Result<(), SpoolError> {
        self.fault(Fault::StateWrite)?;
        let bytes = serde_json::to_vec(state).expect("states serialise");
        let (tmp, done) = (
            self.queue.join(format!("{id}.state.tmp")),
            self.queue.join(format!("{id}.state")),
        );
        let syncer = self.syncer.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            let mut file = File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, &done)?;
            syncer.sync()
        })
        .await
        .map_err(|e| SpoolError::Io(io::Error::other(e.to_string())))??;
        Ok(())
    }

    /// Removes a message that needs nothing more (delivered, or bounced and reported).
    pub async fn remove(&self, id: &str) -> Result<(), SpoolError> {
        self.fault(Fault::Remove)?;
        let (msg, state) = (
            self.queue.join(format!("{id}.msg")),
            self.queue.join(format!("{id}.state")),
        );
        tokio::task::spawn_blocking(move || {
            // The message first: a state file without its message is ignored and cleaned up.
            fs::remove_file(&msg)?;
            match fs::remove_file(&state) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        })
        .await
        .map_err(|e| SpoolError::Io(io::Error::other(e.to_string())))??;
        Ok(())
    }

    /// The stored envelope of `id` and the message's size, without reading the message.
    pub fn read_envelope(&self, id: &str) -> io::Result<(Envelope, u64)> {
        use std::io::BufRead;
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
        let bytes = fs::read(self.queue.join(format!("{id}.msg")))?;
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

/// Group commit of the queue directory: each rename is counted, and an fsync of the directory
/// covers every rename counted before it started. A committer that finds its rename already
/// covered returns at once; the others take turns, so concurrent commits share one fsync.
struct DirSync {
    /// The queue directory, open for as long as the spool is (no path lookup per fsync).
    dir: File,
    renamed: AtomicU64,
    /// The count the last successful fsync covered.
    synced: std::sync::Mutex<u64>,
}

impl DirSync {
    fn new(dir: &Path) -> io::Result<DirSync> {
        Ok(DirSync {
            dir: File::open(dir)?,
            renamed: AtomicU64::new(0),
            synced: std::sync::Mutex::new(0),
        })
    }

    /// Makes every rename done so far by this thread durable (blocking).
    fn sync(&self) -> io::Result<()> {
        let mine = self.renamed.fetch_add(1, Ordering::SeqCst) + 1;
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        if *synced >= mine {
            return Ok(());
        }
        let covers = self.renamed.load(Ordering::SeqCst);
        self.dir.sync_all()?;
        *synced = covers;
        Ok(())
    }
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
}
