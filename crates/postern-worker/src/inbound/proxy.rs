//! The PROXY protocol (HAProxy's, versions 1 and 2) on the SMTP listener: behind an L4 load
//! balancer every connection starts with a header naming the real client, and every rule,
//! limit, Received header and tracking record uses that address. A listener with it enabled
//! accepts connections only from the configured networks (anyone else could name any address)
//! and requires the header; `LOCAL` (the balancer's own health checks) keeps the socket's peer.
//! Parsing is the `proxy-header` crate's.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use proxy_header::{ParseConfig, ProxyHeader};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The header must arrive within this (HAProxy sends it with the connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A version 2 header with the TLVs a balancer adds stays well under this; more is refused.
const MAX_HEADER: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    #[error("PROXY protocol from {0}, which is not in --smtp-proxy-protocol-from")]
    Untrusted(IpAddr),
    #[error("no PROXY protocol header within {} s", HEADER_TIMEOUT.as_secs())]
    Timeout,
    #[error("invalid PROXY protocol header: {0}")]
    Invalid(String),
    #[error("the connection closed before its PROXY protocol header ended")]
    Closed,
}

/// Who the connection is for, and what followed the header.
#[derive(Debug, PartialEq, Eq)]
pub struct Proxied {
    pub client: IpAddr,
    /// Bytes read past the header (a client that spoke before the greeting).
    pub early: Vec<u8>,
}

/// Whether `peer` may send headers on a listener that accepts them from `from`.
pub fn trusted(from: &[IpNet], peer: IpAddr) -> bool {
    from.iter().any(|n| n.contains(&peer))
}

/// Reads the header from `stream` (connected from `peer`) within `limit`.
pub async fn read_header(
    stream: &mut TcpStream,
    peer: SocketAddr,
    from: &[IpNet],
    limit: Duration,
) -> Result<Proxied, ProxyError> {
    let peer_ip = peer.ip().to_canonical();
    if !trusted(from, peer_ip) {
        return Err(ProxyError::Untrusted(peer_ip));
    }
    let mut buf = Vec::with_capacity(256);
    let read = async {
        loop {
            if let Some(done) = parse(&buf, peer_ip)? {
                return Ok(done);
            }
            if buf.len() >= MAX_HEADER {
                return Err(ProxyError::Invalid("header too long".into()));
            }
            let mut chunk = [0u8; 512];
            let want = (MAX_HEADER - buf.len()).min(chunk.len());
            match stream.read(&mut chunk[..want]).await {
                Ok(0) | Err(_) => return Err(ProxyError::Closed),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .map_err(|_| ProxyError::Timeout)?
}

/// A complete header in `buf`, `None` when more is needed.
pub fn parse(buf: &[u8], peer: IpAddr) -> Result<Option<Proxied>, ProxyError> {
    let config = ParseConfig {
        include_tlvs: false,
        ..ParseConfig::default()
    };
    match ProxyHeader::parse(buf, config) {
        Ok((header, used)) => Ok(Some(Proxied {
            client: header
                .proxied_address()
                .map_or(peer, |a| a.source.ip().to_canonical()),
            early: buf[used..].to_vec(),
        })),
        // A version 1 header is one line: once it has ended, nothing more can complete it.
        Err(proxy_header::Error::BufferTooShort)
            if buf.starts_with(b"PROXY") && buf.contains(&b'\n') =>
        {
            Err(ProxyError::Invalid("malformed version 1 header".into()))
        }
        Err(proxy_header::Error::BufferTooShort) => Ok(None),
        Err(e) => Err(ProxyError::Invalid(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxy_header::ProxiedAddress;

    const BALANCER: &str = "10.0.0.5";

    fn v2(source: &str) -> Vec<u8> {
        let source: SocketAddr = source.parse().unwrap();
        let destination = if source.is_ipv4() {
            "10.0.0.9:25"
        } else {
            "[2001:db8::9]:25"
        };
        let header =
            ProxyHeader::with_address(ProxiedAddress::stream(source, destination.parse().unwrap()));
        let mut buf = Vec::new();
        header.encode_v2(&mut buf).unwrap();
        buf
    }

    #[test]
    fn v1_and_v2_name_the_client_and_local_keeps_the_peer() {
        let peer: IpAddr = BALANCER.parse().unwrap();
        let v1 = b"PROXY TCP4 192.0.2.7 10.0.0.9 40000 25\r\nEHLO x\r\n";
        let got = parse(v1, peer).unwrap().unwrap();
        assert_eq!(got.client, "192.0.2.7".parse::<IpAddr>().unwrap());
        assert_eq!(got.early, b"EHLO x\r\n");
        let got = parse(&v2("[2001:db8::7]:40000"), peer).unwrap().unwrap();
        assert_eq!(got.client, "2001:db8::7".parse::<IpAddr>().unwrap());
        assert!(got.early.is_empty());
        // An IPv4 client behind an IPv6 balancer is still an IPv4 client for the rules.
        let mapped = parse(&v2("[::ffff:192.0.2.8]:1"), peer).unwrap().unwrap();
        assert_eq!(mapped.client, "192.0.2.8".parse::<IpAddr>().unwrap());
        let mut local = Vec::new();
        ProxyHeader::with_local().encode_v2(&mut local).unwrap();
        assert_eq!(parse(&local, peer).unwrap().unwrap().client, peer);
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n", peer).unwrap().unwrap().client,
            peer
        );
    }

    #[test]
    fn partial_headers_wait_and_nonsense_is_refused() {
        let peer: IpAddr = BALANCER.parse().unwrap();
        let whole = v2("192.0.2.7:40000");
        for cut in [1, 8, 15, whole.len() - 1] {
            assert_eq!(parse(&whole[..cut], peer), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse(b"PROXY TCP4 192.0.2.7", peer), Ok(None));
        for bad in [
            &b"EHLO client.example\r\n"[..],
            b"PROXY TCP4 999.0.2.7 10.0.0.9 1 25\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.9 1\r\n",
            b"\r\n\r\n\0\r\nQUIT\n\x99\x11\0\x0c",
        ] {
            assert!(
                matches!(parse(bad, peer), Err(ProxyError::Invalid(_))),
                "{bad:?}"
            );
        }
        // A v1 header that never ends is invalid at the length the spec allows.
        let endless = [b'P'; 200];
        assert!(parse(&endless, peer).is_err());
    }

    #[test]
    fn only_configured_networks_are_trusted() {
        let from: Vec<IpNet> = vec!["10.0.0.0/24".parse().unwrap(), "::1/128".parse().unwrap()];
        assert!(trusted(&from, BALANCER.parse().unwrap()));
        assert!(trusted(&from, "::1".parse().unwrap()));
        assert!(!trusted(&from, "10.0.1.5".parse().unwrap()));
        assert!(!trusted(&[], BALANCER.parse().unwrap()));
    }
}
