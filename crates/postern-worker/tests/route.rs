//! Next-hop resolution against a DNS server this test runs on loopback (never the system's).

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::proto::rr::rdata::{A, AAAA, MX};
use hickory_resolver::proto::rr::{Name, RData};
use postern_policy::NextHop;
use postern_worker::outbound::route::{Hop, Router};

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
    let hops = router.hops(&NextHop::Mx, "partner.example").await.unwrap();
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
        router.hops(&NextHop::Mx, "nomx.example").await.unwrap(),
        [hop("nomx.example", "127.0.0.13", 2525)]
    );
    // A configured host and an address literal.
    let host = NextHop::Host {
        host: "relay.example".into(),
        port: 587,
    };
    assert_eq!(
        router.hops(&host, "ignored.example").await.unwrap(),
        [hop("relay.example", "127.0.0.14", 587)]
    );
    let ip = NextHop::Ip {
        ip: "192.0.2.25".parse().unwrap(),
        port: 25,
    };
    assert_eq!(
        router.hops(&ip, "ignored.example").await.unwrap(),
        [hop("192.0.2.25", "192.0.2.25", 25)]
    );
    // An unknown domain defers with a name service error.
    let err = router
        .hops(&NextHop::Mx, "unknown.example")
        .await
        .unwrap_err();
    assert!(
        err.starts_with("4.4.3 Host or domain name not found"),
        "{err}"
    );
}
