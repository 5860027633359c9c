//! SMTP replies, and the fixed texts the server uses (PRODUCT.md 4, else Postfix 3.x's).

use std::fmt;

/// One reply: a code and one or more lines of text (multi-line replies use `-`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply; `text` starts with the enhanced status code where there is one.
    pub fn new(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            lines: vec![text.into()],
        }
    }

    pub fn multi(code: u16, lines: Vec<String>) -> Reply {
        Reply { code, lines }
    }

    /// The enhanced status code (RFC 2034, RFC 3463) that starts the first line, as numbers:
    /// parsed once here, at the codec, so nothing downstream reads it out of the text. It must
    /// agree with the reply code's class, as RFC 2034 3 requires.
    pub fn enhanced_status(&self) -> Option<[u16; 3]> {
        let word = self.lines.first()?.split_whitespace().next()?;
        let mut parts = word.split('.').map(|p| {
            (!p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u16>().ok())
                .flatten()
        });
        let status = [parts.next()??, parts.next()??, parts.next()??];
        let class_matches = status[0] == self.code / 100 && matches!(status[0], 2 | 4 | 5);
        (parts.next().is_none() && class_matches).then_some(status)
    }

    /// Whether the reply is a permanent or transient failure.
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// The wire form, CRLF-terminated lines.
    /// The reply on one line (multi-line replies joined by spaces), for logs and records.
    pub fn one_line(&self) -> String {
        self.to_string().trim_end().replace("\r\n", " ")
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }

    pub fn ok() -> Reply {
        Reply::new(250, "2.0.0 Ok")
    }
    pub fn bye() -> Reply {
        Reply::new(221, "2.0.0 Bye")
    }
    pub fn send_helo_first() -> Reply {
        Reply::new(503, "5.5.1 Error: send HELO/EHLO first")
    }
    pub fn not_recognized() -> Reply {
        Reply::new(502, "5.5.2 Error: command not recognized")
    }
    pub fn not_implemented() -> Reply {
        Reply::new(502, "5.5.1 Error: command not implemented")
    }
    pub fn bare_line_end() -> Reply {
        Reply::new(500, "5.5.2 Error: bare <CR> or <LF> received")
    }
    pub fn command_too_long() -> Reply {
        Reply::new(500, "5.5.2 Error: line too long")
    }
    pub fn ready_to_start_tls() -> Reply {
        Reply::new(220, "2.0.0 Ready to start TLS")
    }
    pub fn start_data() -> Reply {
        Reply::new(354, "End data with <CR><LF>.<CR><LF>")
    }
    pub fn data_bare() -> Reply {
        Reply::new(550, "5.6.0 Error: bare <CR>, <LF> or <NUL> received")
    }
    pub fn data_line_too_long() -> Reply {
        Reply::new(552, "5.3.4 Error: line too long")
    }
    pub fn data_too_big() -> Reply {
        Reply::new(552, "5.3.4 Error: message file too big")
    }
    pub fn size_exceeds_limit() -> Reply {
        Reply::new(552, "5.3.4 Message size exceeds fixed limit")
    }
    pub fn too_many_recipients() -> Reply {
        Reply::new(452, "4.5.3 Error: too many recipients")
    }
    pub fn too_many_hops() -> Reply {
        Reply::new(554, "5.4.0 Error: too many hops")
    }
    pub fn unsupported_option() -> Reply {
        Reply::new(555, "5.5.4 Unsupported option")
    }
    pub fn too_many_errors(hostname: &str) -> Reply {
        Reply::new(421, format!("4.7.0 {hostname} Error: too many errors"))
    }
    pub fn timeout(hostname: &str) -> Reply {
        Reply::new(421, format!("4.4.2 {hostname} Error: timeout exceeded"))
    }
    pub fn too_many_connections(hostname: &str) -> Reply {
        Reply::new(421, format!("4.7.0 {hostname} Error: too many connections"))
    }
    pub fn queued(id: &str) -> Reply {
        Reply::new(250, format!("2.0.0 Ok: queued as {id}"))
    }
    pub fn storage_full() -> Reply {
        Reply::new(452, "4.3.1 Insufficient system storage")
    }
    pub fn local_error() -> Reply {
        Reply::new(451, "4.3.0 Error: queue file write error")
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = self.lines.len().saturating_sub(1);
        if self.lines.is_empty() {
            return write!(f, "{}\r\n", self.code);
        }
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            write!(f, "{}{sep}{line}\r\n", self.code)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form() {
        assert_eq!(Reply::ok().to_string(), "250 2.0.0 Ok\r\n");
        let ehlo = Reply::multi(
            250,
            vec!["mx.test".into(), "PIPELINING".into(), "SMTPUTF8".into()],
        );
        assert_eq!(
            ehlo.to_string(),
            "250-mx.test\r\n250-PIPELINING\r\n250 SMTPUTF8\r\n"
        );
    }

    #[test]
    fn enhanced_status_is_read_from_the_first_word_and_must_match_the_class() {
        let r = |code, text: &str| Reply::new(code, text).enhanced_status();
        assert_eq!(r(550, "5.1.1 <b@x.example>: unknown"), Some([5, 1, 1]));
        assert_eq!(
            r(450, "4.7.5 Server certificate not trusted"),
            Some([4, 7, 5])
        );
        assert_eq!(r(550, "5.1.10 nullMX"), Some([5, 1, 10]));
        assert_eq!(r(550, "4.1.1 wrong class"), None);
        assert_eq!(r(550, "no status here 5.1.1"), None);
        assert_eq!(r(550, "5.1.1.1 too long"), None);
        assert_eq!(r(550, "5.1 short"), None);
        assert_eq!(Reply::multi(550, vec![]).enhanced_status(), None);
    }
}
