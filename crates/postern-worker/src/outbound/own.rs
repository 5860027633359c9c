//! The addresses this worker is reached by, so that it never relays to itself (RFC 5321 5.1,
//! Postfix's `inet_interfaces` and `proxy_interfaces`): its SMTP listener, every interface
//! address of the host when that listener is a wildcard, and the addresses it is reached by
//! through NAT or a load balancer (`--proxy-interfaces`).

use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnAddresses {
    /// Addresses on which the SMTP port is this worker.
    listening: Vec<IpAddr>,
    /// A wildcard listener: every loopback address is this host too (Linux routes 127/8 here).
    wildcard: bool,
    port: u16,
    /// Addresses that reach this worker whatever the port.
    proxied: Vec<IpAddr>,
}

impl OwnAddresses {
    pub fn new(listener: SocketAddr, proxied: Vec<IpAddr>) -> OwnAddresses {
        let listening = if listener.ip().is_unspecified() {
            interface_addresses()
        } else {
            vec![listener.ip().to_canonical()]
        };
        OwnAddresses {
            listening,
            wildcard: listener.ip().is_unspecified(),
            port: listener.port(),
            proxied: proxied.into_iter().map(|ip| ip.to_canonical()).collect(),
        }
    }

    /// Whether delivering to `addr` would reach this worker.
    pub fn contains(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip().to_canonical();
        self.proxied.contains(&ip)
            || (addr.port() == self.port
                && (self.listening.contains(&ip) || (self.wildcard && ip.is_loopback())))
    }
}

/// Every address of the host's interfaces (loopback included). A host whose interfaces cannot
/// be listed still has its loopback addresses.
fn interface_addresses() -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = match nix::ifaddrs::getifaddrs() {
        Ok(list) => list
            .filter_map(|i| i.address)
            .filter_map(|a| {
                a.as_sockaddr_in()
                    .map(|v4| IpAddr::V4(v4.ip()))
                    .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the host's interface addresses");
            Vec::new()
        }
    };
    ips.extend([
        "127.0.0.1".parse::<IpAddr>().expect("an address"),
        "::1".parse().expect("an address"),
    ]);
    ips.sort();
    ips.dedup();
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_its_wildcard_and_proxied_addresses() {
        let one = OwnAddresses::new("127.0.0.5:2525".parse().unwrap(), vec![]);
        assert!(one.contains("127.0.0.5:2525".parse().unwrap()));
        assert!(one.contains("[::ffff:127.0.0.5]:2525".parse().unwrap()));
        assert!(
            !one.contains("127.0.0.5:25".parse().unwrap()),
            "another port is another server"
        );
        assert!(!one.contains("127.0.0.6:2525".parse().unwrap()));
        let wildcard = OwnAddresses::new(
            "0.0.0.0:25".parse().unwrap(),
            vec!["192.0.2.7".parse().unwrap()],
        );
        assert!(wildcard.contains("127.0.0.1:25".parse().unwrap()));
        assert!(wildcard.contains("[::1]:25".parse().unwrap()));
        assert!(
            wildcard.contains("127.0.0.9:25".parse().unwrap()),
            "all of 127/8 is here"
        );
        assert!(
            wildcard.contains("192.0.2.7:2525".parse().unwrap()),
            "NAT: any port"
        );
        assert!(!wildcard.contains("192.0.2.8:25".parse().unwrap()));
    }
}
