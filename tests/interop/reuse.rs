//! Connection reuse against real next hops (issue 11, point 4): four messages to one Postfix or
//! Exim next hop, `may` and `verify` alternating, each sent once the previous one is delivered.
//! Reuse (RSET pipelined with the next MAIL) must give exactly one session per level, counted in
//! the next hop's own log, with every message delivered over TLS and the `verify` ones verified.

use std::net::Ipv4Addr;
use std::time::Duration;

use hickory_resolver::proto::rr::RData;
use hickory_resolver::proto::rr::rdata::A;
use serde_json::json;

use super::lab::{Certs, Lab, Needs, Peer, smtp_send};
use super::matrix::{Check, Matrix};
use super::peers::{ServerProfile, ServerTls, poll, queue_id};

const ORDER: [&str; 4] = ["may", "verify", "may", "verify"];

fn key(peer: Peer) -> &'static str {
    if peer == Peer::Postfix { "pf" } else { "ex" }
}

fn domain(peer: Peer, level: &str) -> String {
    format!("{level}.reuse.{}.out.test", key(peer))
}

/// A next hop with a certificate valid for its name, for each MTA.
pub fn needs(certs: &Certs, needs: &mut Needs) {
    for peer in [Peer::Postfix, Peer::Exim] {
        let name = format!("reuse.{}.nh.test", key(peer));
        let port = needs.port();
        let profile = ServerProfile {
            name: "reuse".into(),
            port,
            tls: ServerTls::Offer(
                certs
                    .ca
                    .server(&format!("nh-{}-reuse", key(peer)), &[&name]),
            ),
        };
        needs.dns.push((
            Box::leak(format!("{name}.").into_boxed_str()),
            RData::A(A(Ipv4Addr::LOCALHOST)),
        ));
        needs.relay.push((
            format!(".reuse.{}.out.test", key(peer)),
            format!("{name}:{port}"),
        ));
        let domains = ["may", "verify"].map(|l| domain(peer, l));
        match peer {
            Peer::Postfix => {
                needs.postfix_servers.push(profile);
                needs.postfix_mailboxes.extend(domains);
            }
            _ => {
                needs.exim_servers.push(profile);
                needs.exim_mailboxes.extend(domains);
            }
        }
    }
}

/// Sessions the next hop logged on its reuse service.
fn sessions(lab: &Lab, peer: Peer) -> usize {
    match peer {
        Peer::Postfix => lab
            .postfix
            .log()
            .lines()
            .filter(|l| l.contains("nh/reuse/smtpd[") && l.contains(": connect from"))
            .count(),
        _ => {
            let Some((_, port)) = lab.exim.servers.iter().find(|(n, _)| n == "reuse") else {
                return 0;
            };
            lab.exim
                .log()
                .lines()
                .filter(|l| l.contains("SMTP connection from") && l.contains(&format!("]:{port} ")))
                .count()
        }
    }
}

pub async fn run(lab: &Lab, m: &mut Matrix) {
    let mut rules = Vec::new();
    for peer in [Peer::Postfix, Peer::Exim] {
        for level in ["may", "verify"] {
            rules.push(json!({"match": domain(peer, level), "level": level}));
        }
    }
    lab.set(
        reqwest::Method::PUT,
        "/v1/policy/outbound/rules",
        json!({"items": rules}),
    )
    .await;
    m.table(
        "Outbound: one connection carries several messages",
        &["Postfix", "Exim"],
    );
    for peer in [Peer::Postfix, Peer::Exim] {
        let check = reuse(lab, peer).await;
        m.record(
            "4 messages, `may` and `verify` alternating",
            peer.name(),
            check,
        );
    }
}

async fn reuse(lab: &Lab, peer: Peer) -> Check {
    let before = sessions(lab, peer);
    for (i, level) in ORDER.iter().enumerate() {
        let (from, to) = (
            format!("r{i}@reuse.snd.test"),
            format!("u{i}@{}", domain(peer, level)),
        );
        let body = format!("From: <{from}>\r\nTo: <{to}>\r\nSubject: reuse {i}\r\n\r\nhello\r\n");
        let reply = smtp_send(&lab.smtp(), &from, &[&to], body.as_bytes(), false).await;
        if !reply.starts_with("250") {
            return Check::fail("not accepted by Postern", reply);
        }
        let id = queue_id(&reply);
        let delivered = poll(Duration::from_secs(60), async || {
            let record = lab.message(&id).await;
            (record["deliveries"][0]["status"] == "delivered").then_some(record)
        })
        .await;
        let Some(record) = delivered else {
            return Check::fail("not delivered", lab.message(&id).await.to_string());
        };
        let tls = &record["deliveries"][0]["tls"];
        if tls["version"].as_str().is_none() {
            return Check::fail("delivered without TLS", record.to_string());
        }
        if *level == "verify" && tls["server_certificate"] != "verified" {
            return Check::fail("certificate not verified", record.to_string());
        }
        if lab
            .arrival(peer, &from, Duration::from_secs(30))
            .await
            .is_none()
        {
            return Check::fail("not in the next hop's log", String::new());
        }
    }
    let count = sessions(lab, peer) - before;
    if count != 2 {
        return Check::fail(
            "wrong number of sessions",
            format!("{count} sessions for 4 messages (one per level expected)"),
        );
    }
    Check::Pass("2 sessions (one per level)".into())
}
