//! Delivery status notifications (docs/src/policy.md#queue-retries-and-bounces, RFC 3464): one per
//! message per delivery
//! round, from `MAILER-DAEMON@<hostname>` with the null envelope sender, a human-readable part,
//! the delivery-status part and the original headers only. Each DSN has its own Message-ID (its
//! own queue id); `Diagnostic-Code` is `smtp;` only for a next hop's reply, and our own reasons
//! are labelled `X-Postern;` (as Postfix labels its own `X-Postfix;`).

/// A recipient that failed, for the report.
pub struct Failed<'a> {
    pub recipient: &'a str,
    /// e.g. `5.1.1`.
    pub status: String,
    /// The next hop's host name, when `diagnostic` is its reply.
    pub remote_mta: Option<&'a str>,
    /// The server's reply, or our own reason.
    pub diagnostic: &'a str,
}

/// The original message's header block (up to the first empty line).
fn headers(message: &[u8]) -> &[u8] {
    message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message, |end| &message[..end + 2])
}

pub const SUBJECT: &str = "Undelivered Mail Returned to Sender";

/// The report for the message queued as `id`; `dsn_id` is the report's own queue id.
pub fn build(
    hostname: &str,
    id: &str,
    dsn_id: &str,
    original_sender: &str,
    failed: &[Failed<'_>],
    original: &[u8],
    now_s: u64,
) -> Vec<u8> {
    let boundary = format!("{id}.{hostname}/postern");
    let date = postern_time::rfc5322(now_s);
    let mut m = String::new();
    m.push_str(&format!(
        "From: MAILER-DAEMON@{hostname} (Mail Delivery System)\r\n"
    ));
    m.push_str(&format!("To: <{original_sender}>\r\n"));
    m.push_str(&format!("Subject: {SUBJECT}\r\n"));
    m.push_str(&format!("Date: {date}\r\n"));
    m.push_str(&format!("Message-ID: <{dsn_id}@{hostname}>\r\n"));
    m.push_str("Auto-Submitted: auto-replied\r\n");
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str(&format!("Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\n"));
    m.push_str("This is a MIME-encapsulated message.\r\n\r\n");
    m.push_str(&format!("--{boundary}\r\nContent-Description: Notification\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"));
    m.push_str(&format!(
        "This is the mail system at host {hostname}.\r\n\r\n"
    ));
    m.push_str("I'm sorry to have to inform you that your message could not\r\nbe delivered to one or more recipients. It's attached below.\r\n\r\n");
    for f in failed {
        m.push_str(&format!("<{}>: {}\r\n", f.recipient, f.diagnostic));
    }
    m.push_str(&format!("\r\n--{boundary}\r\nContent-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n"));
    m.push_str(&format!(
        "Reporting-MTA: dns; {hostname}\r\nX-Postern-Queue-ID: {id}\r\n"
    ));
    for f in failed {
        m.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {}\r\nAction: failed\r\nStatus: {}\r\n",
            f.recipient, f.status
        ));
        match f.remote_mta {
            Some(mta) => m.push_str(&format!(
                "Remote-MTA: dns; {mta}\r\nDiagnostic-Code: smtp; {}\r\n",
                f.diagnostic
            )),
            None => m.push_str(&format!("Diagnostic-Code: X-Postern; {}\r\n", f.diagnostic)),
        }
    }
    m.push_str(&format!("\r\n--{boundary}\r\nContent-Description: Undelivered Message Headers\r\nContent-Type: text/rfc822-headers\r\n\r\n"));
    let mut bytes = m.into_bytes();
    bytes.extend_from_slice(headers(original));
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_with_the_original_headers_only() {
        let original = b"Received: x\r\nSubject: hello\r\n\r\nsecret body\r\n";
        let failed = [
            Failed {
                recipient: "b@x.example",
                status: "5.1.1".into(),
                remote_mta: Some("mx.x.example"),
                diagnostic: "550 5.1.1 <b@x.example>: unknown",
            },
            Failed {
                recipient: "c@z.example",
                status: "5.1.10".into(),
                remote_mta: None,
                diagnostic: "5.1.10 Domain z.example does not accept mail (nullMX)",
            },
        ];
        let dsn = String::from_utf8(build(
            "relay.test",
            "ID1",
            "DSN1",
            "a@y.example",
            &failed,
            original,
            0,
        ))
        .unwrap();
        for needle in [
            "From: MAILER-DAEMON@relay.test",
            "Auto-Submitted: auto-replied",
            "multipart/report; report-type=delivery-status",
            "Reporting-MTA: dns; relay.test",
            "Final-Recipient: rfc822; b@x.example",
            "Action: failed",
            "Status: 5.1.1",
            "Remote-MTA: dns; mx.x.example",
            "Diagnostic-Code: smtp; 550 5.1.1 <b@x.example>: unknown",
            "Final-Recipient: rfc822; c@z.example\r\nAction: failed\r\nStatus: 5.1.10\r\nDiagnostic-Code: X-Postern; 5.1.10 Domain",
            "Message-ID: <DSN1@relay.test>",
            "Subject: hello",
        ] {
            assert!(dsn.contains(needle), "{needle} missing:\n{dsn}");
        }
        assert_eq!(
            dsn.matches("Remote-MTA").count(),
            1,
            "only for the remote reply"
        );
        assert!(
            !dsn.contains("secret body"),
            "the body must not be returned"
        );
    }
}
