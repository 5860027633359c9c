//! Domain normalisation (docs/src/policy.md#rules-and-matching): lowercase A-labels (punycode)
//! without a trailing dot.
//! Rules are normalised strictly (an operator's typo is an error); addresses seen in SMTP are
//! normalised leniently (a domain we cannot normalise simply matches no rule).

/// The longest domain name DNS allows, in octets, without the trailing dot.
const MAX_DOMAIN: usize = 253;
const MAX_LABEL: usize = 63;

/// Normalises a domain written in a rule or setting. The error says what is wrong with it.
pub fn normalize_domain(input: &str) -> Result<String, String> {
    if input.is_empty() {
        return Err("domain is empty".into());
    }
    if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("domain contains spaces or control characters".into());
    }
    let without_dot = input.strip_suffix('.').unwrap_or(input);
    if without_dot.is_empty() || without_dot.split('.').any(str::is_empty) {
        return Err("domain has an empty label".into());
    }
    // The byte limit applies to what is stored (A-labels), but refuse absurd input before IDNA.
    if without_dot.len() > 4 * MAX_DOMAIN {
        return Err(format!("domain is longer than {MAX_DOMAIN} octets"));
    }
    let ascii = idna::domain_to_ascii(without_dot)
        .map_err(|_| "domain is not a valid internationalised domain name".to_string())?;
    check_ascii_domain(&ascii)?;
    if ascii
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("not a valid IP address or domain (the last label is numeric)".into());
    }
    Ok(ascii)
}

/// Checks a lowercase A-label domain: letters, digits and hyphens, label and total lengths.
fn check_ascii_domain(d: &str) -> Result<(), String> {
    if d.len() > MAX_DOMAIN {
        return Err(format!("domain is longer than {MAX_DOMAIN} octets"));
    }
    for label in d.split('.') {
        if label.is_empty() {
            return Err("domain has an empty label".into());
        }
        if label.len() > MAX_LABEL {
            return Err(format!(
                "domain label '{label}' is longer than {MAX_LABEL} octets"
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!(
                "domain label '{label}' may hold only letters, digits and hyphens"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "domain label '{label}' may not start or end with a hyphen"
            ));
        }
    }
    Ok(())
}

/// Normalises a domain seen on the wire (a sender or recipient). `None` means "matches nothing".
pub fn normalize_lookup_domain(input: &str) -> Option<String> {
    // Fast path: most domains are already lowercase ASCII.
    let d = input.strip_suffix('.').unwrap_or(input);
    if !d.is_empty()
        && d.len() <= MAX_DOMAIN
        && d.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !d.contains("xn--")
        && check_ascii_domain(d).is_ok()
    {
        return Some(d.to_string());
    }
    normalize_domain(input).ok()
}

/// The domain part of an SMTP address as given in MAIL FROM or RCPT TO (with or without angle
/// brackets). The null sender, an address without `@` and an address literal have none.
pub fn domain_of_address(address: &str) -> Option<&str> {
    let a = address.trim();
    let a = a
        .strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(a);
    let (_, domain) = a.rsplit_once('@')?;
    if domain.is_empty() || domain.starts_with('[') {
        return None;
    }
    Some(domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_dot_and_punycode() {
        assert_eq!(normalize_domain("Example.COM.").unwrap(), "example.com");
        assert_eq!(
            normalize_domain("bücher.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(
            normalize_domain("xn--bcher-kva.example").unwrap(),
            "xn--bcher-kva.example"
        );
    }

    #[test]
    fn refuses_bad_domains() {
        for bad in [
            "",
            ".",
            "a..b",
            "a.b..",
            "ex ample.com",
            " example.com",
            "a_b.com",
            "-a.com",
        ] {
            assert!(normalize_domain(bad).is_err(), "{bad:?} was accepted");
        }
        let long = format!("{}.com", vec!["a".repeat(60); 5].join("."));
        assert!(long.len() > 253);
        assert!(normalize_domain(&long).unwrap_err().contains("253"));
        assert!(normalize_domain(&format!("{}.com", "a".repeat(64))).is_err());
    }

    #[test]
    fn lookup_is_lenient() {
        assert_eq!(
            normalize_lookup_domain("MAIL.Example.com.").as_deref(),
            Some("mail.example.com")
        );
        assert_eq!(normalize_lookup_domain("a..b"), None);
    }

    #[test]
    fn address_domains() {
        assert_eq!(domain_of_address("<a@Example.com>"), Some("Example.com"));
        assert_eq!(domain_of_address("\"x@y\"@z.org"), Some("z.org"));
        assert_eq!(domain_of_address("<>"), None);
        assert_eq!(domain_of_address("postmaster"), None);
        assert_eq!(domain_of_address("a@[192.0.2.1]"), None);
    }
}
