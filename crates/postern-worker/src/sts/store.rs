//! The durable MTA-STS cache: one JSON file per domain under `<spool>/mta-sts/`, written
//! durably (write, fsync, rename, fsync the directory) on a blocking thread, read at start.
//! Policies survive a restart, so a worker that restarts during a DNS or HTTPS outage keeps
//! enforcing what it knew.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use postern_sts::Cached;

pub fn dir(spool: &Path) -> PathBuf {
    spool.join("mta-sts")
}

/// Every cached policy found (a file that does not parse is ignored and later replaced).
pub fn load(dir: &Path) -> HashMap<String, Cached> {
    let mut out = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(domain) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        match std::fs::read(&path).map(|b| serde_json::from_slice::<Cached>(&b)) {
            Ok(Ok(c)) => {
                out.insert(domain.to_string(), c);
            }
            _ => {
                tracing::warn!(path = %path.display(), "ignoring an unreadable MTA-STS cache file")
            }
        }
    }
    out
}

/// Saves `cached` for `domain` (a normalised domain name: no `/`).
pub fn save(dir: &Path, domain: &str, cached: &Cached) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_vec(cached).expect("a policy serialises");
    postern_tls::files::write_durably(&dir.join(format!("{domain}.json")), &json, 0o600)
}
