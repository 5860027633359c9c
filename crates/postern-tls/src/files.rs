//! Reading PEM files given on the command line, with errors that name the flag and the file.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {flag} {path}: {source}")]
    Read {
        flag: String,
        path: String,
        source: std::io::Error,
    },
    #[error("{flag} {path}: {detail}")]
    Invalid {
        flag: String,
        path: String,
        detail: String,
    },
}

/// A PEM file's text, checked to hold what `flag` needs.
pub struct PemFile {
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
