//! Relay control (docs/src/policy.md#relay-control): the domains the gateway accepts mail for, with
//! their next hops,
//! and the networks allowed to relay anywhere.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::domain::normalize_domain;
use crate::error::FieldError;
use crate::matching::Match;

/// Relay control: the domains the gateway accepts mail for and the networks trusted to relay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Relay {
    /// Domains the gateway accepts mail for, each with its next hop.
    #[serde(default)]
    pub domains: Vec<RelayDomain>,
    /// Clients in these networks may relay to any domain.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(example = json!(["192.0.2.0/24"])))]
    pub networks: Vec<String>,
}

/// A domain the gateway accepts mail for, and where that mail goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RelayDomain {
    /// `example.com`, or `.example.com` for its subdomains.
    #[cfg_attr(feature = "openapi", schema(example = "example.com"))]
    pub domain: String,
    /// `host:port`, `[ip]:port` or `mx`.
    #[cfg_attr(feature = "openapi", schema(example = "[192.0.2.25]:25"))]
    pub next_hop: String,
}

/// Where mail for a relay domain goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NextHop {
    /// Look up the recipient domain's MX records.
    Mx,
    /// A host name, resolved with A/AAAA; also the reference name for `verify`.
    Host {
        /// The host name, normalised.
        host: String,
        /// The TCP port.
        port: u16,
    },
    /// An address literal, `[ip]:port`.
    Ip {
        /// The address; an IPv4-mapped IPv6 address is stored as IPv4.
        ip: IpAddr,
        /// The TCP port.
        port: u16,
    },
}

impl NextHop {
    /// Parses `mx`, `host:port` or `[ip]:port`, normalising the host name or address.
    pub fn parse(s: &str) -> Result<NextHop, String> {
        if s.eq_ignore_ascii_case("mx") {
            return Ok(NextHop::Mx);
        }
        let (host, port) = s
            .rsplit_once(':')
            .filter(|(h, _)| !h.is_empty())
            .ok_or_else(|| format!("'{s}' is not 'mx', 'host:port' or '[ip]:port'"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("'{port}' is not a port between 1 and 65535"))?;
        if let Some(ip) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| format!("'{ip}' is not an IP address"))?;
            return Ok(NextHop::Ip {
                ip: ip.to_canonical(),
                port,
            });
        }
        if host.parse::<IpAddr>().is_ok() || host.contains(':') {
            return Err(format!("write an address next hop as '[{host}]:{port}'"));
        }
        Ok(NextHop::Host {
            host: normalize_domain(host)?,
            port,
        })
    }
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NextHop::Mx => f.write_str("mx"),
            NextHop::Host { host, port } => write!(f, "{host}:{port}"),
            NextHop::Ip { ip, port } => write!(f, "[{ip}]:{port}"),
        }
    }
}

impl Relay {
    /// The same relay configuration in canonical spelling, or every problem with it.
    pub fn normalized(&self) -> Result<Relay, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut domains = Vec::with_capacity(self.domains.len());
        let mut seen = std::collections::HashMap::new();
        for (i, d) in self.domains.iter().enumerate() {
            let domain = match Match::parse(&d.domain) {
                Ok(m) if !m.is_ip() => Some(m.to_string()),
                Ok(_) => {
                    errors.push(FieldError::new(
                        format!("/domains/{i}/domain"),
                        "a relay domain must be a domain, not an address",
                    ));
                    None
                }
                Err(e) => {
                    errors.push(FieldError::new(format!("/domains/{i}/domain"), e));
                    None
                }
            };
            let hop = NextHop::parse(&d.next_hop)
                .map_err(|e| errors.push(FieldError::new(format!("/domains/{i}/next_hop"), e)))
                .ok();
            if let Some(domain) = &domain
                && let Some(first) = seen.insert(domain.clone(), i)
            {
                errors.push(FieldError::new(
                    format!("/domains/{i}/domain"),
                    format!("duplicate of /domains/{first}/domain ({domain})"),
                ));
            }
            if let (Some(domain), Some(hop)) = (domain, hop) {
                domains.push(RelayDomain {
                    domain,
                    next_hop: hop.to_string(),
                });
            }
        }
        let mut networks = Vec::with_capacity(self.networks.len());
        let mut seen = std::collections::HashMap::new();
        for (i, n) in self.networks.iter().enumerate() {
            match Match::parse(n) {
                Ok(Match::Net(net)) => {
                    if let Some(first) = seen.insert(net, i) {
                        errors.push(FieldError::new(
                            format!("/networks/{i}"),
                            format!("duplicate of /networks/{first} ({net})"),
                        ));
                    }
                    networks.push(net.to_string());
                }
                Ok(_) => errors.push(FieldError::new(
                    format!("/networks/{i}"),
                    format!("'{n}' is not an address or CIDR"),
                )),
                Err(e) => errors.push(FieldError::new(format!("/networks/{i}"), e)),
            }
        }
        if errors.is_empty() {
            Ok(Relay { domains, networks })
        } else {
            Err(errors)
        }
    }

    /// Parsed trusted networks; only call on a normalised relay.
    pub(crate) fn parsed_networks(&self) -> Vec<IpNet> {
        self.networks
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_hops() {
        assert_eq!(NextHop::parse("MX").unwrap(), NextHop::Mx);
        assert_eq!(
            NextHop::parse("Mail.Example.com:2525").unwrap().to_string(),
            "mail.example.com:2525"
        );
        assert_eq!(NextHop::parse("[::1]:25").unwrap().to_string(), "[::1]:25");
        assert_eq!(
            NextHop::parse("[::ffff:192.0.2.1]:25").unwrap().to_string(),
            "[192.0.2.1]:25"
        );
        for bad in [
            "mail.example.com",
            "192.0.2.1:25",
            "[x]:25",
            "host:0",
            "host:70000",
            ":25",
        ] {
            assert!(NextHop::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn relay_normalises_and_refuses_duplicates() {
        let r = Relay {
            domains: vec![
                RelayDomain {
                    domain: "Example.com.".into(),
                    next_hop: "mx".into(),
                },
                RelayDomain {
                    domain: "example.com".into(),
                    next_hop: "[192.0.2.1]:25".into(),
                },
            ],
            networks: vec!["10.0.0.0/8".into(), "10.1.0.0/8".into()],
        };
        let errs = r.normalized().unwrap_err();
        let pointers: Vec<_> = errs.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(pointers, ["/domains/1/domain", "/networks/1"]);
    }
}
