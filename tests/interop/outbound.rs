//! The outbound matrix (issue 10, point 3): Postern relays to Postfix and Exim next hops under
//! each outbound level, where the next hop's certificate is valid for its MX name, self-signed,
//! for another name or expired, where STARTTLS is not offered or cannot start (no certificate:
//! Exim answers 454, Postfix fails the handshake), or where TLS is limited to
//! TLS 1.2. Delivered cells are checked in the next hop's own log (TLS or plaintext, and the
//! version) and in tracking; deferred cells by the deferral text of docs/src/policy.md#outbound in
//! tracking
//! and by the next hop never having received the message.

use std::net::Ipv4Addr;
use std::time::Duration;

use hickory_resolver::proto::rr::RData;
use hickory_resolver::proto::rr::rdata::A;
use serde_json::{Value, json};

use super::lab::{Certs, Lab, Needs, Peer, smtp_send};
use super::matrix::{Check, Matrix};
use super::peers::{ServerProfile, ServerTls, poll};

const LEVELS: [&str; 4] = ["none", "may", "encrypt", "verify"];

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Valid,
    SelfSigned,
    WrongName,
    Expired,
    NotOffered,
    NoCert,
    Tls12,
}

pub const VARIANTS: [Variant; 7] = [
    Variant::Valid,
    Variant::SelfSigned,
    Variant::WrongName,
    Variant::Expired,
    Variant::NotOffered,
    Variant::NoCert,
    Variant::Tls12,
];

impl Variant {
    pub fn key(self) -> &'static str {
        match self {
            Variant::Valid => "valid",
            Variant::SelfSigned => "selfsigned",
            Variant::WrongName => "wrongname",
            Variant::Expired => "expired",
            Variant::NotOffered => "notls",
            Variant::NoCert => "nocert",
            Variant::Tls12 => "tls12",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Variant::Valid => "certificate valid for the MX name",
            Variant::SelfSigned => "self-signed certificate",
            Variant::WrongName => "certificate for another name",
            Variant::Expired => "expired certificate",
            Variant::NotOffered => "STARTTLS not offered",
            Variant::NoCert => {
                "STARTTLS advertised, no certificate loadable (Exim: 454, Postfix: handshake fails)"
            }
            Variant::Tls12 => "TLS 1.2 only",
        }
    }
}

pub fn mta_key(peer: Peer) -> &'static str {
    if peer == Peer::Postfix { "pf" } else { "ex" }
}

pub fn host(peer: Peer, v: Variant) -> String {
    format!("{}.{}.nh.test", v.key(), mta_key(peer))
}

fn rcpt(peer: Peer, v: Variant, level: &str) -> String {
    format!("u@{level}.{}.{}.out.test", v.key(), mta_key(peer))
}

fn sender(peer: Peer, v: Variant, level: &str) -> String {
    format!("o@{level}.{}.{}.snd.test", v.key(), mta_key(peer))
}

/// The next-hop listeners, certificates, DNS names, mailboxes and relay domains.
pub fn needs(certs: &Certs, needs: &mut Needs) {
    for peer in [Peer::Postfix, Peer::Exim] {
        let mut servers = Vec::new();
        for v in VARIANTS {
            let name = host(peer, v);
            let file = format!("nh-{}-{}", mta_key(peer), v.key());
            let tls = match v {
                Variant::Valid => ServerTls::Offer(certs.ca.server(&file, &[&name])),
                Variant::SelfSigned => ServerTls::Offer(certs.ca.self_signed(&file, &[&name])),
                Variant::WrongName => ServerTls::Offer(certs.ca.server(&file, &["other.nh.test"])),
                Variant::Expired => ServerTls::Offer(certs.ca.expired(&file, &[&name])),
                Variant::NotOffered => ServerTls::NotOffered,
                Variant::NoCert => ServerTls::NoCertificate,
                Variant::Tls12 => ServerTls::Tls12(certs.ca.server(&file, &[&name])),
            };
            let port = needs.port();
            servers.push(ServerProfile {
                name: v.key().into(),
                port,
                tls,
            });
            needs
                .dns
                .push((leak(format!("{name}.")), RData::A(A(Ipv4Addr::LOCALHOST))));
            needs.relay.push((
                format!(".{}.{}.out.test", v.key(), mta_key(peer)),
                format!("{name}:{port}"),
            ));
            let domains = LEVELS
                .iter()
                .map(|l| format!("{l}.{}.{}.out.test", v.key(), mta_key(peer)));
            match peer {
                Peer::Postfix => needs.postfix_mailboxes.extend(domains),
                _ => needs.exim_mailboxes.extend(domains),
            }
        }
        match peer {
            Peer::Postfix => needs.postfix_servers = servers,
            _ => needs.exim_servers = servers,
        }
    }
}

/// The DNS server's zone takes `&'static str` names; the lab lives as long as the test.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

#[derive(Debug)]
pub enum Expect {
    /// Delivered over this TLS version (None: plaintext), with `fallback` from a failed `may`.
    Delivered(Option<&'static str>, bool),
    Deferred(String),
}

pub fn expect(peer: Peer, v: Variant, level: &str) -> Expect {
    let h = host(peer, v);
    let tls = if v == Variant::Tls12 {
        "TLSv1.2"
    } else {
        "TLSv1.3"
    };
    match (level, v) {
        ("none", _) | ("may", Variant::NotOffered) => Expect::Delivered(None, false),
        ("may", Variant::NoCert) => Expect::Delivered(None, true),
        (_, Variant::NotOffered) => Expect::Deferred(format!(
            "4.7.4 TLS is required, but was not offered by host {h}[127.0.0.1]"
        )),
        (_, Variant::NoCert) if peer == Peer::Exim => Expect::Deferred(format!(
            "4.7.5 TLS is required, but host {h}[127.0.0.1] refused to start TLS: 454 TLS currently unavailable"
        )),
        (_, Variant::NoCert) => {
            Expect::Deferred("4.7.5 Cannot start TLS: handshake failure".into())
        }
        ("verify", Variant::SelfSigned | Variant::Expired) => {
            Expect::Deferred("4.7.5 Server certificate not trusted".into())
        }
        ("verify", Variant::WrongName) => {
            Expect::Deferred("4.7.5 Server certificate not verified".into())
        }
        _ => Expect::Delivered(Some(tls), false),
    }
}

pub async fn run(lab: &Lab, m: &mut Matrix) {
    let mut rules = Vec::new();
    for peer in [Peer::Postfix, Peer::Exim] {
        for v in VARIANTS {
            for level in LEVELS {
                let domain = rcpt(peer, v, level).split('@').nth(1).unwrap().to_string();
                rules.push(json!({"match": domain, "level": level}));
            }
        }
    }
    lab.set(
        reqwest::Method::PUT,
        "/v1/policy/outbound/rules",
        json!({"items": rules}),
    )
    .await;
    let mut sent = Vec::new();
    for peer in [Peer::Postfix, Peer::Exim] {
        for v in VARIANTS {
            for level in LEVELS {
                let (from, to) = (sender(peer, v, level), rcpt(peer, v, level));
                let body = format!(
                    "From: <{from}>\r\nTo: <{to}>\r\nSubject: interop outbound\r\n\r\nhello\r\n"
                );
                let reply = smtp_send(&lab.smtp(), &from, &[&to], body.as_bytes(), false).await;
                let id = super::peers::queue_id(&reply);
                sent.push((peer, v, level, reply.starts_with("250").then_some(id)));
            }
        }
    }
    let columns: Vec<String> = [Peer::Postfix, Peer::Exim]
        .iter()
        .flat_map(|p| LEVELS.iter().map(move |l| format!("{} `{l}`", p.name())))
        .collect();
    m.table(
        "Outbound: Postern relays to a next hop",
        &columns.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    for (peer, v, level, id) in sent {
        let column = format!("{} `{level}`", peer.name());
        let check = match id {
            None => Check::fail("not accepted by Postern", String::new()),
            Some(id) => judge(lab, peer, v, level, &id).await,
        };
        m.record(v.label(), &column, check);
    }
}

/// Waits until tracking shows the recipient delivered, deferred or bounced.
async fn settled(lab: &Lab, id: &str) -> Value {
    let done = poll(Duration::from_secs(60), async || {
        let record = lab.message(id).await;
        let status = record["deliveries"][0]["status"].as_str().unwrap_or("");
        ["delivered", "deferred", "bounced"]
            .contains(&status)
            .then_some(record)
    })
    .await;
    // Still open after a minute: the record as it stands is the evidence.
    match done {
        Some(record) => record,
        None => lab.message(id).await,
    }
}

async fn judge(lab: &Lab, peer: Peer, v: Variant, level: &str, id: &str) -> Check {
    let from = sender(peer, v, level);
    check(
        lab,
        peer,
        &from,
        expect(peer, v, level),
        level == "verify",
        id,
    )
    .await
}

/// Whether message `id` from `from` fared as `expected` (`verified`: a delivery must have had
/// its certificate verified), in tracking and in the next hop's log.
pub async fn check(
    lab: &Lab,
    peer: Peer,
    from: &str,
    expected: Expect,
    verified: bool,
    id: &str,
) -> Check {
    let record = settled(lab, id).await;
    let delivery = &record["deliveries"][0];
    match expected {
        Expect::Delivered(version, fallback) => {
            if delivery["status"] != "delivered" {
                return Check::fail("not delivered", delivery.to_string());
            }
            let Some(arrived) = lab.arrival(peer, from, Duration::from_secs(30)).await else {
                return Check::fail("not in the next hop's log", String::new());
            };
            if arrived.tls.as_deref() != version {
                return Check::fail("wrong TLS at the next hop", arrived.line);
            }
            if delivery["tls"]["version"].as_str() != version {
                return Check::fail("wrong TLS in tracking", delivery.to_string());
            }
            if record["marks"]["tls_fallback"] != fallback {
                return Check::fail("wrong fallback mark", record["marks"].to_string());
            }
            if verified && delivery["tls"]["server_certificate"] != "verified" {
                return Check::fail("certificate not recorded as verified", delivery.to_string());
            }
            let how = version.unwrap_or("plaintext");
            Check::Pass(if fallback {
                format!("{how} after fallback")
            } else {
                how.to_string()
            })
        }
        Expect::Deferred(text) => {
            let reason = delivery["reason"].as_str().unwrap_or("");
            if delivery["status"] != "deferred" || !reason.contains(&text) {
                return Check::fail(
                    "wrong outcome",
                    format!("wanted deferred with {text:?}: {delivery}"),
                );
            }
            if let Some(a) = lab.arrival(peer, from, Duration::from_millis(500)).await {
                return Check::fail("the next hop received it", a.line);
            }
            Check::Pass(format!("deferred {}", text.split(' ').next().unwrap_or("")))
        }
    }
}
