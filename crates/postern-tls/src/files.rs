//! Reading PEM files given on the command line, with errors that name the flag and the file;
//! and the one way Postern writes a small file that must survive a crash (keys, tokens, the
//! last-known-good policy, the outbox epoch).

use std::io::Write;
use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a PEM file given by a command-line flag cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("cannot read {flag} {path}: {source}")]
    Read {
        /// The command-line flag that named the file (`--tls-cert`).
        flag: String,
        /// The file's path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but does not hold what the flag needs.
    #[error("{flag} {path}: {detail}")]
    Invalid {
        /// The command-line flag that named the file (`--tls-cert`).
        flag: String,
        /// The file's path.
        path: String,
        /// What is wrong with its contents.
        detail: String,
    },
}

/// A PEM file's text, checked to hold what `flag` needs.
pub struct PemFile {
    /// The whole PEM text.
    pub text: String,
}

fn read(flag: &str, path: &Path) -> Result<String, FileError> {
    std::fs::read_to_string(path).map_err(|source| FileError::Read {
        flag: flag.into(),
        path: path.display().to_string(),
        source,
    })
}

fn invalid(flag: &str, path: &Path, detail: impl Into<String>) -> FileError {
    FileError::Invalid {
        flag: flag.into(),
        path: path.display().to_string(),
        detail: detail.into(),
    }
}

/// Reads a PEM file holding one or more certificates.
pub fn certificates(flag: &str, path: &Path) -> Result<PemFile, FileError> {
    let text = read(flag, path)?;
    let certs: Vec<CertificateDer<'_>> = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(flag, path, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(flag, path, "holds no PEM certificate"));
    }
    Ok(PemFile { text })
}

/// Reads a PEM file holding a private key.
pub fn private_key(flag: &str, path: &Path) -> Result<PemFile, FileError> {
    let text = read(flag, path)?;
    PrivateKeyDer::from_pem_slice(text.as_bytes())
        .map_err(|e| invalid(flag, path, format!("holds no usable private key: {e}")))?;
    Ok(PemFile { text })
}

/// The DER certificates of a PEM text already checked by `certificates`.
pub fn ders(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .collect()
}

/// Writes `contents` to `path` so that a crash leaves the old file or the new one, never a torn
/// one, and the new one survives power loss: a temporary file, fsync, rename, then the
/// directory. The temporary file is created exclusively (`O_EXCL`) with `mode`, so nothing
/// planted at its name (a symlink to another file) is ever followed or written through, and a
/// secret is never readable by others, not even for a moment; the rename replaces whatever was
/// at `path` rather than writing through it.
pub fn write_durably(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod durable_tests {
    use super::*;

    #[test]
    fn replaces_atomically_and_never_writes_through_a_planted_link() {
        let dir = std::env::temp_dir().join(format!("postern-durable-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        write_durably(&path, b"one", 0o600).unwrap();
        write_durably(&path, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            // A symlink planted at the temporary name is replaced, not followed.
            let victim = dir.join("victim");
            std::fs::write(&victim, b"untouched").unwrap();
            let _ = std::fs::remove_file(dir.join("token.tmp"));
            std::os::unix::fs::symlink(&victim, dir.join("token.tmp")).unwrap();
            write_durably(&path, b"three", 0o600).unwrap();
            assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
            assert_eq!(std::fs::read(&path).unwrap(), b"three");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
