//! The DATA phase: lines end only at CRLF, the message ends only at the line `.` that follows a
//! CRLF, dot-stuffing is undone, and a message with a bare CR, bare LF or NUL, an over-long line,
//! too many bytes, too large a header block or too many Received headers is read on to its real
//! end while nothing more of it is kept (docs/src/smtp.md). So nothing can be smuggled: `\n.\n`,
//! `\r.\r` and their mixtures are just content, and content with them is refused whole.

/// How a message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataOutcome {
    /// The real `<CRLF>.<CRLF>` ended a message within every limit.
    Complete,
    /// A bare CR, bare LF or NUL: `550 5.6.0`.
    Bare,
    /// A line over the limit: `552 5.3.4 Error: line too long`.
    LineTooLong,
    /// Over the message size limit: `552 5.3.4 Error: message file too big`.
    TooBig,
    /// Header block over its limit.
    HeaderTooBig,
    /// Too many Received headers: `554 5.4.0 Error: too many hops`.
    TooManyHops,
}

impl DataOutcome {
    /// The reply that refuses the message, for every outcome but `Complete`.
    pub fn refusal(self) -> Option<crate::Reply> {
        Some(match self {
            DataOutcome::Complete => return None,
            DataOutcome::Bare => crate::Reply::data_bare(),
            DataOutcome::LineTooLong => crate::Reply::data_line_too_long(),
            DataOutcome::TooBig => crate::Reply::data_too_big(),
            DataOutcome::HeaderTooBig => {
                crate::Reply::new(552, "5.3.4 Error: message header too big")
            }
            DataOutcome::TooManyHops => crate::Reply::too_many_hops(),
        })
    }
}

#[derive(Debug, Clone)]
/// Reads a message after DATA, line by line to its end, undoing dot-stuffing and enforcing the
/// line, size, header and `Received:` limits.
pub struct DataReader {
    max_line: usize,
    max_size: u64,
    max_header: u64,
    max_received: u32,
    size: u64,
    header_bytes: u64,
    received: u32,
    in_headers: bool,
    /// Inside an over-long line: drop bytes until its CRLF.
    discarding: bool,
    failure: Option<DataOutcome>,
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

impl DataReader {
    /// A reader with these limits: line length, message size, header block size, `Received:`
    /// headers.
    pub fn new(max_line: usize, max_size: u64, max_header: u64, max_received: u32) -> Self {
        DataReader {
            max_line,
            max_size,
            max_header,
            max_received,
            size: 0,
            header_bytes: 0,
            received: 0,
            in_headers: true,
            discarding: false,
            failure: None,
        }
    }

    /// The message size so far (dot-unstuffed, CRLF line ends).
    pub fn size(&self) -> u64 {
        self.size
    }

    fn fail(&mut self, outcome: DataOutcome) {
        // The first failure decides the reply, except that a bare line end always wins: it is
        // the one that says the client may be trying to smuggle a command.
        if self.failure.is_none() || outcome == DataOutcome::Bare {
            self.failure = Some(outcome);
        }
    }

    /// Consumes complete lines from the front of `buf`, appending the message to `out` while it
    /// is good. Returns the outcome once the final `.` line has been consumed.
    pub fn feed(&mut self, buf: &mut Vec<u8>, out: &mut Vec<u8>) -> Option<DataOutcome> {
        // Consumed bytes are removed once at the end, not per line (linear in the input).
        let mut pos = 0;
        let outcome = self.feed_at(buf, &mut pos, out);
        buf.drain(..pos);
        outcome
    }

    fn feed_at(
        &mut self,
        buf: &mut Vec<u8>,
        pos: &mut usize,
        out: &mut Vec<u8>,
    ) -> Option<DataOutcome> {
        loop {
            let rest = &buf[*pos..];
            // The limit is on the message's line: a transparency dot (RFC 5321 4.5.2) is not
            // part of it, so a stuffed line may be one octet longer.
            let allowed = self.max_line + usize::from(rest.first() == Some(&b'.'));
            let Some(end) = find_crlf(rest) else {
                if rest.len() >= allowed {
                    self.fail(DataOutcome::LineTooLong);
                    self.discarding = true;
                    let keep = usize::from(rest.last() == Some(&b'\r'));
                    buf.drain(*pos..buf.len() - keep);
                }
                return None;
            };
            let start = *pos;
            *pos += end + 2;
            if std::mem::take(&mut self.discarding) {
                continue;
            }
            let line = &buf[start..start + end];
            if line == b"." {
                return Some(self.failure.unwrap_or(DataOutcome::Complete));
            }
            if end + 2 > allowed {
                self.fail(DataOutcome::LineTooLong);
            }
            if line.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
                self.fail(DataOutcome::Bare);
            }
            let line = line.strip_prefix(b".").unwrap_or(line);
            let bytes = line.len() as u64 + 2;
            self.size += bytes;
            if self.size > self.max_size {
                self.fail(DataOutcome::TooBig);
            }
            let mut received = false;
            if self.in_headers {
                if line.is_empty() {
                    self.in_headers = false;
                } else {
                    self.header_bytes += bytes;
                    received = line.len() >= 9 && line[..9].eq_ignore_ascii_case(b"received:");
                }
            }
            if self.header_bytes > self.max_header {
                self.fail(DataOutcome::HeaderTooBig);
            }
            if received {
                self.received += 1;
                if self.received > self.max_received {
                    self.fail(DataOutcome::TooManyHops);
                }
            }
            if self.failure.is_none() {
                let line = &buf[start..start + end];
                let line = line.strip_prefix(b".").unwrap_or(line);
                out.extend_from_slice(line);
                out.extend_from_slice(b"\r\n");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8]) -> (Option<DataOutcome>, Vec<u8>, Vec<u8>) {
        let mut reader = DataReader::new(1000, 1 << 20, 1 << 16, 3);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for (i, b) in input.iter().enumerate() {
            buf.push(*b);
            if let Some(o) = reader.feed(&mut buf, &mut out) {
                buf.extend_from_slice(&input[i + 1..]);
                return (Some(o), out, buf);
            }
        }
        (None, out, buf)
    }

    #[test]
    fn unstuffs_and_ends_at_the_real_dot() {
        let (o, out, rest) = read(b"Subject: x\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n");
        assert_eq!(o, Some(DataOutcome::Complete));
        assert_eq!(out, b"Subject: x\r\n\r\n.dot\r\nbody\r\n");
        assert_eq!(rest, b"QUIT\r\n");
        assert_eq!(read(b".\r\n").0, Some(DataOutcome::Complete));
    }

    #[test]
    fn smuggling_attempts_are_content_and_refused() {
        for end in [
            &b"\n.\n"[..],
            b"\r.\r",
            b"\r.\n",
            b"\n.\r\n",
            b"\r\n.\n",
            b"\r\n\x00.\r\n",
        ] {
            let mut input = b"Subject: x\r\n\r\nhello".to_vec();
            input.extend_from_slice(end);
            input.extend_from_slice(
                b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nsmuggled\r\n",
            );
            // Up to here nothing has ended the message.
            let (o, _, _) = read(&input);
            assert_eq!(o, None, "{end:?} ended the message");
            input.extend_from_slice(b".\r\n");
            let (o, out, rest) = read(&input);
            assert_eq!(o, Some(DataOutcome::Bare), "{end:?}");
            assert!(
                !out.windows(4).any(|w| w == b"MAIL"),
                "{end:?}: kept smuggled content"
            );
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn the_line_limit_counts_the_line_not_its_transparency_dot() {
        // 998 octets and CRLF is the longest line RFC 5321 allows; a line of dots is sent
        // with one more dot. Fed in one piece (the complete-line check) and one byte at a time
        // by `read` (the partial-line check).
        for (c, n) in [(b'a', 998), (b'.', 998), (b'a', 999), (b'.', 999)] {
            let line = vec![c; n];
            let stuffed = [if c == b'.' { &b"."[..] } else { b"" }, &line].concat();
            let input = [stuffed, b"\r\n.\r\n".to_vec()].concat();
            let mut reader = DataReader::new(1000, 1 << 20, 1 << 16, 3);
            let mut whole = Vec::new();
            let in_one_piece = reader.feed(&mut input.clone(), &mut whole);
            let wanted = if n == 998 {
                DataOutcome::Complete
            } else {
                DataOutcome::LineTooLong
            };
            let what = format!("{n} x {}", c as char);
            assert_eq!(in_one_piece, Some(wanted), "in one piece: {what}");
            assert_eq!(read(&input).0, Some(wanted), "byte by byte: {what}");
            if n == 998 {
                assert_eq!(whole, [line, b"\r\n".to_vec()].concat(), "{what}");
            }
        }
    }

    #[test]
    fn limits() {
        let long = [vec![b'a'; 5000], b"\r\n.\r\n".to_vec()].concat();
        assert_eq!(read(&long).0, Some(DataOutcome::LineTooLong));
        let hops = b"Received: a\r\nReceived: b\r\nreceived: c\r\nRECEIVED: d\r\n\r\nx\r\n.\r\n";
        assert_eq!(read(hops).0, Some(DataOutcome::TooManyHops));
        let three = b"Received: a\r\nReceived: b\r\nReceived: c\r\n\r\nReceived: in body\r\n.\r\n";
        assert_eq!(read(three).0, Some(DataOutcome::Complete));
        let mut reader = DataReader::new(1000, 100, 1 << 16, 50);
        let mut buf = [b"x\r\n".repeat(40), b".\r\n".to_vec()].concat();
        let mut out = Vec::new();
        assert_eq!(reader.feed(&mut buf, &mut out), Some(DataOutcome::TooBig));
        assert!(out.len() <= 100);
    }
}
