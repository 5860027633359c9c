//! A small certificate authority (rcgen) for `postern pki`, `postern dev` and the tests: server
//! certificates with DNS and IP names (a certificate for `127.0.0.1` needs an IP SAN), and
//! client certificates with the clientAuth usage workers need.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// A certificate and its private key, in PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM.
    pub key_pem: String,
}

impl Issued {
    /// A self-signed server certificate for these names (what many MTAs present).
    pub fn self_signed(names: &[&str]) -> Result<Issued, rcgen::Error> {
        let params = named(names.first().copied().unwrap_or("postern"), names)?;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A certificate authority that issues server and client certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's self-signed certificate, PEM.
    pub cert_pem: String,
}

fn named(common_name: &str, names: &[&str]) -> Result<CertificateParams, rcgen::Error> {
    // rcgen turns names that parse as IP addresses into IP SANs, the rest into DNS SANs.
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    Ok(params)
}

impl Ca {
    /// A new CA with a fresh key and a self-signed certificate named `common_name`.
    pub fn new(common_name: &str) -> Result<Ca, rcgen::Error> {
        let mut params = named(common_name, &[])?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA saved by `postern pki init`, to issue more certificates.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Ca, rcgen::Error> {
        let key = KeyPair::from_pem(key_pem)?;
        Ok(Ca {
            issuer: Issuer::from_ca_cert_pem(cert_pem, key)?,
            cert_pem: cert_pem.to_string(),
        })
    }

    /// The CA's private key, PEM (`postern pki init` keeps it, mode 0600).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    fn issue(
        &self,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<Issued, rcgen::Error> {
        let mut params = named(names.first().copied().unwrap_or("postern"), names)?;
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A server certificate for these DNS names and IP addresses.
    pub fn server(&self, names: &[&str]) -> Result<Issued, rcgen::Error> {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate (clientAuth) for these names; a worker's id must be one of them.
    pub fn client(&self, names: &[&str]) -> Result<Issued, rcgen::Error> {
        self.issue(names, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// The files `postern pki` makes under its directory: the CA (its key never leaves it), the
/// control plane's certificate, and one client certificate per worker.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The CA certificate, `ca.pem`.
    pub ca: PathBuf,
    /// The CA's private key, `ca.key` (mode 0600).
    pub ca_key: PathBuf,
    /// The control plane's certificate, `control.pem`.
    pub control_cert: PathBuf,
    /// The control plane's private key, `control.key` (mode 0600).
    pub control_key: PathBuf,
    dir: PathBuf,
}

/// Why a `postern pki` command failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file `init` would write is already there (its path).
    #[error("{0} exists; refusing to overwrite it (move it away to start again)")]
    Exists(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory's path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Making or loading a certificate or key failed.
    #[error("{0}")]
    Certificate(#[from] rcgen::Error),
    /// The worker id is not a DNS-style name (letters, digits, `-` and `.`).
    #[error("'{0}' is not a worker id (letters, digits, '-' and '.', as in a DNS name)")]
    WorkerId(String),
}

impl Layout {
    /// The layout under `dir`; nothing is read or written.
    pub fn new(dir: &Path) -> Layout {
        Layout {
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            control_cert: dir.join("control.pem"),
            control_key: dir.join("control.key"),
            dir: dir.to_path_buf(),
        }
    }

    /// Worker `id`'s certificate and key.
    pub fn worker(&self, id: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("worker-{id}.pem")),
            self.dir.join(format!("worker-{id}.key")),
        )
    }

    /// `postern pki init`: a new CA and the control plane's certificate for `names` (the DNS
    /// names and IP addresses workers and API clients dial it by).
    pub fn init(&self, names: &[&str]) -> Result<(), PkiError> {
        for path in [
            &self.ca,
            &self.ca_key,
            &self.control_cert,
            &self.control_key,
        ] {
            if path.exists() {
                return Err(PkiError::Exists(path.display().to_string()));
            }
        }
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| PkiError::Io { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let ca = Ca::new("Postern CA")?;
        let control = ca.server(names)?;
        write_pair(&control, &self.control_cert, &self.control_key).map_err(io(&self.dir))?;
        crate::files::write_durably(&self.ca_key, ca.key_pem().as_bytes(), 0o600)
            .map_err(io(&self.ca_key))?;
        crate::files::write_durably(&self.ca, ca.cert_pem.as_bytes(), 0o644)
            .map_err(io(&self.ca))?;
        Ok(())
    }

    /// `postern pki control`: a new certificate for the control plane, for `names`, from the CA
    /// of `init` (a renewal; the running control plane serves it from the next handshake).
    pub fn issue_control(&self, names: &[&str]) -> Result<(), PkiError> {
        let ca = self.ca()?;
        let issued = ca.server(names)?;
        write_pair(&issued, &self.control_cert, &self.control_key).map_err(|source| PkiError::Io {
            path: self.control_cert.display().to_string(),
            source,
        })
    }

    fn ca(&self) -> Result<Ca, PkiError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| PkiError::Io {
                path: path.display().to_string(),
                source,
            })
        };
        Ok(Ca::load(&read(&self.ca)?, &read(&self.ca_key)?)?)
    }

    /// `postern pki worker ID`: a client certificate whose DNS name is the worker id. Issuing
    /// again replaces it (a renewal; the worker picks it up at its next connection).
    pub fn issue_worker(&self, id: &str) -> Result<(PathBuf, PathBuf), PkiError> {
        let valid = !id.is_empty()
            && id.len() <= 253
            && !id.starts_with(['-', '.'])
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !valid {
            return Err(PkiError::WorkerId(id.to_string()));
        }
        let issued = self.ca()?.client(&[id])?;
        let (cert, key) = self.worker(id);
        write_pair(&issued, &cert, &key).map_err(|source| PkiError::Io {
            path: cert.display().to_string(),
            source,
        })?;
        Ok((cert, key))
    }
}

/// The key first (0600), then the certificate.
fn write_pair(issued: &Issued, cert: &Path, key: &Path) -> std::io::Result<()> {
    crate::files::write_durably(key, issued.key_pem.as_bytes(), 0o600)?;
    crate::files::write_durably(cert, issued.cert_pem.as_bytes(), 0o644)
}

/// The files `postern dev` uses, under `<data-dir>/tls`.
#[derive(Debug, Clone)]
pub struct DevPki {
    /// The dev CA certificate, `ca.pem`.
    pub ca: PathBuf,
    /// The control plane's certificate, `control.pem`.
    pub control_cert: PathBuf,
    /// The control plane's private key, `control.key`.
    pub control_key: PathBuf,
    /// The dev worker's client certificate, `worker.pem`.
    pub worker_cert: PathBuf,
    /// The dev worker's private key, `worker.key`.
    pub worker_key: PathBuf,
    /// The SMTP listener's server certificate, `smtp.pem`.
    pub smtp_cert: PathBuf,
    /// The SMTP listener's private key, `smtp.key`.
    pub smtp_key: PathBuf,
}

impl DevPki {
    /// The worker id the dev worker certificate is issued for.
    pub const WORKER_ID: &'static str = "dev-worker";

    /// The paths under `dir`; nothing is read or written.
    pub fn paths(dir: &Path) -> DevPki {
        DevPki {
            ca: dir.join("ca.pem"),
            control_cert: dir.join("control.pem"),
            control_key: dir.join("control.key"),
            worker_cert: dir.join("worker.pem"),
            worker_key: dir.join("worker.key"),
            smtp_cert: dir.join("smtp.pem"),
            smtp_key: dir.join("smtp.key"),
        }
    }

    /// Creates the dev CA and certificates in `dir` unless they are already there.
    pub fn ensure(dir: &Path, smtp_hostname: &str) -> std::io::Result<DevPki> {
        let paths = DevPki::paths(dir);
        if paths.ca.exists() {
            return Ok(paths);
        }
        std::fs::create_dir_all(dir)?;
        let err = |e: rcgen::Error| std::io::Error::other(e.to_string());
        let ca = Ca::new("Postern dev CA").map_err(err)?;
        let control = ca.server(&["localhost", "127.0.0.1", "::1"]).map_err(err)?;
        let worker = ca.client(&[Self::WORKER_ID]).map_err(err)?;
        let smtp = ca
            .server(&[smtp_hostname, "localhost", "127.0.0.1", "::1"])
            .map_err(err)?;
        for (issued, cert, key) in [
            (&control, &paths.control_cert, &paths.control_key),
            (&worker, &paths.worker_cert, &paths.worker_key),
            (&smtp, &paths.smtp_cert, &paths.smtp_key),
        ] {
            crate::files::write_durably(cert, issued.cert_pem.as_bytes(), 0o644)?;
            crate::files::write_durably(key, issued.key_pem.as_bytes(), 0o600)?;
        }
        // The CA goes last: its presence means the set is complete.
        crate::files::write_durably(&paths.ca, ca.cert_pem.as_bytes(), 0o644)?;
        Ok(paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::ders;
    use crate::names::certificate_has_name;

    #[test]
    fn issued_certificates_carry_their_names() {
        let ca = Ca::new("test").unwrap();
        let server = ca.server(&["localhost", "127.0.0.1"]).unwrap();
        let cert = &ders(&server.cert_pem)[0];
        assert!(certificate_has_name(cert, "localhost"));
        assert!(certificate_has_name(cert, "127.0.0.1"));
        assert!(!certificate_has_name(cert, "other.example"));
        let worker = ca.client(&["worker-7"]).unwrap();
        assert!(certificate_has_name(&ders(&worker.cert_pem)[0], "worker-7"));
        assert!(!certificate_has_name(
            &ders(&worker.cert_pem)[0],
            "worker-8"
        ));
        assert!(certificate_has_name(cert, "LOCALHOST."));
        // A wildcard name claims no worker id, not even its own spelling.
        let wildcard = ca.client(&["*.workers.example"]).unwrap();
        let wildcard = &ders(&wildcard.cert_pem)[0];
        for id in ["w1.workers.example", "*.workers.example", "workers.example"] {
            assert!(!certificate_has_name(wildcard, id), "{id}");
        }
    }

    #[test]
    fn dev_pki_is_made_once_with_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let first = DevPki::ensure(dir.path(), "mx.test").unwrap();
        let ca = std::fs::read(&first.ca).unwrap();
        DevPki::ensure(dir.path(), "mx.test").unwrap();
        assert_eq!(std::fs::read(&first.ca).unwrap(), ca);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&first.worker_key)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn pki_init_then_workers_from_the_saved_ca() {
        let dir = std::env::temp_dir().join(format!("postern-pki-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let layout = Layout::new(&dir);
        layout.init(&["control.example", "10.0.0.2"]).unwrap();
        assert!(matches!(
            layout.init(&["control.example"]),
            Err(PkiError::Exists(_))
        ));
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        #[cfg(unix)]
        for key in [&layout.ca_key, &layout.control_key] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", key.display());
        }
        let roots = ders(&read(&layout.ca));
        let control = ders(&read(&layout.control_cert));
        assert!(certificate_has_name(&control[0], "control.example"));
        assert!(certificate_has_name(&control[0], "10.0.0.2"));
        let (cert, key) = layout.issue_worker("worker-1").unwrap();
        let chain = ders(&read(&cert));
        assert!(certificate_has_name(&chain[0], "worker-1"));
        // A client certificate the saved CA signed: it verifies as one (clientAuth).
        assert_eq!(
            crate::clientcert::check_chain(Some(&chain), &roots),
            postern_policy::Certificate::Verified
        );
        assert!(read(&key).contains("PRIVATE KEY"));
        for bad in ["", "-w", "w 1", "w/1", "*.w"] {
            assert!(
                matches!(layout.issue_worker(bad), Err(PkiError::WorkerId(_))),
                "{bad:?}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
