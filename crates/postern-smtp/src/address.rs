//! Reverse and forward paths (`<user@example.com>`, `<>`), as MAIL FROM and RCPT TO give them.

/// An address as given, without angle brackets; empty for the null sender `<>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address(pub String);

impl Address {
    /// Whether this is the null sender `<>`.
    pub fn is_null(&self) -> bool {
        self.0.is_empty()
    }

    /// `<address>` as replies quote it.
    pub fn bracketed(&self) -> String {
        format!("<{}>", self.0)
    }

    /// The part after the last `@`; `None` without one, or when it is empty.
    pub fn domain(&self) -> Option<&str> {
        self.0
            .rsplit_once('@')
            .map(|(_, d)| d)
            .filter(|d| !d.is_empty())
    }
}

/// Splits `<path> PARAM=x ...` (after `FROM:` or `TO:`) into the address and the parameter
/// text. Angle brackets are expected; a bare address without spaces is accepted as Postfix does.
/// A source route (`<@a,@b:user@d>`) is dropped.
pub fn parse_path(input: &str) -> Option<(Address, &str)> {
    let input = input.trim_start();
    if input.is_empty() {
        return None;
    }
    let (path, rest) = if let Some(inner) = input.strip_prefix('<') {
        let end = closing_bracket(inner)?;
        (&inner[..end], &inner[end + 1..])
    } else {
        let end = input.find(' ').unwrap_or(input.len());
        (&input[..end], &input[end..])
    };
    if rest.chars().next().is_some_and(|c| c != ' ') {
        return None;
    }
    let path = match path.strip_prefix('@') {
        Some(routed) => routed.split_once(':')?.1,
        None => path,
    };
    // A quoted local part may hold anything printable; elsewhere brackets and spaces are errors.
    let unquoted = path.rsplit_once('"').map_or(path, |(_, after)| after);
    if unquoted.contains(['<', '>', ' ']) || (!path.is_empty() && !valid_mailbox(path)) {
        return None;
    }
    Some((Address(path.to_string()), rest.trim()))
}

/// The `>` that closes the path, skipping quoted parts of the local part.
fn closing_bracket(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// Whether `address` can be written as the path of a MAIL FROM or RCPT TO and read back as
/// itself: what every address the worker queues on its own must be (defence in depth: a value
/// from DNS or a report that passed its own checks still cannot smuggle a command).
pub fn is_envelope_address(address: &str) -> bool {
    !address.contains(['\r', '\n', '\0'])
        && parse_path(&format!("<{address}>"))
            .is_some_and(|(a, rest)| a.0 == address && rest.is_empty())
}

/// An RFC 5321 `Mailbox` (4.1.2) with RFC 6531's UTF-8, within RFC 5321 4.5.3.1's lengths:
/// a dot-string or quoted-string local part, `@`, and a domain of letter-digit-hyphen labels
/// or an address literal. What a published address (a TLS-RPT `mailto:`) must be before we
/// send mail to it; stricter than what we accept from clients, which follows Postfix.
pub fn is_mailbox(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    address.len() <= 254
        && local.len() <= 64
        && (dot_string(local) || quoted_string(local))
        && (domain_name(domain) || address_literal(domain))
}

/// `atext` of RFC 5322 3.2.3, with any non-ASCII character (RFC 6531 3.3).
fn atext(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~".contains(c)
        || (!c.is_ascii() && !c.is_control())
}

fn dot_string(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(atext))
}

/// `"..."` holding printable ASCII (or UTF-8), `\` escaping one such character.
fn quoted_string(s: &str) -> bool {
    let Some(inner) = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return false;
    };
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        let ok = match c {
            '\\' => chars
                .next()
                .is_some_and(|e| e == ' ' || e.is_ascii_graphic()),
            '"' => false,
            c => c == ' ' || c.is_ascii_graphic() || (!c.is_ascii() && !c.is_control()),
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Labels of letters, digits and hyphens (or UTF-8 U-labels), not starting or ending with a
/// hyphen, each at most 63 bytes; a trailing dot is not part of a mailbox.
fn domain_name(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| {
                    c.is_ascii_alphanumeric() || c == '-' || (!c.is_ascii() && c.is_alphanumeric())
                })
        })
}

/// `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
fn address_literal(d: &str) -> bool {
    let Some(inner) = d.strip_prefix('[').and_then(|d| d.strip_suffix(']')) else {
        return false;
    };
    match inner.strip_prefix("IPv6:") {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => inner.parse::<std::net::Ipv4Addr>().is_ok(),
    }
}

/// `local@domain` or a bare local part (`postmaster`), with no control characters.
fn valid_mailbox(path: &str) -> bool {
    if path.chars().any(char::is_control) {
        return false;
    }
    match path.rsplit_once('@') {
        Some((local, domain)) => !local.is_empty() && !domain.is_empty(),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            parse_path("<a@b.example>"),
            Some((Address("a@b.example".into()), ""))
        );
        assert_eq!(
            parse_path("<> SIZE=10"),
            Some((Address(String::new()), "SIZE=10"))
        );
        assert_eq!(
            parse_path(" <a@b> BODY=8BITMIME SMTPUTF8"),
            Some((Address("a@b".into()), "BODY=8BITMIME SMTPUTF8"))
        );
        assert_eq!(parse_path("a@b"), Some((Address("a@b".into()), "")));
        assert_eq!(
            parse_path("<@relay.example:a@b>"),
            Some((Address("a@b".into()), ""))
        );
        assert_eq!(parse_path("<\"x>y\"@b>").unwrap().0.0, "\"x>y\"@b");
        assert_eq!(parse_path("<postmaster>").unwrap().0.0, "postmaster");
        for bad in [
            "<a@b",
            "<a@b>x",
            "<@b>",
            "<a@>",
            "<a b@c>",
            "",
            "<a@b\u{1}>",
        ] {
            assert!(parse_path(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn mailboxes() {
        for good in [
            "tls-reports@example.com",
            "a.b+c@sub.example.org",
            "\"a b\"@example.com",
            "\"a\\\"b\"@example.com",
            "rapports@société.example",
            "x@[192.0.2.1]",
            "x@[IPv6:2001:db8::1]",
        ] {
            assert!(is_mailbox(good), "{good:?}");
            assert!(is_envelope_address(good), "{good:?}");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        for bad in [
            "",
            "example.com",
            "@example.com",
            "a@",
            "a b@example.com",
            "a@exa mple.com",
            "a@example.com>",
            "<a@example.com",
            "a@example.com\r\nRCPT TO:<staff@victim.test>",
            "a\n@example.com",
            "a\0@example.com",
            "a..b@example.com",
            ".a@example.com",
            "a@-example.com",
            "a@example..com",
            "a@example.com.",
            "a@[300.0.0.1]",
            "\"a\rb\"@example.com",
            long_local.as_str(),
        ] {
            assert!(!is_mailbox(bad), "{bad:?}");
        }
        for bad in ["a@b\r\nQUIT", "a>b@c", "a b@c", "a@b\0"] {
            assert!(!is_envelope_address(bad), "{bad:?}");
        }
        assert!(is_envelope_address(""), "the null sender");
    }
}
