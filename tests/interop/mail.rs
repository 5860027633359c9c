//! What the integrity and DSN sections share: the Python tool (dkimpy, Python's email
//! package) and finding a message in a Maildir by a line it contains.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::peers::poll;

const TOOL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/interop/mail_tool.py"
);

/// Runs mail_tool.py with `input` on its standard input; its standard output.
pub fn python(args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("python3")
        .arg(TOOL)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Written from a thread: a 14 MB message does not fit in the pipe while the tool writes.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "mail_tool.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub fn python_text(args: &[&str], input: &[u8]) -> String {
    String::from_utf8_lossy(&python(args, input))
        .trim()
        .to_string()
}

/// A Maildir copy with LF line ends back in SMTP's CRLF.
pub fn crlf(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 40);
    for line in message.split_inclusive(|b| *b == b'\n') {
        match line.strip_suffix(b"\n") {
            Some(l) if !l.ends_with(b"\r") => {
                out.extend_from_slice(l);
                out.extend_from_slice(b"\r\n");
            }
            _ => out.extend_from_slice(line),
        }
    }
    out
}

/// Waits for the message holding `needle` in a Maildir (as `mailbox` lists it), in CRLF.
pub async fn find(mailbox: impl Fn() -> Vec<Vec<u8>>, needle: &[u8]) -> Option<Vec<u8>> {
    poll(Duration::from_secs(120), async || {
        mailbox()
            .into_iter()
            .find(|m| m.windows(needle.len()).any(|w| w == needle))
            .map(|m| crlf(&m))
    })
    .await
}
