//! Command-line framing: a line ends only at CRLF. A bare CR, a bare LF or a NUL inside a line
//! makes it an error (never a line end), and a line longer than the limit is discarded up to its
//! CRLF without being buffered, so a client cannot make the server hold more than one limit's
//! worth of bytes.

/// One framed line, without its CRLF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A well-formed line, without its CRLF.
    Ok(Vec<u8>),
    /// The line held a bare CR, a bare LF or a NUL.
    Bare,
    /// The line (with its CRLF) was longer than the limit.
    TooLong,
}

#[derive(Debug, Clone)]
/// Frames input strictly on CRLF, within a line-length limit.
pub struct LineReader {
    /// Longest line accepted, CRLF included.
    max: usize,
    /// Inside an over-long line: drop bytes until its CRLF.
    discarding: bool,
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

impl LineReader {
    /// A reader accepting lines of at most `max` bytes, CRLF included.
    pub fn new(max: usize) -> Self {
        LineReader {
            max,
            discarding: false,
        }
    }

    /// Takes the next complete line from `buf[*pos..]`, advancing `pos` past it; `None` until
    /// one is complete. The caller removes consumed bytes in one go (per read, not per line),
    /// so many short lines in one read cost linear time.
    pub fn next_at(&mut self, buf: &mut Vec<u8>, pos: &mut usize) -> Option<Line> {
        let rest = &buf[*pos..];
        match find_crlf(rest) {
            Some(end) => {
                let line = rest[..end].to_vec();
                *pos += end + 2;
                if std::mem::take(&mut self.discarding) || end + 2 > self.max {
                    return Some(Line::TooLong);
                }
                if line.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
                    return Some(Line::Bare);
                }
                Some(Line::Ok(line))
            }
            None => {
                if rest.len() >= self.max {
                    // Keep a final CR: it may be the first half of the CRLF.
                    let keep = usize::from(rest.last() == Some(&b'\r'));
                    buf.drain(*pos..buf.len() - keep);
                    self.discarding = true;
                }
                None
            }
        }
    }

    /// `next_at` from the front of `buf`, removing the line.
    pub fn next(&mut self, buf: &mut Vec<u8>) -> Option<Line> {
        let mut pos = 0;
        let line = self.next_at(buf, &mut pos);
        buf.drain(..pos);
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<Line> {
        let mut reader = LineReader::new(max);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        // Byte by byte: framing must not depend on how reads split the input.
        for b in input {
            buf.push(*b);
            while let Some(l) = reader.next(&mut buf) {
                out.push(l);
            }
        }
        out
    }

    #[test]
    fn frames_only_on_crlf() {
        assert_eq!(
            lines(b"NOOP\r\nQUIT\r\n", 512),
            [Line::Ok(b"NOOP".to_vec()), Line::Ok(b"QUIT".to_vec())]
        );
        assert_eq!(lines(b"NOOP\nQUIT\r\n", 512), [Line::Bare]);
        assert_eq!(lines(b"NO\rOP\r\n", 512), [Line::Bare]);
        assert_eq!(lines(b"NO\0OP\r\n", 512), [Line::Bare]);
        assert_eq!(lines(b"NOOP\r\r\n", 512), [Line::Bare]);
    }

    #[test]
    fn long_lines_are_discarded_without_buffering() {
        let mut input = vec![b'a'; 10_000];
        input.extend_from_slice(b"\r\nNOOP\r\n");
        assert_eq!(
            lines(&input, 512),
            [Line::TooLong, Line::Ok(b"NOOP".to_vec())]
        );
        // 510 bytes + CRLF = 512: the limit itself is accepted.
        let mut exact = vec![b'a'; 510];
        exact.extend_from_slice(b"\r\n");
        assert_eq!(lines(&exact, 512), [Line::Ok(vec![b'a'; 510])]);
        let mut over = vec![b'a'; 511];
        over.extend_from_slice(b"\r\n");
        assert_eq!(lines(&over, 512), [Line::TooLong]);
        let mut reader = LineReader::new(512);
        let mut buf = vec![b'a'; 100_000];
        assert_eq!(reader.next(&mut buf), None);
        assert!(buf.len() <= 1);
    }
}
