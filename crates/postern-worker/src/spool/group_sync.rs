//! Group commit: each write to a file (a segment of the log, or the queue directory for
//! renames) is counted, and one sync of the file covers every write counted before it started.
//! A caller that finds its write already covered returns at once; the others take turns, so
//! the writes that finish together share one sync.

use std::fs::File;
use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

pub(super) struct GroupSync {
    /// Held open for as long as the spool is (no path lookup per sync).
    file: File,
    /// `fdatasync` (a log segment) rather than `fsync` (a directory).
    data_only: bool,
    written: AtomicU64,
    /// The count the last successful sync covered.
    synced: Mutex<u64>,
}

impl GroupSync {
    pub(super) fn new(file: File, data_only: bool) -> GroupSync {
        GroupSync {
            file,
            data_only,
            written: AtomicU64::new(0),
            synced: Mutex::new(0),
        }
    }

    pub(super) fn file(&self) -> &File {
        &self.file
    }

    /// Makes every write this thread finished before the call durable (blocking).
    pub(super) fn sync(&self) -> io::Result<()> {
        let mine = self.written.fetch_add(1, Ordering::SeqCst) + 1;
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        if *synced >= mine {
            return Ok(());
        }
        let covers = self.written.load(Ordering::SeqCst);
        if self.data_only {
            self.file.sync_data()?;
        } else {
            self.file.sync_all()?;
        }
        *synced = covers;
        Ok(())
    }
}
