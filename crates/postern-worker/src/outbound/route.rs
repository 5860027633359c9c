//! Where mail for a domain goes (PRODUCT.md 2.3, 3): a relay domain's next hop (`host:port`,
//! `[ip]:port` or `mx`), else MX records (by preference, each host's A and AAAA addresses) with
//! the domain's own addresses when it has no MX (RFC 5321 5.1), or the smart host. Nameservers
//! come from `settings.delivery.nameservers` (tests run their own on loopback); empty means
//! the system's resolver configuration.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveErrorKind, TokioResolver};
use postern_policy::NextHop;

/// One address to try, with the name its certificate must carry under `verify` (and the SNI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub host: String,
    pub addr: SocketAddr,
}

pub struct Router {
    resolver: TokioResolver,
    mx_port: u16,
}

impl Router {
    /// `nameservers` as `ip:port` strings (settings are validated, so they parse).
    pub fn new(nameservers: &[String], mx_port: u16) -> Result<Router, String> {
        let mut builder = if nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| e.to_string())?
        } else {
            let mut config = ResolverConfig::new();
            for ns in nameservers {
                let addr: SocketAddr = ns.parse().map_err(|_| format!("bad nameserver {ns}"))?;
                config.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
            }
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.attempts = 2;
        // Both address families (PRODUCT.md 4: IPv6 everywhere), IPv4 first.
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        Ok(Router {
            resolver: builder.build(),
            mx_port,
        })
    }

    /// The addresses to try, in order. An error is the deferral reason (DNS trouble is never
    /// final here; the retry schedule decides).
    pub async fn hops(&self, next_hop: &NextHop, domain: &str) -> Result<Vec<Hop>, String> {
        match next_hop {
            NextHop::Ip { ip, port } => Ok(vec![Hop {
                host: ip.to_string(),
                addr: SocketAddr::new(*ip, *port),
            }]),
            NextHop::Host { host, port } => self.addresses(host, *port).await,
            NextHop::Mx => self.mx(domain).await,
        }
    }

    async fn addresses(&self, host: &str, port: u16) -> Result<Vec<Hop>, String> {
        let ips = self
            .resolver
            .lookup_ip(format!("{}.", host.trim_end_matches('.')))
            .await
            .map_err(|e| {
                format!(
                    "4.4.3 Host or domain name not found. Name service error for name={host}: {e}"
                )
            })?;
        let mut hops: Vec<Hop> = ips
            .iter()
            .map(|ip: IpAddr| Hop {
                host: host.to_string(),
                addr: SocketAddr::new(ip, port),
            })
            .collect();
        hops.dedup();
        Ok(hops)
    }

    async fn mx(&self, domain: &str) -> Result<Vec<Hop>, String> {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        let mut exchanges: Vec<(u16, String)> = match self.resolver.mx_lookup(fqdn).await {
            Ok(mx) => mx
                .iter()
                .map(|r| {
                    (
                        r.preference(),
                        r.exchange().to_utf8().trim_end_matches('.').to_string(),
                    )
                })
                .collect(),
            Err(e) if matches!(e.kind(), ResolveErrorKind::Proto(p) if p.is_no_records_found()) => {
                Vec::new()
            }
            Err(e) => {
                return Err(format!(
                    "4.4.3 Host or domain name not found. Name service error for name={domain} type=MX: {e}"
                ));
            }
        };
        if exchanges.is_empty() {
            // No MX: the domain itself is the mail host (RFC 5321 5.1).
            return self.addresses(domain, self.mx_port).await;
        }
        exchanges.sort();
        let mut hops = Vec::new();
        let mut last_error = None;
        for (_, host) in exchanges {
            match self.addresses(&host, self.mx_port).await {
                Ok(h) => hops.extend(h),
                Err(e) => last_error = Some(e),
            }
        }
        if hops.is_empty() {
            return Err(last_error
                .unwrap_or_else(|| format!("4.4.3 no address for the MX hosts of {domain}")));
        }
        Ok(hops)
    }
}
