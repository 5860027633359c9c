//! What a rule matches: an IP address or CIDR (inbound only), a domain exactly, or the proper
//! subdomains of a domain (`.example.com`). Parsing normalises, so two spellings of one match
//! compare equal: `10.0.0.1` is `10.0.0.1/32`, `::ffff:10.0.0.0/104` is `10.0.0.0/8`.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::domain::normalize_domain;

/// What a rule matches, normalised; (de)serialised as a string like `10.0.0.0/8` or `.a.com`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Match {
    /// An address or network; host routes are /32 or /128.
    Net(IpNet),
    /// Exactly this domain (A-labels, lowercase, no trailing dot).
    Domain(String),
    /// Proper subdomains of this domain, written `.example.com`.
    Subdomains(String),
}

impl Match {
    /// Parses and normalises a match as an operator writes it.
    pub fn parse(input: &str) -> Result<Match, String> {
        if let Some((addr, len)) = input.split_once('/') {
            return parse_cidr(addr, len).map(Match::Net);
        }
        if let Ok(ip) = input.parse::<IpAddr>() {
            let ip = ip.to_canonical();
            let len = if ip.is_ipv4() { 32 } else { 128 };
            return Ok(Match::Net(IpNet::new(ip, len).expect("full-length prefix")));
        }
        match input.strip_prefix('.') {
            Some(parent) if !parent.starts_with('.') => {
                normalize_domain(parent).map(Match::Subdomains)
            }
            _ => normalize_domain(input).map(Match::Domain),
        }
    }

    /// Whether this matches addresses (an IP or CIDR) rather than domains.
    pub fn is_ip(&self) -> bool {
        matches!(self, Match::Net(_))
    }
}

fn parse_cidr(addr: &str, len: &str) -> Result<IpNet, String> {
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("'{addr}' is not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= max)
        .ok_or_else(|| format!("prefix length '{len}' is not between 0 and {max}"))?;
    let net = IpNet::new(ip, len).map_err(|e| e.to_string())?;
    if net.trunc() != net {
        return Err(format!(
            "host bits are set in {addr}/{len}; the network is {}",
            net.trunc()
        ));
    }
    // IPv4-mapped IPv6 networks are stored as the IPv4 networks they describe.
    if let IpAddr::V6(v6) = ip
        && len >= 96
        && let Some(v4) = v6.to_ipv4_mapped()
    {
        return Ok(IpNet::new(IpAddr::V4(v4), len - 96).expect("valid length"));
    }
    Ok(net)
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Match::Net(net) => write!(f, "{net}"),
            Match::Domain(d) => f.write_str(d),
            Match::Subdomains(d) => write!(f, ".{d}"),
        }
    }
}

impl TryFrom<String> for Match {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Match::parse(&s)
    }
}

impl From<Match> for String {
    fn from(m: Match) -> String {
        m.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        Match::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalises() {
        assert_eq!(norm("10.0.0.1"), "10.0.0.1/32");
        assert_eq!(norm("10.0.0.1/32"), "10.0.0.1/32");
        assert_eq!(norm("::ffff:10.0.0.1"), "10.0.0.1/32");
        assert_eq!(norm("::ffff:10.0.0.0/104"), "10.0.0.0/8");
        assert_eq!(norm("2001:DB8::/32"), "2001:db8::/32");
        assert_eq!(norm("Example.COM."), "example.com");
        assert_eq!(norm(".Example.com"), ".example.com");
    }

    #[test]
    fn refuses() {
        for bad in [
            "10.0.0.0/33",
            "10.0.0.1/8",
            "10.0.0.0/x",
            "::/129",
            "..example.com",
            "300.1.1.1",
            "1.2.3.4/",
        ] {
            assert!(Match::parse(bad).is_err(), "{bad} was accepted");
        }
        assert!(
            Match::parse("10.0.0.1/8")
                .unwrap_err()
                .contains("10.0.0.0/8")
        );
    }
}
