//! Mail integrity end to end (issue 10, point 4).
//!
//! Postfix -> Postern -> Exim and Exim -> Postern -> Postfix carry messages that are hard to
//! relay unchanged (8-bit bodies, SMTPUTF8 addresses, 998-octet lines, leading dots, a 10 MiB
//! attachment, folded headers), each DKIM-signed (simple/simple) before the first MTA. The copy
//! in the last MTA's Maildir must be the sent message byte for byte after the trace headers the
//! three hops prepended, of which exactly one is Postern's, and dkimpy must still verify it.

use std::process::Command;

use sha2::{Digest, Sha256};

use super::lab::{Lab, Needs, Peer, smtp_send};
use super::matrix::{Check, Matrix};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::mail::{find, python, python_text};
use super::peers::{self, ClientProfile, ClientTls};

/// The routes of this section and the DSN section: Postfix -> Postern -> Exim uses
/// `pe.int.test`, the other way `ep.int.test`; Postern's DSNs go to `pb.int.test` (Postfix) and
/// `eb.int.test` (Exim); Postfix bounces mail for `nowhere.test` itself.
pub fn needs(needs: &mut Needs) {
    let client = |name: &str, domain: &str| ClientProfile {
        name: name.into(),
        domain: domain.into(),
        bind_ip: "127.0.0.1".into(),
        tls: ClientTls::May,
        cert: None,
    };
    needs.postfix_clients.push(client("pe", "pe.int.test"));
    needs.exim_clients.push(client("ep", "ep.int.test"));
    needs
        .exim_mailboxes
        .extend(["pe.int.test".into(), "eb.int.test".into()]);
    needs
        .postfix_mailboxes
        .extend(["ep.int.test".into(), "pb.int.test".into()]);
    needs.postfix_routes.push((
        "nowhere.test".into(),
        "error:5.1.1 no such user here".into(),
    ));
    // The DSN section's mailbox that fails after acceptance.
    needs.postfix_routes.push((
        "undeliverable@pb.int.test".into(),
        "error:5.2.1 mailbox unavailable".into(),
    ));
    // Bounces to the samples' senders go nowhere.
    needs
        .postfix_routes
        .push(("int.test".into(), "discard:".into()));
    for (domain, port) in [
        ("pe.int.test", needs.exim_inject),
        ("eb.int.test", needs.exim_inject),
        ("ep.int.test", needs.postfix_inject),
        ("pb.int.test", needs.postfix_inject),
    ] {
        needs
            .relay
            .push((domain.into(), format!("[127.0.0.1]:{port}")));
    }
}

struct Sample {
    label: &'static str,
    utf8: bool,
    local: &'static str,
    headers: String,
    body: Vec<u8>,
}

fn samples() -> Vec<Sample> {
    let mut eight_bit = "Grüße aus Köln, ¡hola!, 日本語のテキスト\r\n"
        .as_bytes()
        .to_vec();
    eight_bit.extend((0x80u8..=0xff).filter(|b| *b != 0x85)); // raw octets, no NEL games
    eight_bit.extend_from_slice(b"\r\n");
    let long_line = |c: u8| {
        let mut l = vec![c; 998];
        l.extend_from_slice(b"\r\n");
        l
    };
    let mut lines_998 = long_line(b'a');
    lines_998.extend(long_line(b'.'));
    lines_998.extend(long_line(b'z'));
    let dots = b".\r\n..\r\n.hidden\r\n..two dots\r\n. space\r\nend\r\n.\r\n".to_vec();
    let mut attachment = b"--b0\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b0\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let raw: Vec<u8> = (0..10 * 1024 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    for chunk in BASE64.encode(&raw).as_bytes().chunks(76) {
        attachment.extend_from_slice(chunk);
        attachment.extend_from_slice(b"\r\n");
    }
    attachment.extend_from_slice(b"--b0--\r\n");
    let s = |label, utf8, local, headers: &str, body: Vec<u8>| Sample {
        label,
        utf8,
        local,
        headers: headers.into(),
        body,
    };
    vec![
        s(
            "8-bit body",
            false,
            "eight",
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n",
            eight_bit,
        ),
        s(
            "SMTPUTF8 addresses",
            true,
            "zoë",
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n",
            "Grüße\r\n".as_bytes().to_vec(),
        ),
        s("lines of exactly 998 octets", false, "long", "", lines_998),
        s("leading dots", false, "dots", "", dots),
        s(
            "10 MiB attachment",
            false,
            "big",
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b0\"\r\n",
            attachment,
        ),
        s(
            "folded headers",
            false,
            "folded",
            "X-Folded: first part,\r\n\tsecond part after a tab,\r\n    third part after spaces\r\nReferences: <a@int.test>\r\n <b@int.test>\r\n\t<c@int.test>\r\n",
            b"folded\r\n".to_vec(),
        ),
    ]
}

/// The DKIM key pair: (private key file, public key base64 for the TXT record).
fn dkim_key(dir: &std::path::Path) -> (String, String) {
    let key = dir.join("dkim.pem").display().to_string();
    peers::run(Command::new("openssl").args(["genrsa", "-traditional", "-out", &key, "2048"]));
    let der = Command::new("openssl")
        .args(["rsa", "-in", &key, "-pubout", "-outform", "DER"])
        .output()
        .unwrap()
        .stdout;
    let public = dir.join("dkim.pub");
    std::fs::write(&public, BASE64.encode(&der)).unwrap();
    (key, public.display().to_string())
}

/// The header fields `prefix` consists of (their names), or `None` if it is not whole fields.
fn field_names(prefix: &[u8]) -> Option<Vec<String>> {
    let text = String::from_utf8_lossy(prefix);
    let mut names = Vec::new();
    for line in text.split_inclusive("\r\n") {
        if line.starts_with([' ', '\t']) {
            names.last()?;
        } else {
            names.push(line.split_once(':')?.0.to_string());
        }
    }
    Some(names)
}

fn digest(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub async fn run(lab: &Lab, m: &mut Matrix) {
    let (key, public) = dkim_key(lab.dir.path());
    let routes = [
        ("Postfix → Postern → Exim", Peer::Postfix, "pe.int.test"),
        ("Exim → Postern → Postfix", Peer::Exim, "ep.int.test"),
    ];
    m.table(
        "Integrity: the delivered message is the sent one",
        &[routes[0].0, routes[1].0],
    );
    let mut sent = Vec::new();
    for (n, sample) in samples().into_iter().enumerate() {
        for (column, from_peer, domain) in routes {
            let from = format!("{}@int.test", sample.local);
            let rcpt = format!("{}@{domain}", sample.local);
            let mut message = format!(
                "From: <{from}>\r\nTo: <{rcpt}>\r\nSubject: integrity {n}\r\nDate: Tue, 01 Dec 2026 12:00:00 +0000\r\nMessage-ID: <integrity.{n}.{domain}@int.test>\r\n{}\r\n",
                sample.headers
            )
            .into_bytes();
            message.extend_from_slice(&sample.body);
            let signed = sign(&key, &message);
            let addr = if from_peer == Peer::Postfix {
                &lab.postfix.inject
            } else {
                &lab.exim.inject
            };
            let reply = smtp_send(addr, &from, &[&rcpt], &signed, sample.utf8).await;
            sent.push((
                sample.label,
                column,
                from_peer,
                format!("<integrity.{n}.{domain}@int.test>"),
                signed,
                reply,
            ));
        }
    }
    for (label, column, from_peer, message_id, signed, reply) in sent {
        let check = if !reply.starts_with("250") {
            Check::fail("not accepted by the first MTA", reply)
        } else {
            let mailbox = || {
                if from_peer == Peer::Postfix {
                    lab.exim.mailbox()
                } else {
                    lab.postfix.mailbox()
                }
            };
            match find(mailbox, format!("Message-ID: {message_id}").as_bytes()).await {
                None => Check::fail(
                    "not delivered",
                    format!("{message_id} not in the last MTA's Maildir"),
                ),
                Some(delivered) => compare(&delivered, &signed, &public),
            }
        };
        m.record(label, column, check);
    }
}

fn sign(key: &str, message: &[u8]) -> Vec<u8> {
    let signed = python(&["sign", key], message);
    assert!(signed.ends_with(message), "dkimpy only prepends its header");
    signed
}

fn compare(delivered: &[u8], sent: &[u8], public: &str) -> Check {
    let Some(prefix) = delivered.strip_suffix(sent) else {
        return Check::fail(
            "changed",
            format!(
                "sent {} octets (sha256 {}), delivered {} octets do not end with them",
                sent.len(),
                digest(sent),
                delivered.len()
            ),
        );
    };
    let Some(names) = field_names(prefix) else {
        return Check::fail(
            "something other than header fields prepended",
            String::from_utf8_lossy(prefix),
        );
    };
    // Postfix's virtual delivery adds Delivered-To, X-Original-To and Return-Path.
    let trace = ["Received", "Return-Path", "Delivered-To", "X-Original-To"];
    if let Some(other) = names.iter().find(|n| !trace.contains(&n.as_str())) {
        return Check::fail("a non-trace header added", other.clone());
    }
    let ours = String::from_utf8_lossy(prefix).matches("(Postern)").count();
    if ours != 1 {
        return Check::fail(
            "not exactly one Postern Received header",
            String::from_utf8_lossy(prefix),
        );
    }
    let dkim = python_text(&["verify", public], delivered);
    if dkim != "pass" {
        return Check::fail("DKIM fails", dkim);
    }
    // The digest changes every run (the DKIM signature's time and key): logged, not tabled.
    eprintln!(
        "[interop] {} octets, sha256 {} sent and delivered",
        sent.len(),
        digest(sent)
    );
    Check::Pass("identical, DKIM pass".into())
}
