//! SMTP replies, and the fixed texts the server uses (docs/src/smtp.md, else Postfix 3.x's).

use std::fmt;

/// An RFC 3463 enhanced status code, e.g. 4.7.5: one type for the verdicts that decide it and
/// the codec that writes and reads it (a reply carries it as a field, never inside its text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct EnhancedStatus(pub u8, pub u16, pub u16);

impl EnhancedStatus {
    /// Parses `class.subject.detail` (class 2, 4 or 5, at most three digits each; RFC 3463 2).
    pub fn parse(s: &str) -> Option<EnhancedStatus> {
        let mut parts = s.split('.').map(|p| {
            (!p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u16>().ok())
                .flatten()
        });
        let (class, subject, detail) = (parts.next()??, parts.next()??, parts.next()??);
        (parts.next().is_none() && matches!(class, 2 | 4 | 5)).then_some(EnhancedStatus(
            class as u8,
            subject,
            detail,
        ))
    }

    /// The class digit: 2, 4 or 5.
    pub fn class(self) -> u8 {
        self.0
    }
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One reply: a code, its enhanced status where it has one, and one or more lines of text
/// (multi-line replies use `-`). On the wire the status starts the first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// RFC 2034: it agrees with the code's class.
    pub status: Option<EnhancedStatus>,
    /// The text, without the code and the status.
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply written as its wire text: `text` starts with the enhanced status code
    /// where there is one (the fixed texts below, and replies read from a peer).
    pub fn new(code: u16, text: impl Into<String>) -> Reply {
        Reply::multi(code, vec![text.into()])
    }

    /// A one-line reply with its status as a value (the verdicts' replies).
    pub fn with_status(code: u16, status: EnhancedStatus, text: impl Into<String>) -> Reply {
        Reply {
            code,
            status: Some(status),
            lines: vec![text.into()],
        }
    }

    /// A reply from its wire lines: the enhanced status that starts the first one, if it
    /// agrees with the code's class (RFC 2034 3), is taken out of the text, parsed once here.
    pub fn multi(code: u16, mut lines: Vec<String>) -> Reply {
        let status = lines.first().and_then(|first| {
            let word = first.split([' ', '\t']).next()?;
            let status = EnhancedStatus::parse(word)?;
            (u16::from(status.class()) == code / 100).then_some((status, word.len()))
        });
        if let Some((_, len)) = status {
            let first = &mut lines[0];
            let rest = first[len..]
                .strip_prefix([' ', '\t'])
                .unwrap_or(&first[len..]);
            *first = rest.to_string();
        }
        Reply {
            code,
            status: status.map(|(s, _)| s),
            lines,
        }
    }

    /// The first line's text, without the code and the status.
    pub fn text(&self) -> &str {
        self.lines.first().map_or("", String::as_str)
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

    /// The wire form: CRLF-terminated lines.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }

    /// `250 2.0.0 Ok`.
    pub fn ok() -> Reply {
        Reply::new(250, "2.0.0 Ok")
    }
    /// `221 2.0.0 Bye`.
    pub fn bye() -> Reply {
        Reply::new(221, "2.0.0 Bye")
    }
    /// `503 5.5.1 Error: send HELO/EHLO first`.
    pub fn send_helo_first() -> Reply {
        Reply::new(503, "5.5.1 Error: send HELO/EHLO first")
    }
    /// `502 5.5.2 Error: command not recognized`.
    pub fn not_recognized() -> Reply {
        Reply::new(502, "5.5.2 Error: command not recognized")
    }
    /// `502 5.5.1 Error: command not implemented`.
    pub fn not_implemented() -> Reply {
        Reply::new(502, "5.5.1 Error: command not implemented")
    }
    /// `500 5.5.2 Error: bare <CR> or <LF> received`.
    pub fn bare_line_end() -> Reply {
        Reply::new(500, "5.5.2 Error: bare <CR> or <LF> received")
    }
    /// `500 5.5.2 Error: line too long` (a command line).
    pub fn command_too_long() -> Reply {
        Reply::new(500, "5.5.2 Error: line too long")
    }
    /// `220 2.0.0 Ready to start TLS`.
    pub fn ready_to_start_tls() -> Reply {
        Reply::new(220, "2.0.0 Ready to start TLS")
    }
    /// `354 End data with <CR><LF>.<CR><LF>`.
    pub fn start_data() -> Reply {
        Reply::new(354, "End data with <CR><LF>.<CR><LF>")
    }
    /// `550 5.6.0 Error: bare <CR>, <LF> or <NUL> received` (in DATA).
    pub fn data_bare() -> Reply {
        Reply::new(550, "5.6.0 Error: bare <CR>, <LF> or <NUL> received")
    }
    /// `552 5.3.4 Error: line too long` (a text line, after the final dot).
    pub fn data_line_too_long() -> Reply {
        Reply::new(552, "5.3.4 Error: line too long")
    }
    /// `552 5.3.4 Error: message file too big` (after DATA).
    pub fn data_too_big() -> Reply {
        Reply::new(552, "5.3.4 Error: message file too big")
    }
    /// `552 5.3.4 Message size exceeds fixed limit` (at MAIL, from `SIZE=`).
    pub fn size_exceeds_limit() -> Reply {
        Reply::new(552, "5.3.4 Message size exceeds fixed limit")
    }
    /// `452 4.5.3 Error: too many recipients`.
    pub fn too_many_recipients() -> Reply {
        Reply::new(452, "4.5.3 Error: too many recipients")
    }
    /// `554 5.4.0 Error: too many hops` (too many `Received:` headers).
    pub fn too_many_hops() -> Reply {
        Reply::new(554, "5.4.0 Error: too many hops")
    }
    /// `555 5.5.4 Unsupported option` (a MAIL or RCPT parameter we do not support).
    pub fn unsupported_option() -> Reply {
        Reply::new(555, "5.5.4 Unsupported option")
    }
    /// `421 4.7.0 <hostname> Error: too many errors`.
    pub fn too_many_errors(hostname: &str) -> Reply {
        Reply::new(421, format!("4.7.0 {hostname} Error: too many errors"))
    }
    /// `421 4.4.2 <hostname> Error: timeout exceeded`.
    pub fn timeout(hostname: &str) -> Reply {
        Reply::new(421, format!("4.4.2 {hostname} Error: timeout exceeded"))
    }
    /// `421 4.7.0 <hostname> Error: too many connections`.
    pub fn too_many_connections(hostname: &str) -> Reply {
        Reply::new(421, format!("4.7.0 {hostname} Error: too many connections"))
    }
    /// `250 2.0.0 Ok: queued as <id>`.
    pub fn queued(id: &str) -> Reply {
        Reply::new(250, format!("2.0.0 Ok: queued as {id}"))
    }
    /// `452 4.3.1 Insufficient system storage`.
    pub fn storage_full() -> Reply {
        Reply::new(452, "4.3.1 Insufficient system storage")
    }
    /// `451 4.3.0 Error: queue file write error`.
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
            match self.status.filter(|_| i == 0) {
                Some(status) if line.is_empty() => write!(f, "{}{sep}{status}\r\n", self.code)?,
                Some(status) => write!(f, "{}{sep}{status} {line}\r\n", self.code)?,
                None => write!(f, "{}{sep}{line}\r\n", self.code)?,
            }
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
        let r = |code, text: &str| Reply::new(code, text).status;
        assert_eq!(
            r(550, "5.1.1 <b@x.example>: unknown"),
            Some(EnhancedStatus(5, 1, 1))
        );
        assert_eq!(
            r(450, "4.7.5 Server certificate not trusted"),
            Some(EnhancedStatus(4, 7, 5))
        );
        assert_eq!(r(550, "5.1.10 nullMX"), Some(EnhancedStatus(5, 1, 10)));
        assert_eq!(r(550, "4.1.1 wrong class"), None);
        assert_eq!(r(550, "no status here 5.1.1"), None);
        assert_eq!(r(550, "5.1.1.1 too long"), None);
        assert_eq!(r(550, "5.1 short"), None);
        assert_eq!(r(550, "5.1.1234 four digits"), None);
        assert_eq!(Reply::multi(550, vec![]).status, None);
    }

    #[test]
    fn the_status_is_a_field_and_the_wire_form_is_unchanged() {
        for wire in [
            "550 5.1.1 <b@x.example>: unknown\r\n",
            "550 4.1.1 wrong class\r\n",
            "250 2.0.0\r\n",
            "220 mx.test ESMTP\r\n",
        ] {
            let (code, text) = wire.trim_end().split_once(' ').unwrap();
            assert_eq!(Reply::new(code.parse().unwrap(), text).to_string(), wire);
        }
        let r = Reply::new(451, "4.3.0 queue file write error");
        assert_eq!(
            (r.status, r.text()),
            (Some(EnhancedStatus(4, 3, 0)), "queue file write error")
        );
        let typed = Reply::with_status(
            450,
            EnhancedStatus(4, 7, 5),
            "Server certificate not trusted",
        );
        assert_eq!(
            typed,
            Reply::new(450, "4.7.5 Server certificate not trusted")
        );
        let multi = Reply::multi(451, vec!["4.3.0 one".into(), "two".into()]);
        assert_eq!(multi.to_string(), "451-4.3.0 one\r\n451 two\r\n");
    }
}
