//! DSNs across MTAs (issue 10, point 5): a DSN Postern sends reaches Postfix and Exim from the
//! null sender (they take it as a DSN) and Python's email package reads it as an RFC 3464
//! report; when their final delivery of it fails, they do not bounce it back (Postfix discards
//! it, Exim freezes it); a DSN Postfix sends reaches Exim through Postern with only
//! Postern's Received added.

use super::lab::{Lab, Peer, smtp_send};
use super::mail::{find, python_text};
use super::matrix::{Check, Matrix};

/// Postern's DSNs reach Postfix and Exim as DSNs; Postfix's DSN passes through Postern.
pub async fn run(lab: &Lab, m: &mut Matrix) {
    m.table("DSNs across MTAs", &["Postfix", "Exim"]);
    for (peer, domain) in [(Peer::Postfix, "pb.int.test"), (Peer::Exim, "eb.int.test")] {
        let from = format!("alice@{domain}");
        let check = match bounce_through_postern(lab, &from).await {
            Ok(message_id) => postern_dsn(lab, peer, &from, &format!("Message-ID: {message_id}")),
            Err(refused) => refused,
        };
        m.record(
            "a DSN from Postern (recipient refused with 550 by the next hop)",
            peer.name(),
            check,
        );
        // The same DSN to a mailbox the MTA fails after accepting the message.
        let from = format!("undeliverable@{domain}");
        let check = match bounce_through_postern(lab, &from).await {
            Ok(_) => not_bounced_back(lab, peer, &from),
            Err(refused) => refused,
        };
        m.record(
            "a DSN from Postern to a mailbox that fails after acceptance",
            peer.name(),
            check,
        );
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
    let Some(dsn) = find(mailbox, needle.as_bytes()) else {
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
        serde_json::from_str(&python_text(&["dsn", "-"], &dsn)).unwrap();
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
    let Some(dsn) = find(|| lab.exim.mailbox(), needle) else {
        return fail("Postfix's DSN did not reach Exim", String::new());
    };
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

/// The MTA's own log shows the failed delivery of a null-sender message ending without a bounce.
fn not_bounced_back(lab: &Lab, peer: Peer, rcpt: &str) -> Check {
    let seen = super::peers::poll(std::time::Duration::from_secs(60), || {
        match peer {
            Peer::Postfix => {
                let log = lab.postfix.log();
                let failed = log.lines().find(|l| {
                    l.contains(&format!("to=<{rcpt}>")) && l.contains("status=bounced")
                })?;
                let qid = failed
                    .split(": to=")
                    .next()?
                    .rsplit(' ')
                    .next()?
                    .to_string();
                log.contains(&format!("{qid}: from=<>,")).then_some(())?;
                // A bounce of a bounce is discarded (or goes to the postmaster with
                // notify_classes=2bounce), never to the null sender.
                let removed = log
                    .lines()
                    .find(|l| l.contains(&format!("{qid}: removed")))?;
                let notice = format!("{qid}: sender non-delivery notification");
                Some((!log.contains(&notice), removed.to_string()))
            }
            _ => {
                let log = lab.exim.log();
                let arrival = log
                    .lines()
                    .find(|l| l.contains(" <= <> ") && l.ends_with(&format!("for {rcpt}")))?;
                let id = arrival.split(' ').nth(2)?.to_string();
                log.lines()
                    .find(|l| l.contains(&format!(" {id} ** {rcpt}")))?;
                let frozen = log.lines().find(|l| l.contains(&format!(" {id} Frozen")))?;
                Some((true, frozen.to_string()))
            }
        }
    });
    match seen {
        Some((true, line)) => {
            eprintln!("[interop] {line}");
            Check::Pass("null sender, not bounced back".into())
        }
        Some((false, line)) => Check::Fail {
            summary: "bounced back".into(),
            evidence: line,
        },
        None => Check::Fail {
            summary: "no failed delivery in the log".into(),
            evidence: rcpt.into(),
        },
    }
}

/// Sends a message from `from` through Postern to a recipient the sink refuses with 550, so
/// that Postern bounces it to `from`; the message's Message-ID.
async fn bounce_through_postern(lab: &Lab, from: &str) -> Result<String, Check> {
    let message_id = format!("<bounce.{from}>");
    let body = format!(
        "From: <{from}>\r\nTo: <bad@dsn.in.test>\r\nSubject: will bounce\r\nMessage-ID: {message_id}\r\n\r\nhello\r\n"
    );
    let reply = smtp_send(
        &lab.smtp(),
        from,
        &["bad@dsn.in.test"],
        body.as_bytes(),
        false,
    )
    .await;
    if reply.starts_with("250") {
        Ok(message_id)
    } else {
        Err(Check::Fail {
            summary: "not accepted by Postern".into(),
            evidence: reply,
        })
    }
}
