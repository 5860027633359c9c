//! Group commit: each write to a file (a segment of the log, or the queue directory for
//! renames) is counted, and one sync of the file covers every write counted before it started.
//! A caller that finds its write already covered returns at once; the others take turns, so
//! the writes that finish together share one sync.
//!
//! A failed sync poisons the file: after an fsync error the kernel may have dropped the dirty
//! pages and report the next fsync as a success (PostgreSQL's "fsyncgate"), so no write made
//! before or after it is ever reported durable by a log segment again: the log retires the
//! segment and moves on to a new one.

use std::fs::File;
use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub(super) struct GroupSync {
    /// Held open for as long as the spool is (no path lookup per sync).
    file: File,
    /// `fdatasync` (a log segment) rather than `fsync` (a directory).
    data_only: bool,
    written: AtomicU64,
    /// The count the last successful sync covered.
    synced: Mutex<u64>,
    /// A sync failed: nothing is durable through this file any more.
    poisoned: AtomicBool,
    /// The fault-injection seam of the tests: the next sync fails as a disk error would.
    #[cfg(test)]
    pub(super) fail_next: AtomicBool,
}

impl GroupSync {
    pub(super) fn new(file: File, data_only: bool) -> GroupSync {
        GroupSync {
            file,
            data_only,
            written: AtomicU64::new(0),
            synced: Mutex::new(0),
            poisoned: AtomicBool::new(false),
            #[cfg(test)]
            fail_next: AtomicBool::new(false),
        }
    }

    /// Whether a sync of this file failed (it must take no more writes).
    pub(super) fn poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
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
        if self.poisoned() {
            return Err(io::Error::other(
                "an earlier sync of this file failed: nothing written since its last good sync is durable",
            ));
        }
        let covers = self.written.load(Ordering::SeqCst);
        #[cfg(test)]
        if self.fail_next.swap(false, Ordering::SeqCst) {
            self.poisoned.store(true, Ordering::SeqCst);
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        let result = if self.data_only {
            self.file.sync_data()
        } else {
            self.file.sync_all()
        };
        if let Err(e) = result {
            // A segment is retired for good; the queue directory has no successor, and each
            // rename it covers is taken back by its own commit.
            if self.data_only {
                self.poisoned.store(true, Ordering::SeqCst);
            }
            return Err(e);
        }
        *synced = covers;
        Ok(())
    }
}
