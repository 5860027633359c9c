//! Fetches `https://mta-sts.<domain>/.well-known/mta-sts.txt` (RFC 8461 3.3): at the addresses
//! our own resolver found (the `delivery.nameservers`), the certificate checked for that name
//! against webpki's roots and the CAs of `/v1/trust`, no redirects, only a 200, within a time
//! limit and 64 KiB. Each failure is sorted into its TLS-RPT result type.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use postern_sts::Policy;
use rustls::pki_types::CertificateDer;

/// RFC 8461 3.3 allows senders to stop reading a policy at 64 KiB.
pub const MAX_POLICY_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// No answer, a refused connection, a status other than 200, a redirect, too large...
    #[error("MTA-STS policy fetch failed: {0}")]
    Fetch(String),
    /// The HTTPS server's certificate is not valid for `mta-sts.<domain>`.
    #[error("MTA-STS policy host certificate not valid: {0}")]
    WebPki(String),
    /// Fetched, but not a valid policy.
    #[error("{0}")]
    Invalid(String),
}

impl FetchError {
    /// The TLS-RPT (RFC 8460 4.3.2.3) result type.
    pub fn result_type(&self) -> postern_sts::ResultType {
        use postern_sts::ResultType as R;
        match self {
            FetchError::Fetch(_) => R::StsPolicyFetchError,
            FetchError::WebPki(_) => R::StsWebpkiInvalid,
            FetchError::Invalid(_) => R::StsPolicyInvalid,
        }
    }
}

/// Whether `ip` is on the public Internet: not loopback, private (RFC 1918), shared (RFC 6598),
/// link-local, unique-local (RFC 4193), unspecified, broadcast or multicast.
pub fn is_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// The addresses of `host` our fetches and POSTs may reach: public ones, and those in
/// `allowed` (`delivery.fetch_networks`). What a domain publishes must not make a worker
/// fetch from, or post to, the operator's own network (or the cloud's metadata service).
pub fn reachable(
    host: &str,
    ips: &[IpAddr],
    allowed: &[ipnet::IpNet],
) -> Result<Vec<IpAddr>, String> {
    let (ok, refused): (Vec<IpAddr>, Vec<IpAddr>) = ips
        .iter()
        .map(|ip| ip.to_canonical())
        .partition(|ip| is_public(*ip) || allowed.iter().any(|n| n.contains(ip)));
    if ok.is_empty() && !refused.is_empty() {
        let list: Vec<String> = refused.iter().map(IpAddr::to_string).collect();
        return Err(format!(
            "{host} has only addresses that are not public ({}); delivery.fetch_networks must list them",
            list.join(", ")
        ));
    }
    Ok(ok)
}

/// The policy text and its parse, from `addrs` of `mta-sts.<domain>` on `port`.
pub async fn fetch(
    domain: &str,
    addrs: &[IpAddr],
    port: u16,
    extra_roots: &[CertificateDer<'static>],
    limit: Duration,
) -> Result<(String, Policy), FetchError> {
    let host = format!("mta-sts.{domain}");
    let pinned: Vec<SocketAddr> = addrs.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
    let client = https_client(&host, &pinned, extra_roots, limit).map_err(FetchError::Fetch)?;
    let url = if port == 443 {
        format!("https://{host}/.well-known/mta-sts.txt")
    } else {
        format!("https://{host}:{port}/.well-known/mta-sts.txt")
    };
    let mut response = client.get(&url).send().await.map_err(|e| sort(&url, &e))?;
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        return Err(FetchError::Fetch(format!(
            "{url}: HTTP {status} (only 200 is a policy)"
        )));
    }
    // RFC 8461 3.3: text/plain only, so a file some user uploaded to a shared web host is not
    // taken for the domain's policy.
    let media = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = media.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("text/plain") {
        return Err(FetchError::Fetch(format!(
            "{url}: Content-Type {media:?}, not text/plain"
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| sort(&url, &e))? {
        if body.len() + chunk.len() > MAX_POLICY_BYTES {
            return Err(FetchError::Fetch(format!(
                "{url}: larger than {MAX_POLICY_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(body)
        .map_err(|_| FetchError::Invalid(format!("invalid MTA-STS policy: {url} is not UTF-8")))?;
    let policy = Policy::parse(&text).map_err(|e| FetchError::Invalid(e.to_string()))?;
    Ok((text, policy))
}

/// An HTTPS client for `host` only, at `pinned` (what our resolver found): certificates
/// checked against webpki's roots and the CAs of `/v1/trust`, no redirects, no proxy, `limit`
/// for the whole request. Also posts TLS-RPT reports.
pub fn https_client(
    host: &str,
    pinned: &[SocketAddr],
    extra_roots: &[CertificateDer<'static>],
    limit: Duration,
) -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for ca in extra_roots {
        let _ = roots.add(ca.clone());
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .https_only(true)
        .no_proxy()
        .timeout(limit)
        .resolve_to_addrs(host, pinned)
        .build()
        .map_err(|e| e.to_string())
}

/// A failed request: a certificate rustls refused is `WebPki`, anything else `Fetch`.
fn sort(url: &str, e: &reqwest::Error) -> FetchError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(rustls::Error::InvalidCertificate(why)) = rustls_error(err) {
            return FetchError::WebPki(format!("{url}: {why:?}"));
        }
        source = err.source();
    }
    let kind = if e.is_timeout() {
        "timed out"
    } else {
        "failed"
    };
    FetchError::Fetch(format!("{url}: {kind}: {}", chain(e)))
}

/// The rustls error in `err`, looking through `io::Error`s (each layer of the HTTP client
/// wraps the one below in its own, and `io::Error::source` skips the wrapped error itself).
fn rustls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(e) = err.downcast_ref::<rustls::Error>() {
        return Some(e);
    }
    let inner = err.downcast_ref::<std::io::Error>()?.get_ref()?;
    rustls_error(inner)
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_unless_listed() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "192.0.2.1",
            "8.8.8.8",
            "100.128.0.1",
            "2001:db8::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
        let ips: Vec<IpAddr> = ["127.0.0.1", "10.0.0.1"]
            .iter()
            .map(|i| i.parse().unwrap())
            .collect();
        let why = reachable("mta-sts.evil.test", &ips, &[]).unwrap_err();
        assert!(why.contains("127.0.0.1, 10.0.0.1"), "{why}");
        let allowed = vec!["127.0.0.0/8".parse().unwrap()];
        assert_eq!(reachable("h", &ips, &allowed).unwrap(), [ips[0]]);
        let mixed: Vec<IpAddr> = ["10.0.0.1", "192.0.2.7"]
            .iter()
            .map(|i| i.parse().unwrap())
            .collect();
        assert_eq!(
            reachable("h", &mixed, &[]).unwrap(),
            [mixed[1]],
            "the public one is kept"
        );
    }
}
