//! Mail integrity end to end (issue 10, point 4) and DSNs across MTAs (point 5).
//!
//! Postfix -> Postern -> Exim and Exim -> Postern -> Postfix carry messages that are hard to
//! relay unchanged (8-bit bodies, SMTPUTF8 addresses, 998-octet lines, leading dots, a 10 MiB
//! attachment, folded headers), each DKIM-signed (simple/simple) before the first MTA. The copy
//! in the last MTA's Maildir must be the sent message byte for byte after the trace headers the
//! three hops prepended, of which exactly one is Postern's, and dkimpy must still verify it.
//! A DSN Postern sends is taken by Postfix and Exim as one (null sender) and parses as an RFC 3464
//! report; a DSN Postfix sends reaches Exim through Postern with only Postern's Received added.

use std::process::{Command, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::lab::{Lab, Needs, Peer, smtp_send};
use super::matrix::{Check, Matrix};
use super::peers::{self, ClientProfile, ClientTls, poll};

const TOOL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/interop/mail_tool.py"
);

/// Postfix -> Postern -> Exim uses `pe.int.test`, the other way `ep.int.test`; Postern's DSNs
/// go to `pb.int.test` (Postfix) and `eb.int.test` (Exim); Postfix bounces mail for
/// `nowhere.test` itself.
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
    for chunk in base64(&raw).as_bytes().chunks(76) {
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

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len() / 3 * 4 + 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Runs mail_tool.py with `input` on its standard input; its standard output.
fn python(args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("python3")
        .arg(TOOL)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Written from a thread: a 14 MB message does not fit in the pipe while the tool writes.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "mail_tool.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn python_text(args: &[&str], input: &[u8]) -> String {
    String::from_utf8_lossy(&python(args, input))
        .trim()
        .to_string()
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
    std::fs::write(&public, base64(&der)).unwrap();
    (key, public.display().to_string())
}

/// A Maildir copy with LF line ends back in SMTP's CRLF.
fn crlf(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 40);
    for line in message.split_inclusive(|b| *b == b'\n') {
        match line.strip_suffix(b"\n") {
            Some(l) if !l.ends_with(b"\r") => {
                out.extend_from_slice(l);
                out.extend_from_slice(b"\r\n");
            }
            _ => out.extend_from_slice(line),
        }
    }
    out
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
            Check::Fail {
                summary: "not accepted by the first MTA".into(),
                evidence: reply,
            }
        } else {
            let mailbox = || {
                if from_peer == Peer::Postfix {
                    lab.exim.mailbox()
                } else {
                    lab.postfix.mailbox()
                }
            };
            let needle = format!("Message-ID: {message_id}");
            match poll(Duration::from_secs(120), || {
                mailbox()
                    .into_iter()
                    .find(|m| m.windows(needle.len()).any(|w| w == needle.as_bytes()))
            }) {
                None => Check::Fail {
                    summary: "not delivered".into(),
                    evidence: format!("{message_id} not in the last MTA's Maildir"),
                },
                Some(delivered) => compare(&crlf(&delivered), &signed, &public),
            }
        };
        m.record(label, column, check);
    }
    dsns(lab, m).await;
}

fn sign(key: &str, message: &[u8]) -> Vec<u8> {
    let signed = python(&["sign", key], message);
    assert!(signed.ends_with(message), "dkimpy only prepends its header");
    signed
}

fn compare(delivered: &[u8], sent: &[u8], public: &str) -> Check {
    let fail = |summary: &str, evidence: String| Check::Fail {
        summary: summary.into(),
        evidence,
    };
    let Some(prefix) = delivered.strip_suffix(sent) else {
        return fail(
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
        return fail(
            "something other than header fields prepended",
            String::from_utf8_lossy(prefix).into(),
        );
    };
    // Postfix's virtual delivery adds Delivered-To, X-Original-To and Return-Path.
    let trace = ["Received", "Return-Path", "Delivered-To", "X-Original-To"];
    if let Some(other) = names.iter().find(|n| !trace.contains(&n.as_str())) {
        return fail("a non-trace header added", other.clone());
    }
    let ours = String::from_utf8_lossy(prefix).matches("(Postern)").count();
    if ours != 1 {
        return fail(
            "not exactly one Postern Received header",
            String::from_utf8_lossy(prefix).into(),
        );
    }
    let dkim = python_text(&["verify", public], delivered);
    if dkim != "pass" {
        return fail("DKIM fails", dkim);
    }
    // The digest changes every run (the DKIM signature's time and key): logged, not tabled.
    eprintln!(
        "[interop] {} octets, sha256 {} sent and delivered",
        sent.len(),
        digest(sent)
    );
    Check::Pass("identical, DKIM pass".into())
}

/// Postern's DSNs reach Postfix and Exim as DSNs; Postfix's DSN passes through Postern.
async fn dsns(lab: &Lab, m: &mut Matrix) {
    m.table("DSNs across MTAs", &["Postfix", "Exim"]);
    let bounced = "a DSN from Postern (recipient refused with 550 by the next hop)";
    for (peer, domain) in [(Peer::Postfix, "pb.int.test"), (Peer::Exim, "eb.int.test")] {
        let from = format!("alice@{domain}");
        let body = format!(
            "From: <{from}>\r\nTo: <bad@dsn.in.test>\r\nSubject: will bounce\r\nMessage-ID: <bounce.{domain}@int.test>\r\n\r\nhello\r\n"
        );
        let reply = smtp_send(
            &lab.smtp(),
            &from,
            &["bad@dsn.in.test"],
            body.as_bytes(),
            false,
        )
        .await;
        let check = if !reply.starts_with("250") {
            Check::Fail {
                summary: "not accepted by Postern".into(),
                evidence: reply,
            }
        } else {
            postern_dsn(
                lab,
                peer,
                &from,
                &format!("Message-ID: <bounce.{domain}@int.test>"),
            )
        };
        m.record(bounced, peer.name(), check);
    }
    // Postfix bounces mail for nowhere.test itself, to a sender whose domain it sends to Postern.
    let from = "carol@pe.int.test";
    let body = "From: <carol@pe.int.test>\r\nTo: <x@nowhere.test>\r\nSubject: Postfix bounces this\r\nMessage-ID: <postfix-dsn@int.test>\r\n\r\nhello\r\n";
    let reply = smtp_send(
        &lab.postfix.inject,
        from,
        &["x@nowhere.test"],
        body.as_bytes(),
        false,
    )
    .await;
    let check = if reply.starts_with("250") {
        postfix_dsn_through_postern(lab)
    } else {
        Check::Fail {
            summary: "Postfix refused the message".into(),
            evidence: reply,
        }
    };
    m.record(
        "a DSN from Postfix, relayed by Postern to Exim",
        "Exim",
        check,
    );
}

fn postern_dsn(lab: &Lab, peer: Peer, rcpt: &str, needle: &str) -> Check {
    let fail = |summary: &str, evidence: String| Check::Fail {
        summary: summary.into(),
        evidence,
    };
    let mailbox = || {
        if peer == Peer::Postfix {
            lab.postfix.mailbox()
        } else {
            lab.exim.mailbox()
        }
    };
    let Some(dsn) = poll(Duration::from_secs(60), || {
        mailbox()
            .into_iter()
            .find(|m| m.windows(needle.len()).any(|w| w == needle.as_bytes()))
    }) else {
        return fail(
            "no DSN delivered",
            format!("nothing with {needle:?} for {rcpt}"),
        );
    };
    // The MTA's own record: a message from the null sender.
    let null_sender = match peer {
        Peer::Postfix => {
            let log = lab.postfix.log();
            log.lines()
                .filter(|l| l.contains(&format!("to=<{rcpt}>")) && l.contains("status=sent"))
                .any(|l| {
                    let qid = l
                        .split(": to=")
                        .next()
                        .unwrap_or("")
                        .rsplit(' ')
                        .next()
                        .unwrap_or("");
                    log.contains(&format!("{qid}: from=<>,"))
                })
        }
        _ => lab
            .exim
            .log()
            .lines()
            .any(|l| l.contains(" <= <> ") && l.ends_with(&format!("for {rcpt}"))),
    };
    if !null_sender {
        return fail(
            "not received from the null sender",
            format!("no null-sender arrival for {rcpt} in the log"),
        );
    }
    let report: serde_json::Value =
        serde_json::from_str(&python_text(&["dsn", "-"], &crlf(&dsn))).unwrap();
    let recipient = &report["per_recipient"][0];
    let ok = report["content_type"] == "multipart/report"
        && report["report_type"] == "delivery-status"
        && report["auto_submitted"] == "auto-replied"
        && recipient["Action"] == "failed"
        && recipient["Status"]
            .as_str()
            .is_some_and(|s| s.starts_with('5'))
        && recipient["Final-Recipient"]
            .as_str()
            .is_some_and(|s| s.contains("bad@dsn.in.test"))
        && recipient["Diagnostic-Code"]
            .as_str()
            .is_some_and(|s| s.starts_with("smtp; 550"))
        && report["per_message"]["Reporting-MTA"]
            .as_str()
            .is_some_and(|s| s.starts_with("dns;"));
    if !ok {
        return fail("not an RFC 3464 report", report.to_string());
    }
    Check::Pass("null sender, parsed as delivery-status".into())
}

fn postfix_dsn_through_postern(lab: &Lab) -> Check {
    let fail = |summary: &str, evidence: String| Check::Fail {
        summary: summary.into(),
        evidence,
    };
    let needle = b"Reporting-MTA: dns; postfix.lab";
    let Some(dsn) = poll(Duration::from_secs(60), || {
        lab.exim
            .mailbox()
            .into_iter()
            .find(|m| m.windows(needle.len()).any(|w| w == needle))
    }) else {
        return fail("Postfix's DSN did not reach Exim", String::new());
    };
    let dsn = crlf(&dsn);
    let text = String::from_utf8_lossy(&dsn);
    // Exim's Received, Postern's, then the message as Postfix's bounce daemon wrote it (which
    // begins with Postfix's own Received).
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let received: Vec<&str> = head.split("\r\nReceived: ").collect();
    let postern = received.iter().filter(|r| r.contains("(Postern)")).count();
    if postern != 1 || !received.get(1).is_some_and(|r| r.contains("(Postern)")) {
        return fail(
            "not exactly one Postern Received, second from the top",
            head.into(),
        );
    }
    if !lab
        .exim
        .log()
        .lines()
        .any(|l| l.contains(" <= <> ") && l.ends_with("for carol@pe.int.test"))
    {
        return fail(
            "Exim did not receive it from the null sender",
            String::new(),
        );
    }
    let report: serde_json::Value =
        serde_json::from_str(&python_text(&["dsn", "-"], &dsn)).unwrap();
    if report["report_type"] != "delivery-status"
        || report["per_recipient"][0]["Final-Recipient"]
            .as_str()
            .is_none_or(|r| !r.contains("x@nowhere.test"))
    {
        return fail("not Postfix's report", report.to_string());
    }
    Check::Pass("delivered, Postfix's report intact".into())
}
