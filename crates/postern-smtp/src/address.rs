//! Reverse and forward paths (`<user@example.com>`, `<>`), as MAIL FROM and RCPT TO give them.

/// An address as given, without angle brackets; empty for the null sender `<>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address(pub String);

impl Address {
    pub fn is_null(&self) -> bool {
        self.0.is_empty()
    }

    /// `<address>` as replies quote it.
    pub fn bracketed(&self) -> String {
        format!("<{}>", self.0)
    }

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
}
