//! DSNs across MTAs (issue 10, point 5): a DSN Postern sends reaches Postfix and Exim from the
//! null sender (they take it as a DSN) and Python's email package reads it as an RFC 3464
//! report; when their final delivery of it fails, they do not bounce it back (Postfix discards
//! it, Exim freezes it); a DSN either MTA sends reaches the other through Postern with only
//! Postern's Received added.

use std::time::Duration;

use serde_json::Value;

use super::lab::{Lab, Peer, smtp_send};
use super::mail::{find, python_text};
use super::matrix::{Check, Matrix};
use super::peers::poll;

const MTAS: [Peer; 2] = [Peer::Postfix, Peer::Exim];

fn mailbox(lab: &Lab, peer: Peer) -> Vec<Vec<u8>> {
    match peer {
        Peer::Postfix => lab.postfix.mailbox(),
        _ => lab.exim.mailbox(),
    }
}

fn other(peer: Peer) -> Peer {
    if peer == Peer::Postfix {
        Peer::Exim
    } else {
        Peer::Postfix
    }
}

/// The routes of `integrity::needs`: Postern's DSNs to each MTA, and each MTA's mail to the other.
fn dsn_domain(peer: Peer) -> &'static str {
    if peer == Peer::Postfix {
        "pb.int.test"
    } else {
        "eb.int.test"
    }
}

fn via_postern_to_other(peer: Peer) -> &'static str {
    if peer == Peer::Postfix {
        "pe.int.test"
    } else {
        "ep.int.test"
    }
}

pub async fn run(lab: &Lab, m: &mut Matrix) {
    m.table("DSNs across MTAs", &["Postfix", "Exim"]);
    for peer in MTAS {
        let from = format!("alice@{}", dsn_domain(peer));
        let check = match bounce_through_postern(lab, &from).await {
            Ok(message_id) => postern_dsn(lab, peer, &from, &message_id).await,
            Err(refused) => refused,
        };
        m.record(
            "a DSN from Postern (recipient refused with 550 by the next hop)",
            peer.name(),
            check,
        );
    }
    for peer in MTAS {
        let from = format!("undeliverable@{}", dsn_domain(peer));
        let check = match bounce_through_postern(lab, &from).await {
            Ok(_) => not_bounced_back(lab, peer, &from).await,
            Err(refused) => refused,
        };
        m.record(
            "a DSN from Postern to a mailbox that fails after acceptance",
            peer.name(),
            check,
        );
    }
    for peer in MTAS {
        m.record(
            "a DSN from this MTA (mail for nowhere.test), relayed by Postern to the other",
            peer.name(),
            mta_dsn_through_postern(lab, peer).await,
        );
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
        Err(Check::fail("not accepted by Postern", reply))
    }
}

/// Whether the MTA's own log shows a message from the null sender delivered to `rcpt`.
async fn null_sender_arrival(lab: &Lab, peer: Peer, rcpt: &str) -> bool {
    // The Maildir file can be there before the MTA has logged the delivery.
    poll(Duration::from_secs(30), async || {
        null_sender_logged(lab, peer, rcpt).then_some(())
    })
    .await
    .is_some()
}

fn null_sender_logged(lab: &Lab, peer: Peer, rcpt: &str) -> bool {
    match peer {
        Peer::Postfix => {
            let log = lab.postfix.log();
            log.lines()
                .filter(|l| l.contains(&format!("to=<{rcpt}>")) && l.contains("status=sent"))
                .any(|l| log.contains(&format!("{}: from=<>,", postfix_qid(l, ": to="))))
        }
        _ => lab
            .exim
            .log()
            .lines()
            .any(|l| l.contains(" <= <> ") && l.ends_with(&format!("for {rcpt}"))),
    }
}

/// The queue id of a Postfix log line (the word before `marker`).
fn postfix_qid<'a>(line: &'a str, marker: &str) -> &'a str {
    line.split(marker)
        .next()
        .unwrap_or("")
        .rsplit(' ')
        .next()
        .unwrap_or("")
}

fn report(dsn: &[u8]) -> Value {
    serde_json::from_str(&python_text(&["dsn", "-"], dsn)).unwrap()
}

async fn postern_dsn(lab: &Lab, peer: Peer, rcpt: &str, message_id: &str) -> Check {
    let needle = format!("Message-ID: {message_id}");
    let Some(dsn) = find(|| mailbox(lab, peer), needle.as_bytes()).await else {
        return Check::fail(
            "no DSN delivered",
            format!("nothing with {needle:?} for {rcpt}"),
        );
    };
    if !null_sender_arrival(lab, peer, rcpt).await {
        return Check::fail(
            "not received from the null sender",
            format!("no null-sender arrival for {rcpt}"),
        );
    }
    let report = report(&dsn);
    let recipient = &report["per_recipient"][0];
    let field = |v: &Value, prefix: &str| v.as_str().is_some_and(|s| s.starts_with(prefix));
    let ok = report["content_type"] == "multipart/report"
        && report["report_type"] == "delivery-status"
        && report["auto_submitted"] == "auto-replied"
        && recipient["Action"] == "failed"
        && field(&recipient["Status"], "5")
        && field(&recipient["Final-Recipient"], "rfc822; bad@dsn.in.test")
        && field(&recipient["Diagnostic-Code"], "smtp; 550")
        && field(&report["per_message"]["Reporting-MTA"], "dns;");
    if !ok {
        return Check::fail("not an RFC 3464 report", report.to_string());
    }
    Check::Pass("null sender, parsed as delivery-status".into())
}

/// The MTA's own log shows the failed delivery of a null-sender message ending without a bounce.
async fn not_bounced_back(lab: &Lab, peer: Peer, rcpt: &str) -> Check {
    let seen = poll(Duration::from_secs(60), async || match peer {
        Peer::Postfix => {
            let log = lab.postfix.log();
            let failed = log
                .lines()
                .find(|l| l.contains(&format!("to=<{rcpt}>")) && l.contains("status=bounced"))?;
            let qid = postfix_qid(failed, ": to=");
            log.contains(&format!("{qid}: from=<>,")).then_some(())?;
            // Postfix discards a bounce of a bounce (with notify_classes=2bounce it would tell
            // the postmaster): the message is removed with no notification of any kind.
            let removed = log
                .lines()
                .find(|l| l.contains(&format!("{qid}: removed")))?;
            let notice = format!("{qid}: ");
            let notified = log
                .lines()
                .find(|l| l.contains(&notice) && l.contains("non-delivery notification"));
            Some(notified.map_or((true, removed.to_string()), |l| (false, l.to_string())))
        }
        _ => {
            let log = lab.exim.log();
            let arrival = log
                .lines()
                .find(|l| l.contains(" <= <> ") && l.ends_with(&format!("for {rcpt}")))?;
            let id = arrival.split(' ').nth(2)?;
            log.lines()
                .find(|l| l.contains(&format!(" {id} ** {rcpt}")))?;
            let frozen = log.lines().find(|l| l.contains(&format!(" {id} Frozen")))?;
            // A bounce Exim made of it would arrive as `<= <> R=<id>`.
            let bounce = log
                .lines()
                .find(|l| l.contains(" <= <> ") && l.contains(&format!(" R={id} ")));
            Some(bounce.map_or((true, frozen.to_string()), |l| (false, l.to_string())))
        }
    })
    .await;
    match seen {
        Some((true, _)) => Check::Pass("null sender, not bounced back".into()),
        Some((false, line)) => Check::fail("bounced back", line),
        None => Check::fail("no failed delivery in the log", rcpt),
    }
}

/// `origin` bounces mail for nowhere.test itself, to a sender whose domain it sends through
/// Postern to the other MTA: that copy is the origin's DSN with one Postern Received added.
async fn mta_dsn_through_postern(lab: &Lab, origin: Peer) -> Check {
    let from = format!("dsn-{}@{}", origin.number(), via_postern_to_other(origin));
    let inject = if origin == Peer::Postfix {
        &lab.postfix.inject
    } else {
        &lab.exim.inject
    };
    let body = format!(
        "From: <{from}>\r\nTo: <x@nowhere.test>\r\nSubject: bounced by the MTA\r\n\r\nhello\r\n"
    );
    let reply = smtp_send(inject, &from, &["x@nowhere.test"], body.as_bytes(), false).await;
    if !reply.starts_with("250") {
        return Check::fail("the MTA refused the message", reply);
    }
    let final_mta = other(origin);
    let origin_host = if origin == Peer::Postfix {
        "postfix.lab"
    } else {
        "exim.lab"
    };
    let needle = format!("Reporting-MTA: dns; {origin_host}");
    let Some(dsn) = find(|| mailbox(lab, final_mta), needle.as_bytes()).await else {
        return Check::fail("the DSN did not reach the other MTA", needle);
    };
    if !null_sender_arrival(lab, final_mta, &from).await {
        return Check::fail("not received from the null sender", String::new());
    }
    // From the top: the final MTA's trace fields, Postern's one Received, then the DSN as the
    // origin wrote it, which begins with the origin's own Received ("by <origin host>").
    let text = String::from_utf8_lossy(&dsn);
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .replace("\r\n\t", " ")
        .replace("\r\n ", " ");
    let fields: Vec<&str> = head.split("\r\n").collect();
    let ours: Vec<usize> = (0..fields.len())
        .filter(|&i| fields[i].contains("(Postern)"))
        .collect();
    let next = ours
        .first()
        .and_then(|&i| fields.get(i + 1))
        .copied()
        .unwrap_or("");
    if ours.len() != 1
        || !(next.starts_with("Received: ") && next.contains(&format!("by {origin_host}")))
    {
        return Check::fail("not exactly one Postern Received on the origin's DSN", head);
    }
    let report = report(&dsn);
    let recipient = report["per_recipient"][0]["Final-Recipient"]
        .as_str()
        .unwrap_or("");
    if report["report_type"] != "delivery-status" || !recipient.contains("x@nowhere.test") {
        return Check::fail("not the origin's report", report.to_string());
    }
    Check::Pass(format!("delivered to {}, report intact", final_mta.name()))
}
