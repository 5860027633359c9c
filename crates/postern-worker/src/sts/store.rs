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

/// Every cached policy found still valid at `now` (unix seconds); expired ones are deleted, a
/// file that does not parse is ignored (and replaced by the next fetch).
pub fn load(dir: &Path, now: u64) -> HashMap<String, Cached> {
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
            Ok(Ok(c)) if c.valid_at(now) => {
                out.insert(domain.to_string(), c);
            }
            Ok(Ok(_)) => {
                let _ = std::fs::remove_file(&path);
            }
            _ => {
                tracing::warn!(path = %path.display(), "ignoring an unreadable MTA-STS cache file")
            }
        }
    }
    out
}

/// Saves `cached` for `domain` (a normalised domain name; anything that could name another
/// file is refused, though normalisation already rules it out).
pub fn save(dir: &Path, domain: &str, cached: &Cached) -> std::io::Result<()> {
    let path = path_of(dir, domain).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{domain:?} is not a domain name"),
        )
    })?;
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_vec(cached).expect("a policy serialises");
    postern_tls::files::write_durably(&path, &json, 0o600)
}

/// The file of `domain`'s policy; `None` for a name that could name another file.
fn path_of(dir: &Path, domain: &str) -> Option<PathBuf> {
    let bad = domain.is_empty() || domain.starts_with('.') || domain.contains(['/', '\\', '\0']);
    (!bad).then(|| dir.join(format!("{domain}.json")))
}

/// Forgets `domain`'s policy (it expired); a file already gone is fine.
pub fn remove(dir: &Path, domain: &str) {
    if let Some(path) = path_of(dir, domain) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_sts::Policy;

    fn cached(id: &str) -> Cached {
        let text = "version: STSv1\nmode: enforce\nmx: *.example.net\nmax_age: 86400\n";
        Cached {
            id: id.into(),
            policy: Policy::parse(text).unwrap(),
            text: text.into(),
            fetched_at: 1_765_000_000,
        }
    }

    #[test]
    fn saved_policies_are_loaded_again_and_replaced_whole() {
        let spool = tempfile::tempdir().unwrap();
        let d = dir(spool.path());
        assert!(load(&d, 0).is_empty(), "no directory yet: nothing cached");
        save(&d, "example.net", &cached("1")).unwrap();
        save(&d, "example.org", &cached("7")).unwrap();
        save(&d, "example.net", &cached("2")).unwrap();
        // A file that does not parse is skipped, not fatal.
        std::fs::write(d.join("broken.example.json"), b"{").unwrap();
        let now = cached("1").fetched_at;
        let loaded = load(&d, now);
        assert_eq!(loaded.len(), 2, "{loaded:?}");
        assert_eq!(loaded["example.net"], cached("2"));
        assert_eq!(loaded["example.org"].id, "7");
        // Expired policies are of no use after a restart: gone from memory and disk.
        assert!(load(&d, now + 86_400).is_empty());
        assert!(!d.join("example.net.json").exists());
    }

    #[test]
    fn a_name_that_is_not_a_domain_writes_nothing() {
        let spool = tempfile::tempdir().unwrap();
        let d = dir(spool.path());
        for bad in ["", "../escape", ".hidden", "a/b", "a\\b"] {
            assert!(save(&d, bad, &cached("1")).is_err(), "{bad:?}");
        }
        assert!(!spool.path().join("escape.json").exists());
    }
}
