//! MTA-STS against real next hops (issue 15): Postern delivers to a domain's MX hosts, which
//! are the outbound section's Postfix and Exim servers (a certificate valid for the MX name,
//! self-signed, for another name, expired, no STARTTLS, none loadable, TLS 1.2 only), under an
//! `enforce` and a `testing` policy served by the test's HTTPS policy host (its certificate
//! from the lab CA, which `/v1/trust` holds). Each cell checks the outcome (enforce is `verify`
//! with the MX check; testing delivers as the default `may` does) in tracking and in the next
//! hop's own log, and what tracking records for TLS-RPT: the policy source and mode, and the
//! result type of the failure.

use hickory_resolver::proto::rr::rdata::{A, MX, TXT};
use hickory_resolver::proto::rr::{Name, RData};
use serde_json::{Value, json};

use super::lab::{Lab, Needs, Peer, smtp_send};
use super::matrix::{Check, Matrix};
use super::outbound::{VARIANTS, Variant, check, expect, host, mta_key};
use super::support::https::policy_host;

const MODES: [&str; 2] = ["enforce", "testing"];

/// Each MX next hop: its MTA, its kind, its port (`delivery.mx_port` while its cells run).
pub struct MxHosts(Vec<(Peer, Variant, u16)>);

fn domain(peer: Peer, v: Variant, mode: &str) -> String {
    format!("{mode}.{}.{}.sts.test", v.key(), mta_key(peer))
}

/// The records of each cell's domain; the outbound section made the next hops.
pub fn needs(needs: &mut Needs) -> MxHosts {
    let mut hosts = Vec::new();
    for peer in [Peer::Postfix, Peer::Exim] {
        let servers = match peer {
            Peer::Postfix => &needs.postfix_servers,
            _ => &needs.exim_servers,
        };
        let ports: Vec<(Variant, u16)> = VARIANTS
            .iter()
            .map(|v| {
                let s = servers
                    .iter()
                    .find(|s| s.name == v.key())
                    .expect("outbound's server");
                (*v, s.port)
            })
            .collect();
        for (v, port) in ports {
            hosts.push((peer, v, port));
            for mode in MODES {
                let d = domain(peer, v, mode);
                let mx = Name::from_ascii(format!("{}.", host(peer, v))).unwrap();
                let txt = RData::TXT(TXT::new(vec!["v=STSv1; id=1;".into()]));
                needs
                    .dns
                    .push((leak(format!("{d}.")), RData::MX(MX::new(10, mx))));
                needs.dns.push((leak(format!("_mta-sts.{d}.")), txt));
                let a = RData::A(A("127.0.0.1".parse().unwrap()));
                needs.dns.push((leak(format!("mta-sts.{d}.")), a));
                match peer {
                    Peer::Postfix => needs.postfix_mailboxes.push(d),
                    _ => needs.exim_mailboxes.push(d),
                }
            }
        }
    }
    MxHosts(hosts)
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// A table whose columns are each MTA under each mode.
fn table(m: &mut Matrix, title: &str) {
    let columns: Vec<String> = [Peer::Postfix, Peer::Exim]
        .iter()
        .flat_map(|p| MODES.map(|mode| column(*p, mode)))
        .collect();
    m.table(
        title,
        &columns.iter().map(String::as_str).collect::<Vec<_>>(),
    );
}

fn column(peer: Peer, mode: &str) -> String {
    format!("{} `{mode}`", peer.name())
}

/// The TLS-RPT result type tracking should record, if any (the same under both modes).
fn result_type(peer: Peer, v: Variant) -> Option<&'static str> {
    match v {
        Variant::Valid | Variant::Tls12 => None,
        Variant::SelfSigned => Some("certificate-not-trusted"),
        Variant::Expired => Some("certificate-expired"),
        Variant::WrongName => Some("certificate-host-mismatch"),
        Variant::NotOffered => Some("starttls-not-supported"),
        // Exim answers STARTTLS with 454; Postfix's handshake fails.
        Variant::NoCert if peer == Peer::Exim => Some("starttls-not-supported"),
        Variant::NoCert => Some("validation-failure"),
    }
}

pub async fn run(lab: &Lab, m: &mut Matrix, hosts: &MxHosts) {
    let names: Vec<String> = hosts
        .0
        .iter()
        .flat_map(|(p, v, _)| MODES.map(|mode| format!("mta-sts.{}", domain(*p, *v, mode))))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let files = lab.certs.ca.server("sts-policy-host", &refs);
    let read = |f: &str| std::fs::read_to_string(f).unwrap();
    let (https_port, routes, _) = policy_host((read(&files.cert), read(&files.key))).await;
    for (peer, v, _) in &hosts.0 {
        for mode in MODES {
            let policy = format!(
                "version: STSv1\r\nmode: {mode}\r\nmx: *.{}.nh.test\r\nmax_age: 86400\r\n",
                mta_key(*peer)
            );
            let name = format!("mta-sts.{}", domain(*peer, *v, mode));
            routes.lock().unwrap().insert(name, (200, policy));
        }
    }
    table(
        m,
        "MTA-STS: Postern delivers to a domain's MX hosts under its published policy",
    );
    for (peer, v, port) in &hosts.0 {
        // The MX hosts share `delivery.mx_port`: each next hop's cells run with its port.
        let mut settings = lab
            .rest(reqwest::Method::GET, "/v1/settings", Value::Null)
            .await;
        settings["delivery"]["mx_port"] = json!(port);
        settings["delivery"]["mta_sts_port"] = json!(https_port);
        settings["delivery"]["fetch_networks"] = json!(["127.0.0.0/8"]);
        lab.set(reqwest::Method::PUT, "/v1/settings", settings)
            .await;
        let mut sent = Vec::new();
        for mode in MODES {
            let d = domain(*peer, *v, mode);
            let (from, to) = (
                format!("o@{}", d.replace(".sts.test", ".stssnd.test")),
                format!("u@{d}"),
            );
            let body = format!(
                "From: <{from}>\r\nTo: <{to}>\r\nSubject: interop mta-sts\r\n\r\nhello\r\n"
            );
            let reply = smtp_send(&lab.smtp(), &from, &[&to], body.as_bytes(), false).await;
            let id = super::peers::queue_id(&reply);
            sent.push((mode, from, reply.starts_with("250").then_some(id)));
        }
        for (mode, from, id) in sent {
            let column = column(*peer, mode);
            let check = match id {
                None => Check::fail("not accepted by Postern", String::new()),
                Some(id) => judge(lab, *peer, *v, mode, &from, &id).await,
            };
            m.record(v.label(), &column, check);
        }
    }
    reports(lab, m, hosts).await;
}

/// The day's TLS-RPT reports, built from the sessions above: one session per domain, a
/// success or a failure of the cell's result type.
async fn reports(lab: &Lab, m: &mut Matrix, hosts: &MxHosts) {
    let today = postern_time::rfc3339_s(postern_time::now_s())[..10].to_string();
    let built = lab
        .rest(
            reqwest::Method::POST,
            "/v1/reports/tls/build",
            json!({"date": today}),
        )
        .await;
    table(
        m,
        "TLS-RPT: the report each of these domains gets for the day",
    );
    for (peer, v, _) in &hosts.0 {
        for mode in MODES {
            let d = domain(*peer, *v, mode);
            let column = column(*peer, mode);
            let report = built["items"]
                .as_array()
                .and_then(|items| items.iter().find(|r| r["policy_domain"] == d.as_str()));
            let check = match report {
                None => Check::fail("no report", built.to_string()),
                Some(r) => judge_report(&r["report"], mode, result_type(*peer, *v)),
            };
            m.record(v.label(), &column, check);
        }
    }
}

fn judge_report(report: &Value, mode: &str, want: Option<&str>) -> Check {
    let policy = &report["policies"][0];
    let summary = &policy["summary"];
    let (ok, failed) = (
        summary["total-successful-session-count"].as_u64(),
        summary["total-failure-session-count"].as_u64(),
    );
    let lines = policy["policy"]["policy-string"].to_string();
    if policy["policy"]["policy-type"] != "sts" || !lines.contains(&format!("mode: {mode}")) {
        return Check::fail("not reported under the sts policy", report.to_string());
    }
    let kind = policy["failure-details"][0]["result-type"].as_str();
    match (want, ok, failed, kind) {
        (None, Some(1), Some(0), None) => Check::Pass("1 successful session".into()),
        (Some(w), Some(0), Some(1), Some(k)) if k == w => Check::Pass(format!("1 failed: `{k}`")),
        _ => Check::fail(
            &format!("wanted one session, {}", want.unwrap_or("successful")),
            report.to_string(),
        ),
    }
}

async fn judge(lab: &Lab, peer: Peer, v: Variant, mode: &str, from: &str, id: &str) -> Check {
    let level = if mode == "enforce" { "verify" } else { "may" };
    let outcome = check(
        lab,
        peer,
        from,
        expect(peer, v, level),
        mode == "enforce",
        id,
    )
    .await;
    let Check::Pass(how) = outcome else {
        return outcome;
    };
    let record = lab.message(id).await;
    let attempt = record["deliveries"][0]["attempts"]
        .as_array()
        .and_then(|a| a.last().cloned())
        .unwrap_or(Value::Null);
    if attempt["policy_source"] != "mta-sts" || attempt["sts_mode"] != mode {
        return Check::fail("not decided by the MTA-STS policy", attempt.to_string());
    }
    let want = result_type(peer, v);
    if attempt["sts_failure"].as_str() != want {
        return Check::fail(
            &format!("TLS-RPT result {want:?} expected"),
            attempt.to_string(),
        );
    }
    Check::Pass(match want {
        Some(kind) => format!("{how}; `{kind}`"),
        None => how,
    })
}
