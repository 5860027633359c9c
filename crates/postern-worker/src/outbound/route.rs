//! Where mail for a domain goes (docs/src/policy.md#outbound, policy.md#relay-control,
//! features.md): a relay domain's next hop (`host:port`,
//! `[ip]:port` or `mx`), else MX records (by preference, each host's A and AAAA addresses) with
//! the domain's own addresses when it has no MX (RFC 5321 5.1), or the smart host. A domain
//! that does not exist and a null MX (RFC 7505) are final; an MX list that names this worker
//! keeps only the hosts more preferred than itself, and is a loop when it is the best. DNS
//! trouble is never final. Nameservers come from `settings.delivery.nameservers` (tests run
//! their own on loopback); empty means the system's resolver configuration.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveErrorKind, TokioResolver};
use postern_policy::NextHop;
use postern_smtp::Reply;

use super::own::OwnAddresses;

/// Why there is nowhere to deliver to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// NXDOMAIN: the name does not exist (final, Postfix's wording).
    #[error(
        "5.4.4 Host or domain name not found. Name service error for name={name} type={kind}: Host not found"
    )]
    NotFound { name: String, kind: &'static str },
    /// `MX 0 .` (RFC 7505).
    #[error("5.1.10 Domain {0} does not accept mail (nullMX)")]
    NullMx(String),
    /// This worker is the best MX, or the configured next hop.
    #[error("5.4.6 mail for {0} loops back to myself")]
    Loop(String),
    /// Anything else (timeouts, SERVFAIL, no address): deferred.
    #[error("4.4.3 {0}")]
    Temporary(String),
}

impl RouteError {
    /// The reply the affected recipients get.
    pub fn reply(&self) -> Reply {
        let code = match self {
            RouteError::Temporary(_) => 451,
            RouteError::Loop(_) => 554,
            RouteError::NotFound { .. } | RouteError::NullMx(_) => 550,
        };
        Reply::new(code, self.to_string())
    }
}

/// One address to try, with the name its certificate must carry under `verify` (and the SNI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub host: String,
    pub addr: SocketAddr,
}

pub struct Router {
    resolver: TokioResolver,
    mx_port: u16,
    /// Non-public networks HTTPS fetches may reach (`delivery.fetch_networks`).
    fetch_networks: Vec<ipnet::IpNet>,
}

impl Router {
    /// `nameservers` as `ip:port` strings (settings are validated, so they parse).
    pub fn new(nameservers: &[String], mx_port: u16) -> Result<Router, RouteError> {
        let mut builder = if nameservers.is_empty() {
            TokioResolver::builder_tokio()
                .map_err(|e| RouteError::Temporary(format!("resolver configuration: {e}")))?
        } else {
            let mut config = ResolverConfig::new();
            for ns in nameservers {
                let addr: SocketAddr = ns
                    .parse()
                    .map_err(|_| RouteError::Temporary(format!("bad nameserver {ns}")))?;
                config.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
            }
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.attempts = 2;
        // Both address families (docs/src/smtp.md: IPv6 everywhere), IPv4 first.
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        Ok(Router {
            resolver: builder.build(),
            mx_port,
            fetch_networks: Vec::new(),
        })
    }

    /// The addresses to try, in order, none of them this worker's own (`own`).
    pub async fn hops(
        &self,
        next_hop: &NextHop,
        domain: &str,
        own: &OwnAddresses,
    ) -> Result<Vec<Hop>, RouteError> {
        self.hops_within(next_hop, domain, own, usize::MAX).await
    }

    /// `hops`, with MX hosts looked up only until `limit` addresses are found (Postfix's
    /// `smtp_mx_address_limit`): a domain that lists a thousand MX hosts costs a few lookups.
    pub async fn hops_within(
        &self,
        next_hop: &NextHop,
        domain: &str,
        own: &OwnAddresses,
        limit: usize,
    ) -> Result<Vec<Hop>, RouteError> {
        let hops = match next_hop {
            NextHop::Ip { ip, port } => vec![Hop {
                host: ip.to_string(),
                addr: SocketAddr::new(*ip, *port),
            }],
            // A configured host that does not resolve is the operator's to fix: deferred, so
            // that a typo never bounces the mail it routes.
            NextHop::Host { host, port } => {
                self.addresses(host, *port).await.map_err(|e| match e {
                    RouteError::NotFound { name, kind } => RouteError::Temporary(format!(
                        "Host or domain name not found. Name service error for name={name} type={kind}: Host not found"
                    )),
                    e => e,
                })?
            }
            NextHop::Mx => return self.mx(domain, own, limit).await,
        };
        if hops.iter().any(|h| own.contains(h.addr)) {
            return Err(RouteError::Loop(domain.to_string()));
        }
        Ok(hops)
    }

    /// The TXT records at `name`, each record's strings joined (MTA-STS, TLS-RPT); `Ok(empty)`
    /// when there are none or the name does not exist.
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, RouteError> {
        match self
            .resolver
            .txt_lookup(format!("{}.", name.trim_end_matches('.')))
            .await
        {
            Ok(txt) => Ok(txt
                .iter()
                .map(|r| {
                    r.txt_data()
                        .iter()
                        .map(|part| String::from_utf8_lossy(part))
                        .collect::<String>()
                })
                .collect()),
            Err(e) => match classify(e, name, "TXT") {
                RouteError::NotFound { .. } => Ok(Vec::new()),
                RouteError::Temporary(t) if t.starts_with("no address") => Ok(Vec::new()),
                e => Err(e),
            },
        }
    }

    /// Lets HTTPS fetches reach these non-public networks (`delivery.fetch_networks`).
    pub fn with_fetch_networks(mut self, networks: Vec<ipnet::IpNet>) -> Router {
        self.fetch_networks = networks;
        self
    }

    /// The addresses of `host` (an HTTPS host such as `mta-sts.<domain>` or a TLS-RPT `https:`
    /// address) that a fetch may reach: public ones and those of `fetch_networks`.
    pub async fn ips(&self, host: &str) -> Result<Vec<IpAddr>, RouteError> {
        let ips: Vec<IpAddr> = self
            .addresses(host, 0)
            .await?
            .into_iter()
            .map(|h| h.addr.ip())
            .collect();
        crate::sts::fetch::reachable(host, &ips, &self.fetch_networks)
            .map_err(RouteError::Temporary)
    }

    async fn addresses(&self, host: &str, port: u16) -> Result<Vec<Hop>, RouteError> {
        let ips = self
            .resolver
            .lookup_ip(format!("{}.", host.trim_end_matches('.')))
            .await
            .map_err(|e| classify(e, host, "A"))?;
        let mut hops: Vec<Hop> = ips
            .iter()
            .map(|ip: IpAddr| Hop {
                host: host.to_string(),
                addr: SocketAddr::new(ip, port),
            })
            .collect();
        hops.dedup();
        if hops.is_empty() {
            return Err(RouteError::Temporary(format!("no address for {host}")));
        }
        Ok(hops)
    }

    async fn mx(
        &self,
        domain: &str,
        own: &OwnAddresses,
        limit: usize,
    ) -> Result<Vec<Hop>, RouteError> {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        let mut exchanges: Vec<(u16, String)> = match self.resolver.mx_lookup(fqdn).await {
            Ok(mx) => mx
                .iter()
                .map(|r| {
                    (
                        r.preference(),
                        // A-labels (xn--...): what policies, SNI and certificates name.
                        r.exchange().to_ascii().trim_end_matches('.').to_string(),
                    )
                })
                .collect(),
            Err(e) if matches!(e.kind(), ResolveErrorKind::Proto(p) if p.is_nx_domain()) => {
                return Err(RouteError::NotFound {
                    name: domain.to_string(),
                    kind: "MX",
                });
            }
            Err(e) if matches!(e.kind(), ResolveErrorKind::Proto(p) if p.is_no_records_found()) => {
                Vec::new()
            }
            Err(e) => return Err(classify(e, domain, "MX")),
        };
        if exchanges.iter().any(|(_, host)| host.is_empty()) {
            return Err(RouteError::NullMx(domain.to_string()));
        }
        if exchanges.is_empty() {
            // No MX: the domain itself is the mail host (RFC 5321 5.1).
            let hops = self.addresses(domain, self.mx_port).await?;
            if hops.iter().any(|h| own.contains(h.addr)) {
                return Err(RouteError::Loop(domain.to_string()));
            }
            return Ok(hops);
        }
        exchanges.sort();
        exchanges.truncate(MAX_MX_LOOKUPS);
        let mut resolved: Vec<(u16, Vec<Hop>)> = Vec::new();
        let mut found = 0;
        let mut last_error = None;
        for (preference, host) in exchanges {
            // Enough addresses: stop, but finish the preference reached (this worker may be
            // among its hosts, which decides what is kept).
            if found >= limit && resolved.last().is_some_and(|(p, _)| *p != preference) {
                break;
            }
            match self.addresses(&host, self.mx_port).await {
                Ok(h) => {
                    found += h.len();
                    resolved.push((preference, h));
                }
                // A host that does not resolve is skipped, as Postfix does.
                Err(e) => last_error = Some(e),
            }
        }
        // This worker in the list: only the hosts more preferred than itself (RFC 5321 5.1).
        if let Some(mine) = resolved
            .iter()
            .find(|(_, hops)| hops.iter().any(|h| own.contains(h.addr)))
            .map(|(p, _)| *p)
        {
            resolved.retain(|(p, _)| *p < mine);
            if resolved.is_empty() {
                return Err(RouteError::Loop(domain.to_string()));
            }
        }
        let hops: Vec<Hop> = resolved.into_iter().flat_map(|(_, h)| h).collect();
        if hops.is_empty() {
            return Err(match last_error {
                Some(RouteError::NotFound { name, .. }) => RouteError::Temporary(format!(
                    "Host or domain name not found. Name service error for name={name} type=A: Host not found"
                )),
                Some(e) => e,
                None => RouteError::Temporary(format!("no address for the MX hosts of {domain}")),
            });
        }
        Ok(hops)
    }
}

/// MX hosts looked up at most per domain, whatever the limit: each is a DNS query.
const MAX_MX_LOOKUPS: usize = 32;

/// A failed lookup of `name`: NXDOMAIN is final, anything else is deferred.
fn classify(e: hickory_resolver::ResolveError, name: &str, kind: &'static str) -> RouteError {
    match e.kind() {
        ResolveErrorKind::Proto(p) if p.is_nx_domain() => RouteError::NotFound {
            name: name.to_string(),
            kind,
        },
        ResolveErrorKind::Proto(p) if p.is_no_records_found() => {
            RouteError::Temporary(format!("no address for {name}"))
        }
        _ => RouteError::Temporary(format!(
            "Host or domain name not found. Name service error for name={name} type={kind}: {e}"
        )),
    }
}
