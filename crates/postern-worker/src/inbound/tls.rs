//! TLS server configurations for STARTTLS, one per (strength, client certificate request) and
//! per policy version, picked by the client's connect-time decision before `accept`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use postern_policy::{CompiledPolicy, ConnectVerdict};
use postern_tls::clientcert::RequestClientCert;
use postern_tls::reload::ReloadingCert;
use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use std::path::Path;

/// Configurations by (256-bit suites only, client certificate requested).
type ByKind = HashMap<(bool, bool), Arc<ServerConfig>>;

pub struct TlsConfigs {
    /// The STARTTLS certificate, re-read from its files when they change.
    cert: Arc<ReloadingCert>,
    /// For one policy version at a time.
    cache: Mutex<(u64, ByKind)>,
}

impl TlsConfigs {
    /// From the worker's `--tls-cert`/`--tls-key` files (a pair that does not load fails
    /// here, not at the first STARTTLS).
    pub fn new(cert: &Path, key: &Path) -> Result<TlsConfigs, String> {
        let this = TlsConfigs {
            cert: ReloadingCert::open(cert, key)?,
            cache: Mutex::new((0, HashMap::new())),
        };
        this.build(false, false, false, &[])?;
        Ok(this)
    }

    /// A configuration; `roots` are the trusted CAs whose names go with a certificate request.
    fn build(
        &self,
        high_only: bool,
        prefer_256: bool,
        request_cert: bool,
        roots: &[CertificateDer<'_>],
    ) -> Result<Arc<ServerConfig>, String> {
        let provider = Arc::new(postern_tls::suites::provider(high_only, prefer_256));
        let builder = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?;
        let builder = if request_cert {
            builder.with_client_cert_verifier(Arc::new(RequestClientCert::new(roots)))
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_cert_resolver(self.cert.clone());
        // docs/src/policy.md#rules-and-matching: with any enabled high rule the server prefers
        // 256-bit suites.
        config.ignore_client_order = prefer_256;
        // SMTP clients do not resume sessions; tickets would cost a write after every handshake.
        config.send_tls13_tickets = 0;
        Ok(Arc::new(config))
    }

    /// The configuration for a session with this connect-time verdict.
    pub fn for_session(
        &self,
        policy: &CompiledPolicy,
        connect: &ConnectVerdict<'_>,
    ) -> Result<Arc<ServerConfig>, String> {
        let (high_only, request_cert) = (connect.high_only, connect.request_client_cert);
        let mut cache = self.cache.lock().expect("tls cache lock");
        if cache.0 != policy.version {
            *cache = (policy.version, HashMap::new());
        }
        if let Some(c) = cache.1.get(&(high_only, request_cert)) {
            return Ok(c.clone());
        }
        let config = self.build(
            high_only,
            connect.prefer_256,
            request_cert,
            &policy.policy.trust.certificates(),
        )?;
        cache.1.insert((high_only, request_cert), config.clone());
        Ok(config)
    }
}
