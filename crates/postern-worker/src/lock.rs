//! One process per spool directory: an exclusive lock on `<spool>/lock`, held for the process's
//! life (the OS releases it if the process dies, so a crash never leaves a stale lock).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

#[derive(Debug)]
pub struct SpoolLock {
    _file: File,
}

impl SpoolLock {
    pub fn acquire(dir: &Path) -> Result<SpoolLock, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create it: {e}"))?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(|e| format!("cannot open its lock file: {e}"))?;
        match file.try_lock() {
            Ok(()) => Ok(SpoolLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err("is in use by another postern worker".into()),
            Err(TryLockError::Error(e)) => Err(format!("cannot lock it: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = super::SpoolLock::acquire(dir.path()).unwrap();
        assert!(
            super::SpoolLock::acquire(dir.path())
                .unwrap_err()
                .contains("in use")
        );
        drop(first);
        super::SpoolLock::acquire(dir.path()).unwrap();
    }
}
