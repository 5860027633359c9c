//! TLS-RPT reports about our domains mailed to `settings.reports.receive_address` (RFC 8460
//! 5.3): instead of relaying the message, the worker takes the report out of it (the
//! `application/tlsrpt+gzip` or `+json` part, or the whole body if it is one) and hands its
//! JSON to the control plane in a tracking event. The recipient is then delivered.

use std::io::Read as _;

use mail_parser::{MessageParser, MimeHeaders as _};

use postern_events::{self as events, Event};
use postern_smtp::Reply;

use super::round::{GroupKey, RcptResult, Round};

/// The largest report taken, uncompressed (it travels in one tracking event, whose field
/// holds at most this).
pub const MAX_REPORT_BYTES: u64 = postern_events::MAX_REPORT as u64;

/// The report's JSON in `message`, or the reply refusing it.
pub fn report_in(message: &[u8]) -> Result<String, Reply> {
    let refuse = |why: &str| Reply::new(550, format!("5.6.0 not a TLS-RPT report: {why}"));
    let parsed = MessageParser::default()
        .parse(message)
        .ok_or_else(|| refuse("unreadable message"))?;
    let (gzip, bytes) = parsed
        .parts
        .iter()
        .find_map(|part| {
            let ct = part.content_type()?;
            if !ct.ctype().eq_ignore_ascii_case("application") {
                return None;
            }
            match ct.subtype()?.to_ascii_lowercase().as_str() {
                "tlsrpt+gzip" => Some((true, part.contents())),
                "tlsrpt+json" => Some((false, part.contents())),
                _ => None,
            }
        })
        .ok_or_else(|| refuse("no application/tlsrpt+gzip or +json part"))?;
    let mut json = Vec::new();
    let read = if gzip {
        flate2::read::GzDecoder::new(bytes)
            .take(MAX_REPORT_BYTES + 1)
            .read_to_end(&mut json)
    } else {
        bytes.take(MAX_REPORT_BYTES + 1).read_to_end(&mut json)
    };
    read.map_err(|e| refuse(&format!("the report does not decompress: {e}")))?;
    if json.len() as u64 > MAX_REPORT_BYTES {
        return Err(Reply::new(
            552,
            format!("5.3.4 TLS-RPT report larger than {MAX_REPORT_BYTES} bytes"),
        ));
    }
    String::from_utf8(json).map_err(|_| refuse("the report is not UTF-8"))
}

impl Round<'_> {
    /// A TLS-RPT report mailed to us: its JSON goes to the control plane and the recipient is
    /// delivered. A message without one was refused in the SMTP session (`inbound::report`);
    /// one accepted before the address was set is discarded with a log line, never bounced
    /// (its sender may be forged).
    pub(super) async fn take_report(&mut self, key: &GroupKey) -> RcptResult {
        let reply = match self.body().await {
            Err(reply) => reply,
            Ok(message) => match super::intake::report_in(&message) {
                Ok(report) => {
                    let envelope = &self.envelope;
                    self.queue.track(
                        self.policy,
                        Event::TlsReportReceived(events::TlsReportReceived {
                            queue_id: envelope.id.clone(),
                            sender: envelope.sender.clone(),
                            report,
                        }),
                    );
                    Reply::new(250, "2.0.0 TLS-RPT report received")
                }
                Err(reply) => {
                    tracing::warn!(queue_id = %self.envelope.id, reason = %reply.one_line(), "mail to the TLS-RPT address discarded");
                    Reply::new(250, format!("2.0.0 discarded: {}", reply.one_line()))
                }
            },
        };
        RcptResult::local(reply, None, key.source())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_sts::report_mail::{ReportMail, gzip};

    #[test]
    fn the_report_is_taken_out_of_a_mailed_report() {
        let json = r#"{"organization-name":"Big Mail"}"#;
        let mail = ReportMail {
            from: "tls@big.example",
            to: "tlsrpt@ours.example",
            submitter: "big.example",
            policy_domain: "ours.example",
            report_id: "r1",
            date: "Mon, 07 Dec 2026 00:10:00 +0000",
            message_id: "r1@big.example",
            start_s: 1,
            end_s: 2,
        };
        assert_eq!(
            report_in(&mail.compose(&gzip(json.as_bytes()))).unwrap(),
            json
        );
        let plain = b"Subject: hello\r\n\r\njust text\r\n";
        assert_eq!(report_in(plain).unwrap_err().code, 550);
        let bomb = mail.compose(&gzip(&vec![b' '; 2 * MAX_REPORT_BYTES as usize]));
        assert_eq!(report_in(&bomb).unwrap_err().code, 552);
    }
}
