//! Next-hop resolution against a DNS server this test runs on loopback (never the system's).

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::proto::rr::rdata::{A, AAAA, MX};
use hickory_resolver::proto::rr::{Name, RData};
use postern_policy::NextHop;
use postern_worker::outbound::own::OwnAddresses;
use postern_worker::outbound::route::{Hop, RouteError, Router};

#[path = "../../../tests/support/dns.rs"]
mod dns;
use dns::dns;

fn a(ip: &str) -> RData {
    RData::A(A(ip.parse().unwrap()))
}

fn mx(preference: u16, exchange: &str) -> RData {
    RData::MX(MX::new(preference, Name::from_ascii(exchange).unwrap()))
}

fn hop(host: &str, ip: &str, port: u16) -> Hop {
    Hop {
        host: host.into(),
        addr: SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port),
    }
}

#[tokio::test]
async fn mx_preference_addresses_and_fallbacks() {
    let ns = dns(vec![
        ("partner.example.", mx(20, "mx2.partner.example.")),
        ("partner.example.", mx(10, "mx1.partner.example.")),
        ("mx1.partner.example.", a("127.0.0.11")),
        (
            "mx1.partner.example.",
            RData::AAAA(AAAA("::1".parse().unwrap())),
        ),
        ("mx2.partner.example.", a("127.0.0.12")),
        ("nomx.example.", a("127.0.0.13")),
        ("relay.example.", a("127.0.0.14")),
    ])
    .await;
    let router = Router::new(&[ns.to_string()], 2525).unwrap();
    // This worker listens elsewhere: none of these hosts is itself.
    let own = OwnAddresses::new("127.0.0.1:2600".parse().unwrap(), vec![]);
    let hops = router
        .hops(&NextHop::Mx, "partner.example", &own)
        .await
        .unwrap();
    assert_eq!(
        hops[0].host, "mx1.partner.example",
        "the lowest preference first: {hops:?}"
    );
    assert!(hops.contains(&hop("mx1.partner.example", "127.0.0.11", 2525)));
    assert!(hops.contains(&hop("mx1.partner.example", "::1", 2525)));
    assert_eq!(
        hops.last().unwrap(),
        &hop("mx2.partner.example", "127.0.0.12", 2525)
    );
    // No MX: the domain's own address.
    assert_eq!(
        router
            .hops(&NextHop::Mx, "nomx.example", &own)
            .await
            .unwrap(),
        [hop("nomx.example", "127.0.0.13", 2525)]
    );
    // A configured host and an address literal.
    let host = NextHop::Host {
        host: "relay.example".into(),
        port: 587,
    };
    assert_eq!(
        router.hops(&host, "ignored.example", &own).await.unwrap(),
        [hop("relay.example", "127.0.0.14", 587)]
    );
    let ip = NextHop::Ip {
        ip: "192.0.2.25".parse().unwrap(),
        port: 25,
    };
    assert_eq!(
        router.hops(&ip, "ignored.example", &own).await.unwrap(),
        [hop("192.0.2.25", "192.0.2.25", 25)]
    );
    // A domain that does not exist bounces, in Postfix's words.
    let err = router
        .hops(&NextHop::Mx, "unknown.example", &own)
        .await
        .unwrap_err();
    assert_eq!(
        err.reply().one_line(),
        "550 5.4.4 Host or domain name not found. Name service error for name=unknown.example type=MX: Host not found"
    );
    // A configured next hop that does not resolve is the operator's to fix: deferred.
    let typo = NextHop::Host {
        host: "typo.example".into(),
        port: 25,
    };
    let err = router.hops(&typo, "x.example", &own).await.unwrap_err();
    assert!(matches!(err, RouteError::Temporary(_)), "{err:?}");
}

#[tokio::test]
async fn null_mx_and_this_gateway_among_the_mx_hosts() {
    let ns = dns(vec![
        ("nullmx.example.", mx(0, ".")),
        ("backup.example.", mx(10, "primary.backup.example.")),
        ("backup.example.", mx(20, "gateway.example.")),
        ("backup.example.", mx(30, "worse.backup.example.")),
        ("primary.backup.example.", a("127.0.0.21")),
        ("worse.backup.example.", a("127.0.0.23")),
        ("gateway.example.", a("127.0.0.22")),
        ("best.example.", mx(5, "gateway.example.")),
        ("best.example.", mx(10, "primary.backup.example.")),
    ])
    .await;
    let router = Router::new(&[ns.to_string()], 2525).unwrap();
    let own = OwnAddresses::new("127.0.0.22:2525".parse().unwrap(), vec![]);
    let err = router
        .hops(&NextHop::Mx, "nullmx.example", &own)
        .await
        .unwrap_err();
    assert_eq!(
        err.reply().one_line(),
        "550 5.1.10 Domain nullmx.example does not accept mail (nullMX)"
    );
    // A backup MX: only the hosts more preferred than this gateway.
    assert_eq!(
        router
            .hops(&NextHop::Mx, "backup.example", &own)
            .await
            .unwrap(),
        [hop("primary.backup.example", "127.0.0.21", 2525)]
    );
    // The best MX: a loop, whatever comes after it.
    let err = router
        .hops(&NextHop::Mx, "best.example", &own)
        .await
        .unwrap_err();
    assert_eq!(
        err.reply().one_line(),
        "554 5.4.6 mail for best.example loops back to myself"
    );
    // Reached through NAT at the gateway's address: the same, on any port.
    let nat = OwnAddresses::new(
        "127.0.0.99:2600".parse().unwrap(),
        vec!["127.0.0.22".parse().unwrap()],
    );
    assert_eq!(
        router
            .hops(&NextHop::Mx, "backup.example", &nat)
            .await
            .unwrap()
            .len(),
        1
    );
    // Without this gateway in the list, every host in order.
    let elsewhere = OwnAddresses::new("127.0.0.99:2600".parse().unwrap(), vec![]);
    assert_eq!(
        router
            .hops(&NextHop::Mx, "backup.example", &elsewhere)
            .await
            .unwrap()
            .len(),
        3
    );
}

/// A domain listing 16 MX hosts: lookups stop at the address limit, finishing the preference
/// reached (a UDP answer of this test's DNS server holds no more).
#[tokio::test]
async fn mx_lookups_stop_at_the_address_limit() {
    let names: Vec<String> = (0..16).map(|i| format!("m{i}.m.")).collect();
    let mut zone: Vec<(&'static str, RData)> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let name: &'static str = Box::leak(name.clone().into_boxed_str());
        // mx0 and mx1 share a preference.
        zone.push(("m.", mx(10 + (i.max(1) as u16), name)));
        zone.push((name, a(&format!("127.0.1.{}", i + 1))));
    }
    let router = Router::new(&[dns(zone).await.to_string()], 2525).unwrap();
    let own = OwnAddresses::new("127.0.0.1:2600".parse().unwrap(), vec![]);
    let hosts = |hops: Vec<Hop>| hops.into_iter().map(|h| h.host).collect::<Vec<_>>();
    let within = router
        .hops_within(&NextHop::Mx, "m", &own, 1)
        .await
        .unwrap();
    assert_eq!(hosts(within), ["m0.m", "m1.m"]);
    let within = router
        .hops_within(&NextHop::Mx, "m", &own, 3)
        .await
        .unwrap();
    assert_eq!(within.len(), 3);
    let all = router.hops(&NextHop::Mx, "m", &own).await.unwrap();
    assert_eq!(all.len(), 16, "without a limit, every MX host");
}

/// HTTPS hosts (MTA-STS policy hosts, TLS-RPT report URLs) at addresses that are not public
/// are refused unless `delivery.fetch_networks` lists them.
#[tokio::test]
async fn fetches_reach_only_public_addresses_unless_allowed() {
    let ns = dns(vec![
        ("mta-sts.evil.example.", a("127.0.0.1")),
        ("mta-sts.evil.example.", a("169.254.169.254")),
    ])
    .await;
    let router = Router::new(&[ns.to_string()], 2525).unwrap();
    let err = router.ips("mta-sts.evil.example").await.unwrap_err();
    assert!(err.to_string().contains("not public"), "{err}");
    let allowed = Router::new(&[ns.to_string()], 2525)
        .unwrap()
        .with_fetch_networks(vec!["127.0.0.0/8".parse().unwrap()]);
    assert_eq!(
        allowed.ips("mta-sts.evil.example").await.unwrap(),
        ["127.0.0.1".parse::<IpAddr>().unwrap()]
    );
}
