//! Text a peer sent, made safe to show, store and log.

/// Reply text as it may be shown and stored: invalid UTF-8 replaced, and every control
/// character (a bare CR, NUL, escape sequences) turned into `?`, as Postfix's `printable()`.
pub fn printable(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Client text for a reply (which is ASCII): printable ASCII as it is, anything else escaped
/// (`\t`, `\u{1}`, `\u{e9}`).
pub fn escaped_ascii(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c.to_string()
            } else {
                c.escape_default().to_string()
            }
        })
        .collect()
}

/// Client text for tracking and logs: control characters and the bidirectional overrides
/// (which reorder what a reader sees) escaped (`\u{1b}`, `\u{202e}`), everything else kept.
pub fn escaped_controls(text: &str) -> String {
    text.chars()
        .map(|c| {
            let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            if c.is_control() || bidi {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_text_is_made_safe() {
        assert_eq!(
            printable(b"250 ok\r\x00\x1b[31m\xff"),
            "250 ok???[31m\u{fffd}"
        );
        assert_eq!(escaped_ascii("a\tb\u{1}é"), "a\\tb\\u{1}\\u{e9}");
        assert_eq!(
            escaped_controls("Grüße\u{1b}[2J\r\n\u{202e}gnp.exe"),
            "Grüße\\u{1b}[2J\\u{d}\\u{a}\\u{202e}gnp.exe"
        );
    }
}
