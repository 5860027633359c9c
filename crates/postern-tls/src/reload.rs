//! A server certificate read from its files and read again when they change, so a renewal
//! (certbot, cert-manager) is picked up at the next handshake with no restart, and sessions in
//! flight keep the certificate they started with. The files are checked at most once a second;
//! a pair that does not load (a renewal half written, a key that does not match) is logged and
//! the previous certificate kept until the files change again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What the files looked like when last loaded (modification times and lengths).
type Stamp = Option<(SystemTime, u64, SystemTime, u64)>;

/// A server certificate that follows its PEM files; a rustls `ResolvesServerCert`.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    current: Arc<CertifiedKey>,
    stamp: Stamp,
    checked: Instant,
}

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let (c, k) = (std::fs::metadata(cert).ok()?, std::fs::metadata(key).ok()?);
    Some((c.modified().ok()?, c.len(), k.modified().ok()?, k.len()))
}

fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    certified_key(&read(cert)?, &read(key)?)
        .map_err(|e| format!("{} and {}: {e}", cert.display(), key.display()))
}

/// A chain and its key from PEM text; an error unless the key is the chain's.
pub fn certified_key(cert_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, String> {
    let chain = crate::files::ders(cert_pem);
    if chain.is_empty() {
        return Err("no certificate".into());
    }
    let key_der = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("private key: {e}"))?;
    let provider: &CryptoProvider = &rustls::crypto::aws_lc_rs::default_provider();
    CertifiedKey::from_der(chain, key_der, provider)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

impl ReloadingCert {
    /// Loads the pair now: a start with unusable files fails here, not at the first client.
    pub fn open(cert: &Path, key: &Path) -> Result<Arc<ReloadingCert>, String> {
        let stamp = stamp(cert, key);
        let current = load(cert, key)?;
        Ok(Arc::new(ReloadingCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            state: Mutex::new(State {
                current,
                stamp,
                checked: Instant::now(),
            }),
        }))
    }

    /// The newest certificate that loaded.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().expect("certificate lock");
        if state.checked.elapsed() >= CHECK_EVERY {
            state.checked = Instant::now();
            let now = stamp(&self.cert, &self.key);
            if now != state.stamp {
                match load(&self.cert, &self.key) {
                    Ok(key) => {
                        tracing::info!(cert = %self.cert.display(), "certificate reloaded");
                        state.current = key;
                        state.stamp = now;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "renewed certificate does not load; keeping the previous one")
                    }
                }
            }
        }
        state.current.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::Ca;

    #[test]
    fn a_renewal_is_picked_up_and_a_broken_one_ignored() {
        let dir = std::env::temp_dir().join(format!("postern-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("smtp.pem"), dir.join("smtp.key"));
        let ca = Ca::new("reload CA").unwrap();
        let write = |names: &[&str]| {
            let issued = ca.server(names).unwrap();
            std::fs::write(&key, issued.key_pem).unwrap();
            std::fs::write(&cert, issued.cert_pem).unwrap();
        };
        write(&["first.test"]);
        let r = ReloadingCert::open(&cert, &key).unwrap();
        let names = |k: &CertifiedKey, n: &str| crate::names::certificate_has_name(&k.cert[0], n);
        assert!(names(&r.current(), "first.test"));
        write(&["renewed.test"]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !names(&r.current(), "renewed.test") {
            assert!(Instant::now() < deadline, "the renewal was not picked up");
            std::thread::yield_now();
        }
        // Half a renewal (a new key, the old certificate) does not load; `current` then keeps
        // the working pair.
        let other = ca.server(&["other.test"]).unwrap();
        std::fs::write(&key, other.key_pem).unwrap();
        assert!(load(&cert, &key).is_err());
        assert!(names(&r.current(), "renewed.test"));
        assert!(ReloadingCert::open(&dir.join("missing.pem"), &key).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
