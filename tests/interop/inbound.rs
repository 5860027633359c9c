//! The inbound matrix (issue 10, point 2): real MTAs and command-line clients send to Postern
//! under every inbound level, by IP rule and by sender-domain rule, over TLS 1.2 and 1.3, at
//! `medium` and `high`, with no client certificate, a trusted one and an untrusted one, first
//! with no sender-domain `verify` rule in the policy and then with some (every session then gets
//! a CertificateRequest). Each cell is checked from the peer's side (its log or its output) and
//! from ours (the tracking record and, for accepted mail, the Received header).

use std::time::Duration;

use serde_json::{Value, json};

use super::clients::{self, Cli};
use super::lab::{Lab, Peer};
use super::matrix::{Check, Matrix};
use super::peers::{ClientProfile, ClientTls, Fate, queue_id};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Ip(&'static str, &'static str),
    Sender(&'static str, &'static str),
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Cert {
    Absent,
    Trusted,
    Untrusted,
}

#[derive(Clone, Copy)]
pub enum Expect {
    /// Queued: over this TLS version (None: in plaintext), with this client certificate status,
    /// and with a 256-bit suite when `high`.
    Queued(Option<&'static str>, &'static str, bool),
    /// This reply, docs/src/policy.md#inbound verbatim (`{}` is the sender in angle brackets).
    Reply(&'static str),
    /// The TLS handshake fails (the server offers no suite the client accepts).
    Handshake,
}

#[derive(Clone, Copy)]
pub struct Case {
    pub n: u8,
    pub label: &'static str,
    pub rule: Rule,
    pub tls: ClientTls,
    pub cert: Cert,
    pub expect: Expect,
    /// A sender-domain `verify` case: it exists only in the phase with such rules.
    pub verify_rule: bool,
}

const MUST_USE_TLS: &str = "530 5.7.0 {}: Sender address rejected: Must use TLS";
const CIPHER: &str = "421 4.7.0 {}: Sender address rejected: Cipher strength too low";
const UNVERIFIED: &str = "421 4.7.1 {}: Sender address rejected: Unverified client certificate";
const MUST_NOT: &str = "421 4.7.0 {}: Sender address rejected: Must not use TLS";

/// One row per cell kind; the numbers give each cell its own addresses (see `cell`).
#[rustfmt::skip]
pub fn cases() -> Vec<Case> {
    use ClientTls::*;
    use Expect::*;
    let c = |n, label, rule, tls, cert, expect| Case {
        n, label, rule, tls, cert, expect,
        verify_rule: matches!(rule, Rule::Sender("verify", _)),
    };
    let (ip, sender) = (Rule::Ip, Rule::Sender);
    let (none, trusted, untrusted) = (Cert::Absent, Cert::Trusted, Cert::Untrusted);
    vec![
        c(1, "IP `none`", ip("none", "medium"), May, none, Queued(None, "none", false)),
        c(2, "IP `may`, TLS 1.3", ip("may", "medium"), May, none, Queued(Some("TLSv1.3"), "none", false)),
        c(3, "IP `may`, TLS 1.2", ip("may", "medium"), MayTls12, none, Queued(Some("TLSv1.2"), "none", false)),
        c(4, "IP `encrypt`, client in plaintext", ip("encrypt", "medium"), Never, none, Reply(MUST_USE_TLS)),
        c(5, "IP `encrypt`", ip("encrypt", "medium"), May, none, Queued(Some("TLSv1.3"), "none", false)),
        c(6, "IP `encrypt` `high`", ip("encrypt", "high"), May, none, Queued(Some("TLSv1.3"), "none", true)),
        c(7, "IP `encrypt` `high`, client AES-128 only", ip("encrypt", "high"), RequireAes128, none, Handshake),
        c(8, "IP `verify`, no certificate", ip("verify", "medium"), May, none, Reply(UNVERIFIED)),
        c(9, "IP `verify`, trusted certificate", ip("verify", "medium"), May, trusted, Queued(Some("TLSv1.3"), "verified", false)),
        c(10, "IP `verify`, trusted certificate, TLS 1.2", ip("verify", "medium"), MayTls12, trusted, Queued(Some("TLSv1.2"), "verified", false)),
        c(11, "IP `verify`, untrusted certificate", ip("verify", "medium"), May, untrusted, Reply(UNVERIFIED)),
        c(12, "sender `none`, client in plaintext", sender("none", "medium"), Never, none, Queued(None, "none", false)),
        c(13, "sender `none` on a TLS session", sender("none", "medium"), May, none, Reply(MUST_NOT)),
        c(14, "sender `may`, client in plaintext", sender("may", "medium"), Never, none, Queued(None, "none", false)),
        c(15, "sender `encrypt`, client in plaintext", sender("encrypt", "medium"), Never, none, Reply(MUST_USE_TLS)),
        c(16, "sender `encrypt`", sender("encrypt", "medium"), May, none, Queued(Some("TLSv1.3"), "none", false)),
        c(17, "sender `encrypt` `high`, client AES-128 only", sender("encrypt", "high"), RequireAes128, none, Reply(CIPHER)),
        c(18, "sender `verify`, no certificate", sender("verify", "medium"), May, none, Reply(UNVERIFIED)),
        c(19, "sender `verify`, trusted certificate", sender("verify", "medium"), May, trusted, Queued(Some("TLSv1.3"), "verified", false)),
        c(20, "sender `verify`, trusted certificate, TLS 1.2", sender("verify", "medium"), MayTls12, trusted, Queued(Some("TLSv1.2"), "verified", false)),
        c(21, "sender `verify`, untrusted certificate", sender("verify", "medium"), May, untrusted, Reply(UNVERIFIED)),
    ]
}

/// Phase 1 has no sender-domain `verify` rule; phase 2 has them (cases 18 to 21).
pub const PHASES: [u8; 2] = [1, 2];

fn phase_label(phase: u8) -> &'static str {
    if phase == 1 {
        "no sender `verify` rule"
    } else {
        "sender `verify` rules present"
    }
}

/// Every address and name of one cell: peer `p`, case `n`, phase.
pub struct Cell {
    pub bind_ip: String,
    pub sender: String,
    pub rcpt: String,
    pub name: String,
}

pub fn cell(p: u8, n: u8, phase: u8) -> Cell {
    Cell {
        bind_ip: format!("127.{n}.{p}.{phase}"),
        sender: format!("s@p{p}x{phase}.c{n}.snd.test"),
        rcpt: format!("u@p{p}x{phase}.c{n}.in.test"),
        name: format!("c{n}x{phase}"),
    }
}

fn runs(case: &Case, phase: u8) -> bool {
    phase == 2 || !case.verify_rule
}

/// Both MTAs' sending profiles for every cell; Postfix's bounces of refused cells go nowhere.
pub fn needs(certs: &super::lab::Certs, needs: &mut super::lab::Needs) {
    needs
        .postfix_clients
        .extend(profiles(certs, Peer::Postfix.number()));
    needs
        .exim_clients
        .extend(profiles(certs, Peer::Exim.number()));
    needs
        .postfix_routes
        .push((".snd.test".into(), "discard:".into()));
}

/// The sending profiles an MTA (peer number `p`) needs for every cell.
fn profiles(lab_certs: &super::lab::Certs, p: u8) -> Vec<ClientProfile> {
    let mut out = Vec::new();
    for phase in PHASES {
        for case in cases().iter().filter(|c| runs(c, phase)) {
            let cell = cell(p, case.n, phase);
            out.push(ClientProfile {
                name: cell.name,
                domain: cell.rcpt.split('@').nth(1).unwrap().into(),
                bind_ip: cell.bind_ip,
                tls: case.tls,
                cert: lab_certs.client(case.cert).cloned(),
            });
        }
    }
    out
}

fn rules(phase: u8) -> Value {
    let items: Vec<Value> = cases()
        .iter()
        .filter(|c| runs(c, phase))
        .map(|c| match c.rule {
            Rule::Ip(level, strength) => {
                json!({"match": format!("127.{}.0.0/16", c.n), "level": level, "cipher_strength": strength})
            }
            Rule::Sender(level, strength) => {
                json!({"match": format!(".c{}.snd.test", c.n), "level": level, "cipher_strength": strength})
            }
        })
        .collect();
    json!({ "items": items })
}

/// What a peer saw of one cell, normalised.
enum Seen {
    Queued {
        id: String,
        tls: Option<String>,
    },
    Refused(String),
    TlsFailed(String),
    /// A client that only speaks TLS found no STARTTLS in the EHLO reply (its output).
    NotOffered(String),
    /// The peer reported nothing (the evidence says where it was looked for).
    Missing(String),
}

pub async fn run(lab: &Lab, m: &mut Matrix) {
    let peers = [
        Peer::Postfix,
        Peer::Exim,
        Peer::Cli(Cli::Swaks),
        Peer::Cli(Cli::Openssl),
        Peer::Cli(Cli::Gnutls),
        Peer::Cli(Cli::Python),
    ];
    let columns: Vec<&str> = peers.iter().map(|p| p.name()).collect();
    m.table("Inbound: peer sends to Postern", &columns);
    for phase in PHASES {
        lab.set(
            reqwest::Method::PUT,
            "/v1/policy/inbound/rules",
            rules(phase),
        )
        .await;
        // Postfix and Exim deliver in the background: inject every cell, then read the logs.
        let mut queued = Vec::new();
        for peer in [Peer::Postfix, Peer::Exim] {
            for case in cases().iter().filter(|c| runs(c, phase)) {
                let cell = cell(peer.number(), case.n, phase);
                let id = lab
                    .inject(peer, &cell.sender, &cell.rcpt, &message(case, &cell))
                    .await;
                queued.push((peer, *case, id));
            }
        }
        for (peer, case, id) in queued {
            let cell = cell(peer.number(), case.n, phase);
            let seen = match lab
                .fate(peer, &id, &cell.rcpt, Duration::from_secs(60))
                .await
            {
                None => Seen::Missing(format!("no outcome for {id} in {}'s log", peer.name())),
                Some(Fate::Sent(text)) => Seen::Queued {
                    id: queue_id(&text),
                    tls: lab.client_tls(peer, &cell.name, &id),
                },
                Some(fate) if is_tls_failure(fate.text()) => Seen::TlsFailed(fate.text().into()),
                Some(fate) => Seen::Refused(fate.text().into()),
            };
            let check = judge(lab, &case, &cell, seen).await;
            m.record(&row(&case, phase), peer.name(), check);
        }
        for cli in [Cli::Swaks, Cli::Openssl, Cli::Gnutls, Cli::Python] {
            let peer = Peer::Cli(cli);
            for case in cases().iter().filter(|c| runs(c, phase)) {
                let mut cell = cell(peer.number(), case.n, phase);
                if !cli.binds() {
                    if matches!(case.rule, Rule::Ip(..)) {
                        continue;
                    }
                    cell.bind_ip = "127.0.0.1".into();
                }
                if case.tls == ClientTls::Never && !cli.plaintext() {
                    continue;
                }
                let t = clients::send(
                    cli,
                    &clients::Session {
                        postern: &lab.smtp(),
                        bind_ip: &cell.bind_ip,
                        from: &cell.sender,
                        to: &cell.rcpt,
                        tls: case.tls,
                        cert: lab.certs.client(case.cert),
                    },
                    &message(case, &cell),
                )
                .await;
                let seen = match t.verdict() {
                    _ if t.output.contains("Didn't find STARTTLS") => {
                        Seen::NotOffered(t.output.clone())
                    }
                    Some(v) if v.contains("queued as") => Seen::Queued {
                        id: queue_id(v),
                        tls: t.tls.clone(),
                    },
                    Some(v) => Seen::Refused(v.to_string()),
                    None => Seen::TlsFailed(
                        t.output
                            .lines()
                            .rev()
                            .take(6)
                            .collect::<Vec<_>>()
                            .join(" / "),
                    ),
                };
                let check = judge(lab, case, &cell, seen).await;
                m.record(&row(case, phase), peer.name(), check);
            }
        }
    }
}

fn row(case: &Case, phase: u8) -> String {
    format!("{}. {} · {}", case.n, case.label, phase_label(phase))
}

fn message(case: &Case, cell: &Cell) -> String {
    format!(
        "From: <{}>\r\nTo: <{}>\r\nSubject: interop inbound {}\r\nMessage-ID: <{}.{}@client.lab>\r\n\r\nhello\r\n",
        cell.sender, cell.rcpt, case.n, cell.name, cell.bind_ip
    )
}

fn is_tls_failure(text: &str) -> bool {
    ["Cannot start TLS", "TLS session", "TLS error", "handshake"]
        .iter()
        .any(|t| text.contains(t))
}

async fn judge(lab: &Lab, case: &Case, cell: &Cell, seen: Seen) -> Check {
    match (case.expect, seen) {
        (Expect::Queued(version, cert, high), Seen::Queued { id, tls }) => {
            if tls.as_deref() != version {
                return Check::fail(
                    "wrong TLS at the peer",
                    format!("peer saw {tls:?}, expected {version:?}"),
                );
            }
            let record = lab.message(&id).await;
            let source_tls = &record["source"]["tls"];
            let ours = source_tls["version"].as_str();
            if ours != version {
                return Check::fail("wrong TLS in tracking", format!("{id}: {source_tls}"));
            }
            if version.is_some() && source_tls["client_certificate"] != cert {
                return Check::fail(
                    "wrong client certificate status",
                    format!("{id}: {source_tls}"),
                );
            }
            let cipher = source_tls["cipher"].as_str().unwrap_or("");
            if high && !(cipher.contains("AES_256") || cipher.contains("CHACHA20")) {
                return Check::fail("not a 256-bit suite", format!("{id}: {cipher}"));
            }
            let Some(received) = lab.received_header(&id).await else {
                return Check::fail("not relayed", format!("{id} never reached the sink"));
            };
            let wanted = match version {
                Some(v) => format!(
                    "with ESMTPS id {id} for <{}> tls {cipher} ({v}, client certificate: {cert})",
                    cell.rcpt
                ),
                None => format!("with ESMTP id {id} for <{}>;", cell.rcpt),
            };
            if !received.contains(&wanted) {
                return Check::fail(
                    "wrong Received header",
                    format!("wanted {wanted:?} in {received:?}"),
                );
            }
            let v = version.unwrap_or("plaintext");
            Check::Pass(if cert == "verified" {
                format!("queued, {v}, certificate verified")
            } else {
                format!("queued, {v}")
            })
        }
        (Expect::Reply(template), Seen::Refused(text)) => {
            let wanted = template.replace("{}", &format!("<{}>", cell.sender));
            if !text.contains(&wanted) {
                return Check::fail(
                    "wrong reply",
                    format!("wanted {wanted:?}, peer reported {text:?}"),
                );
            }
            let found = lab.messages(&format!("sender={}", cell.sender)).await;
            let Some(record) = found.iter().find(|r| r["status"] == "rejected") else {
                return Check::fail("no rejected record in tracking", format!("{found:?}"));
            };
            let full = lab.message(record["id"].as_str().unwrap_or_default()).await;
            if record["marks"]["violation"] != true
                || full["violations"].as_array().is_none_or(Vec::is_empty)
            {
                return Check::fail("rejection not marked as a violation", full.to_string());
            }
            // `evaluate` gives the verdict the peer got, for the same client and session.
            let session = match case.tls {
                ClientTls::Never => Value::Null,
                tls => json!({
                    "high_cipher": tls != ClientTls::RequireAes128,
                    "client_certificate": match case.cert {
                        Cert::Absent => "none",
                        Cert::Trusted => "verified",
                        Cert::Untrusted => "unverified",
                    },
                }),
            };
            let explained = lab
                .rest(
                    reqwest::Method::POST,
                    "/v1/policy/evaluate",
                    json!({"direction": "inbound", "client_ip": cell.bind_ip, "sender": cell.sender, "tls": session}),
                )
                .await;
            let step = if case.tls == ClientTls::Never {
                "mail_from"
            } else {
                "mail_from_tls"
            };
            if explained[step]["reply"].as_str() != Some(wanted.as_str()) {
                return Check::fail(
                    "evaluate disagrees with the peer",
                    format!("wanted {wanted:?}: {}", explained[step]),
                );
            }
            // The session's certificate as Postern judged it: an untrusted certificate must have
            // been presented (and refused), not left out. gnutls-cli shares 127.0.0.1 with
            // other sessions, so its session is not picked out.
            if cell.bind_ip != "127.0.0.1" {
                let wanted = match (case.tls, case.cert) {
                    (ClientTls::Never, _) => None,
                    (_, Cert::Absent) => Some("none"),
                    (_, Cert::Untrusted) => Some("unverified"),
                    (_, Cert::Trusted) => Some("verified"),
                };
                let sessions = lab.connections(&format!("ip={}", cell.bind_ip)).await;
                let tls = &sessions.first().map_or(Value::Null, |s| s["tls"].clone());
                if tls["client_certificate"].as_str() != wanted {
                    return Check::fail(
                        "wrong client certificate status",
                        format!("wanted {wanted:?}: {sessions:?}"),
                    );
                }
            }
            Check::Pass(wanted.split(' ').take(2).collect::<Vec<_>>().join(" "))
        }
        (Expect::Queued(None, ..), Seen::NotOffered(output)) => {
            // Postern's side: the session stayed in plaintext.
            let sessions = lab.connections(&format!("ip={}", cell.bind_ip)).await;
            if sessions.is_empty() || !sessions[0]["tls"].is_null() {
                return Check::fail(
                    "no plaintext session in /v1/connections",
                    format!("{output} {sessions:?}"),
                );
            }
            Check::Pass("STARTTLS not offered".into())
        }
        (Expect::Handshake, Seen::TlsFailed(text)) => {
            let found = lab
                .connections(&format!("ip={}&tls_failed=true", cell.bind_ip))
                .await;
            if found.is_empty() {
                return Check::fail("failed handshake not in /v1/connections", text);
            }
            Check::Pass("handshake refused".into())
        }
        (_, Seen::Queued { id, tls }) => {
            Check::fail("accepted", format!("queued as {id} over {tls:?}"))
        }
        (_, Seen::Refused(text)) => Check::fail("refused", text),
        (_, Seen::TlsFailed(text)) => Check::fail("TLS failed", text),
        (_, Seen::NotOffered(output)) => Check::fail("STARTTLS not offered", output),
        (_, Seen::Missing(evidence)) => Check::fail("no outcome", evidence),
    }
}
