//! What tracking takes from a message's header block: the Subject (decoded per RFC 2047) and
//! the Message-ID.

/// Header blocks are read up to this much for tracking.
pub const MAX_HEAD: usize = 64 * 1024;

/// The header block collected so far: true once it is complete (or long enough).
pub fn head_complete(head: &[u8]) -> bool {
    head.len() >= MAX_HEAD || head.starts_with(b"\r\n") || head.windows(4).any(|w| w == b"\r\n\r\n")
}

/// The unfolded value of the first header `name` in `head`.
fn header(head: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    while let Some(line) = lines.next() {
        if line.is_empty() {
            return None;
        }
        let Some((field, value)) = line.split_once(':') else {
            continue;
        };
        if !field.trim_end().eq_ignore_ascii_case(name) {
            continue;
        }
        let mut value = value.trim().to_string();
        // Folded continuation lines start with white space.
        for more in lines.by_ref() {
            if more.starts_with([' ', '\t']) {
                value.push(' ');
                value.push_str(more.trim());
            } else {
                break;
            }
        }
        return Some(value);
    }
    None
}

/// (Subject decoded, Message-ID without its angle brackets), with control characters and
/// bidirectional overrides escaped, raw or decoded (they reach tracking, the API and logs).
pub fn subject_and_message_id(head: &[u8]) -> (Option<String>, Option<String>) {
    let subject = header(head, "subject").map(|raw| {
        // Most subjects have no encoded word; the decoder's parser is not free.
        let decoded = if raw.contains("=?") {
            rfc2047_decoder::Decoder::new()
                .too_long_encoded_word_strategy(rfc2047_decoder::RecoverStrategy::Decode)
                .decode(raw.as_bytes())
                .unwrap_or(raw)
        } else {
            raw
        };
        postern_smtp::escaped_controls(&decoded)
    });
    let message_id = header(head, "message-id").map(|id| {
        postern_smtp::escaped_controls(id.trim().trim_start_matches('<').trim_end_matches('>'))
    });
    (subject, message_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_unfolded_and_decoded() {
        let head = b"Received: x\r\nSubject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n =?ISO-8859-1?Q?_aus_K=F6ln?=\r\nMessage-ID: <a.1@x.example>\r\n\r\nbody";
        assert!(head_complete(head));
        let (subject, id) = subject_and_message_id(head);
        assert_eq!(subject.as_deref(), Some("Grüße aus Köln"));
        assert_eq!(id.as_deref(), Some("a.1@x.example"));
        let (subject, id) = subject_and_message_id(b"From: a\r\n\r\nSubject: not a header\r\n");
        assert_eq!((subject, id), (None, None));
        let (subject, _) = subject_and_message_id(b"Subject: =?bogus\r\n\r\n");
        assert_eq!(subject.as_deref(), Some("=?bogus"));
        // Hostile bytes, raw or encoded, are escaped: a terminal escape, a bare CR, a NUL, and
        // a right-to-left override.
        let (subject, id) = subject_and_message_id(
            b"Subject: a\x1b[2Jb =?UTF-8?Q?c=0Dd=00e=E2=80=AEf?=\r\nMessage-ID: <x\ry@z>\r\n\r\n",
        );
        assert_eq!(
            subject.as_deref(),
            Some("a\\u{1b}[2Jb c\\u{d}d\\u{0}e\\u{202e}f")
        );
        assert_eq!(id.as_deref(), Some("x\\u{d}y@z"));
    }
}
