//! The last-known-good policy on disk: the snapshot as received (protobuf), written to a
//! temporary file, fsynced, renamed into place, and the directory fsynced, so a crash leaves
//! either the old file or the new one, never a torn one.

use std::fs;
use std::path::{Path, PathBuf};

use postern_proto::pb;
use prost::Message;

const FILE: &str = "last-known-good.pb";

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

pub fn save(dir: &Path, snapshot: &pb::Snapshot) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    postern_tls::files::write_durably(&path(dir), &snapshot.encode_to_vec(), 0o600)
}

/// The saved snapshot; `Ok(None)` when there is none.
pub fn load(dir: &Path) -> std::io::Result<Option<pb::Snapshot>> {
    match fs::read(path(dir)) {
        Ok(bytes) => pb::Snapshot::decode(bytes.as_slice())
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
