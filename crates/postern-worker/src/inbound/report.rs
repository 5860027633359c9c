//! Mail to `settings.reports.receive_address` (TLS-RPT reports about our domains, RFC 8460
//! 5.3) is checked before its 250: a message that holds no report is refused in the session,
//! so that nobody can make us send a DSN to a sender they forged. The message is kept in
//! memory up to `MAX_MAIL` while it arrives; the parse runs on a blocking thread.

use postern_smtp::Reply;

/// A mailed report larger than this is refused: its report (at most 512 KiB uncompressed,
/// much less gzipped) would not fit.
pub const MAX_MAIL: usize = 2 * 1024 * 1024;

/// The message of a transaction to the report address, as it arrives.
#[derive(Default)]
pub struct ReportCheck {
    body: Vec<u8>,
    over: bool,
}

impl ReportCheck {
    /// A check when one of `recipients` is the report address.
    pub fn wanted(address: Option<&str>, recipients: &[String]) -> Option<ReportCheck> {
        let address = address?;
        recipients
            .iter()
            .any(|r| r.eq_ignore_ascii_case(address))
            .then(ReportCheck::default)
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        if self.body.len() + bytes.len() > MAX_MAIL {
            self.over = true;
            self.body = Vec::new();
        } else if !self.over {
            self.body.extend_from_slice(bytes);
        }
    }

    /// `Err(reply)` when the message must be refused.
    pub async fn verdict(self) -> Result<(), Reply> {
        if self.over {
            return Err(Reply::new(
                552,
                format!(
                    "5.3.4 Message size exceeds the limit for TLS-RPT reports ({MAX_MAIL} bytes)"
                ),
            ));
        }
        let body = self.body;
        tokio::task::spawn_blocking(move || crate::outbound::intake::report_in(&body).map(|_| ()))
            .await
            .unwrap_or_else(|_| Err(Reply::local_error()))
    }
}
