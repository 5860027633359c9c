//! SMTP commands and their arguments, parsed from one framed line.

use crate::address::{Address, parse_path};
use crate::reply::Reply;
use crate::text::escaped_ascii;

/// MAIL FROM parameters we support (docs/src/smtp.md: SIZE, BODY=8BITMIME, SMTPUTF8; no DSN).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// The size the client announced.
    pub size: Option<u64>,
    /// `BODY=8BITMIME` was given.
    pub eight_bit: bool,
    /// `SMTPUTF8` was given.
    pub smtputf8: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// A command line, parsed.
pub enum Command {
    /// `EHLO <name>`.
    Ehlo(String),
    /// `HELO <name>`.
    Helo(String),
    /// `MAIL FROM:<path> [params]`.
    Mail(Address, MailParams),
    /// `RCPT TO:<path>`.
    Rcpt(Address),
    /// `DATA`.
    Data,
    /// `RSET`.
    Rset,
    /// `NOOP`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `STARTTLS`.
    StartTls,
    /// `VRFY <text>` (answered `252`, as Postfix does without a local recipient table).
    Vrfy(String),
    /// `HELP`.
    Help,
}

fn syntax(text: &str) -> Reply {
    Reply::new(501, text)
}

/// Parses one command line. The error is the reply to send.
pub fn parse_command(line: &[u8]) -> Result<Command, Reply> {
    let line =
        std::str::from_utf8(line).map_err(|_| Reply::new(500, "5.5.2 Error: bad UTF-8 syntax"))?;
    let (verb, arg) = match line.split_once(' ') {
        Some((v, a)) => (v, a.trim()),
        None => (line, ""),
    };
    let verb = verb.to_ascii_uppercase();
    let no_arg = |cmd: Command, usage: &str| {
        if arg.is_empty() {
            Ok(cmd)
        } else {
            Err(syntax(usage))
        }
    };
    match verb.as_str() {
        "EHLO" | "HELO" if arg.is_empty() || arg.contains(' ') => {
            Err(syntax(&format!("Syntax: {verb} hostname")))
        }
        "EHLO" | "HELO" if !valid_helo(arg) => Err(Reply::new(
            501,
            format!(
                "5.5.2 <{}>: Helo command rejected: Invalid name",
                escaped_ascii(arg)
            ),
        )),
        "EHLO" => Ok(Command::Ehlo(arg.to_string())),
        "HELO" => Ok(Command::Helo(arg.to_string())),
        "MAIL" => parse_mail(arg),
        "RCPT" => parse_rcpt(arg),
        "DATA" => no_arg(Command::Data, "5.5.4 Syntax: DATA"),
        "RSET" => no_arg(Command::Rset, "5.5.4 Syntax: RSET"),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => Ok(Command::Quit),
        "STARTTLS" => no_arg(Command::StartTls, "5.5.4 Syntax: STARTTLS"),
        "VRFY" if arg.is_empty() => Err(syntax("5.5.4 Syntax: VRFY address")),
        "VRFY" => Ok(Command::Vrfy(arg.to_string())),
        "HELP" => Ok(Command::Help),
        _ => Err(Reply::not_recognized()),
    }
}

/// Postfix's `reject_invalid_helo_hostname`: a host name (labels of letters, digits, `-` and
/// `_`, at most 63 each and 255 in all, not all digits), an IP address, or an address literal
/// (`[192.0.2.1]`, `[IPv6:2001:db8::1]`). Nothing else reaches a Received header or tracking.
pub fn valid_helo(name: &str) -> bool {
    if let Some(literal) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return match literal.get(..5) {
            Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => {
                literal[5..].parse::<std::net::Ipv6Addr>().is_ok()
            }
            _ => literal.parse::<std::net::Ipv4Addr>().is_ok(),
        };
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let host = name.strip_suffix('.').unwrap_or(name);
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    host.len() <= 255
        && host.split('.').all(label_ok)
        && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// `FROM:` or `TO:`, case-insensitively, with what follows.
fn after_keyword<'a>(arg: &'a str, keyword: &str) -> Option<&'a str> {
    let head = arg.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| &arg[keyword.len()..])
}

fn parse_mail(arg: &str) -> Result<Command, Reply> {
    let usage = || syntax("5.5.4 Syntax: MAIL FROM:<address>");
    let rest = after_keyword(arg, "FROM:").ok_or_else(usage)?;
    let (from, params) =
        parse_path(rest).ok_or_else(|| Reply::new(501, "5.1.7 Bad sender address syntax"))?;
    let mut p = MailParams::default();
    for param in params.split_ascii_whitespace() {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        match (
            key.to_ascii_uppercase().as_str(),
            value.to_ascii_uppercase().as_str(),
        ) {
            ("SIZE", v) => {
                p.size = Some(
                    v.parse()
                        .map_err(|_| Reply::new(501, "5.5.4 Bad message size syntax"))?,
                )
            }
            ("BODY", "8BITMIME") => p.eight_bit = true,
            ("BODY", "7BIT") => {}
            ("SMTPUTF8", "") => p.smtputf8 = true,
            _ => return Err(Reply::unsupported_option()),
        }
    }
    Ok(Command::Mail(from, p))
}

fn parse_rcpt(arg: &str) -> Result<Command, Reply> {
    let usage = || syntax("5.5.4 Syntax: RCPT TO:<address>");
    let rest = after_keyword(arg, "TO:").ok_or_else(usage)?;
    let (to, params) =
        parse_path(rest).ok_or_else(|| Reply::new(501, "5.1.3 Bad recipient address syntax"))?;
    if to.is_null() {
        return Err(Reply::new(501, "5.1.3 Bad recipient address syntax"));
    }
    // No RCPT parameters are supported (NOTIFY= and ORCPT= belong to the DSN extension).
    if !params.is_empty() {
        return Err(Reply::unsupported_option());
    }
    Ok(Command::Rcpt(to))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(s: &str) -> Result<Command, Reply> {
        parse_command(s.as_bytes())
    }

    #[test]
    fn helo_names_are_checked_as_postfix_does() {
        for good in [
            "client.example",
            "mail-1.example.com.",
            "WIN_PC",
            "localhost",
            "192.0.2.1",
            "[192.0.2.1]",
            "[IPv6:2001:db8::1]",
            "[ipv6:::1]",
        ] {
            assert!(valid_helo(good), "{good}");
            assert!(cmd(&format!("EHLO {good}")).is_ok(), "{good}");
        }
        for bad in [
            "a\tb",
            "bad\u{1}name",
            "[192.0.2.1",
            "192.0.2.1]",
            "[mail.example]",
            "[IPv6:192.0.2.1]",
            "-lead.example",
            "trail-.example",
            "a..b",
            "999.999.999.999",
            "under<score>",
            "caf\u{e9}.example",
        ] {
            assert!(!valid_helo(bad), "{bad:?}");
        }
        assert!(!valid_helo(&"a".repeat(64)));
        assert!(!valid_helo(&["a"; 200].join(".")));
        assert_eq!(
            cmd("HELO a\tb\u{1}").unwrap_err().to_string(),
            "501 5.5.2 <a\\tb\\u{1}>: Helo command rejected: Invalid name\r\n"
        );
        assert_eq!(
            cmd("EHLO [192.0.2.1").unwrap_err().to_string(),
            "501 5.5.2 <[192.0.2.1>: Helo command rejected: Invalid name\r\n"
        );
    }

    #[test]
    fn commands() {
        assert_eq!(
            cmd("ehlo client.example"),
            Ok(Command::Ehlo("client.example".into()))
        );
        assert_eq!(
            cmd("EHLO").unwrap_err().to_string(),
            "501 Syntax: EHLO hostname\r\n"
        );
        assert_eq!(
            cmd("MAIL FROM:<a@b> SIZE=100 BODY=8BITMIME SMTPUTF8"),
            Ok(Command::Mail(
                Address("a@b".into()),
                MailParams {
                    size: Some(100),
                    eight_bit: true,
                    smtputf8: true
                }
            ))
        );
        assert_eq!(
            cmd("mail from: <>"),
            Ok(Command::Mail(Address(String::new()), MailParams::default()))
        );
        assert_eq!(
            cmd("MAIL FROM:<a@b> RET=HDRS").unwrap_err(),
            Reply::unsupported_option()
        );
        assert_eq!(
            cmd("RCPT TO:<a@b> NOTIFY=NEVER").unwrap_err(),
            Reply::unsupported_option()
        );
        assert_eq!(cmd("RCPT TO:<>").unwrap_err().code, 501);
        assert_eq!(
            cmd("MAIL TO:<a@b>").unwrap_err().to_string(),
            "501 5.5.4 Syntax: MAIL FROM:<address>\r\n"
        );
        assert_eq!(cmd("DATA x").unwrap_err().code, 501);
        assert_eq!(cmd("STARTTLS now").unwrap_err().code, 501);
        assert_eq!(cmd("FROB").unwrap_err(), Reply::not_recognized());
        assert_eq!(
            cmd("VRFY postmaster"),
            Ok(Command::Vrfy("postmaster".into()))
        );
    }
}
