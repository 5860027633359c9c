//! The client side (the worker relaying to a next hop), sans-IO like the server: feed it the
//! server's bytes, take its output, and answer its questions. It reads the greeting and EHLO,
//! lets the shell decide on STARTTLS from the offered extensions (docs/src/policy.md#outbound), and
//! after
//! the handshake discards anything the server sent after its STARTTLS reply (capabilities come
//! only from the EHLO inside TLS). Then MAIL, each RCPT, DATA (pipelined when offered) with
//! dot-stuffing applied; every recipient gets its own reply. A session that ended its
//! transaction cleanly can carry the next message (`reset`: RSET, then MAIL again), which is how
//! the worker reuses connections; otherwise it ends with QUIT. Reply text is made printable as
//! it is parsed, so nothing a next hop sends reaches a DSN or a record raw.

use std::sync::Arc;

use crate::reply::Reply;
use crate::text::printable;

/// What the next hop said in EHLO.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    /// STARTTLS was offered.
    pub starttls: bool,
    /// PIPELINING was offered: commands are sent in groups.
    pub pipelining: bool,
    /// 8BITMIME was offered (`BODY=8BITMIME` is sent for 8-bit mail).
    pub eight_bit_mime: bool,
    /// SMTPUTF8 was offered.
    pub smtputf8: bool,
    /// The SIZE limit the server announced, if any.
    pub size: Option<u64>,
}

impl Extensions {
    fn parse(reply: &Reply) -> Extensions {
        let mut e = Extensions::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            match words.next().map(str::to_ascii_uppercase).as_deref() {
                Some("STARTTLS") => e.starttls = true,
                Some("PIPELINING") => e.pipelining = true,
                Some("8BITMIME") => e.eight_bit_mime = true,
                Some("SMTPUTF8") => e.smtputf8 = true,
                Some("SIZE") => {
                    e.size = words.next().and_then(|s| s.parse().ok()).filter(|s| *s > 0)
                }
                _ => {}
            }
        }
        e
    }
}

/// The envelope of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The reverse path, without angle brackets (empty for `<>`).
    pub from: String,
    /// The forward paths, in order.
    pub recipients: Vec<String>,
    /// The message size in bytes (sent as `SIZE=` when the server offers it).
    pub size: u64,
    /// The message holds 8-bit bytes.
    pub eight_bit: bool,
    /// The message needs SMTPUTF8.
    pub smtputf8: bool,
}

/// What the shell must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// Write the pending output, then read more.
    NeedInput,
    /// EHLO (or HELO) answered: decide with `start_tls`, `proceed` or `quit`.
    Greeted {
        /// What the server offered.
        extensions: Extensions,
        /// The greeting came inside TLS.
        tls: bool,
    },
    /// The server agreed to STARTTLS; anything it sent after that reply was `discarded`. Run the
    /// handshake, then call `tls_started`.
    StartTls {
        /// Bytes that followed the 220, thrown away.
        discarded: usize,
    },
    /// STARTTLS was refused with this reply.
    StartTlsRefused(Reply),
    /// A reused session refused RSET: it cannot carry the message (start a new one).
    ResetRefused(Reply),
    /// The transaction ended (or failed): the outcome per recipient and for the message. Write
    /// the pending output (a QUIT, unless `reusable`).
    Done(Outcome),
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The reply to each recipient's RCPT, or to the final dot for those the server accepted.
    pub recipients: Vec<(String, Reply)>,
    /// Set when the session failed before the recipients were settled (greeting, EHLO, MAIL,
    /// DATA); every recipient then has this reply.
    pub session: Option<Reply>,
    /// The replies are the client's own reason (a malformed or unexpected reply, a policy
    /// stop), not the server's.
    pub local: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Greeting,
    Ehlo,
    Helo,
    Decide,
    StartTls,
    AwaitTls,
    Mail,
    Rcpt(usize),
    Data,
    Message,
    Rset,
    /// The transaction ended cleanly: the session can carry another one.
    Idle,
    /// QUIT is queued (or the server spoke nonsense): nothing more is read.
    Closed,
}

/// The sans-IO SMTP client: one session with a next hop, fed bytes with `receive`, asked what to do
/// with `poll`, its bytes to send taken with `take_output`.
pub struct Client {
    helo_name: String,
    envelope: Envelope,
    message: Arc<[u8]>,
    state: State,
    input: Vec<u8>,
    output: Vec<u8>,
    tls: bool,
    extensions: Extensions,
    rcpt_replies: Vec<Reply>,
    outcome: Option<Outcome>,
    /// Complete replies parsed so far: the shell restarts its reply deadline when this moves.
    replies: u64,
    /// The transaction after RSET was sent with it (PIPELINING), not after its reply.
    reset_pipelined: bool,
}

/// The longest reply line accepted from a server, and the most lines in one reply.
const MAX_REPLY_LINE: usize = 4096;
const MAX_REPLY_LINES: usize = 200;
/// The reply text kept (all lines together), as Postfix keeps `line_length_limit` (2,048)
/// bytes of a multi-line reply: what reaches state files, events, DSNs, the queue listing and
/// logs. The rest is read and dropped (a printable line of 4,096 invalid bytes is 12 KiB).
pub const MAX_REPLY_TEXT: usize = 2048;

impl Client {
    /// `message` is the message as spooled (CRLF line ends, not yet dot-stuffed).
    pub fn new(helo_name: &str, envelope: Envelope, message: impl Into<Arc<[u8]>>) -> Client {
        Client {
            helo_name: helo_name.to_string(),
            envelope,
            message: message.into(),
            state: State::Greeting,
            input: Vec::new(),
            output: Vec::new(),
            tls: false,
            extensions: Extensions::default(),
            rcpt_replies: Vec::new(),
            outcome: None,
            replies: 0,
            reset_pipelined: false,
        }
    }

    /// Bytes read from the server.
    pub fn receive(&mut self, bytes: &[u8]) {
        if !matches!(self.state, State::Closed | State::Idle) {
            self.input.extend_from_slice(bytes);
        }
    }

    /// How many complete replies the server has sent.
    pub fn replies(&self) -> u64 {
        self.replies
    }

    /// Whether the session can carry another transaction (`reset`).
    pub fn reusable(&self) -> bool {
        self.state == State::Idle
    }

    /// Whether the session is in TLS.
    pub fn in_tls(&self) -> bool {
        self.tls
    }

    /// Whether the next output is the message body (its writes get the DATA deadline).
    pub fn sending_body(&self) -> bool {
        self.state == State::Message
    }

    /// What the client waits for, in Postfix's words ("timed out while ...").
    pub fn stage(&self) -> &'static str {
        match self.state {
            State::Greeting => "receiving the initial server greeting",
            State::Ehlo | State::Helo | State::Decide => "performing the EHLO handshake",
            State::StartTls | State::AwaitTls => "performing the STARTTLS handshake",
            State::Mail => "sending MAIL FROM",
            State::Rcpt(_) => "sending RCPT TO",
            State::Data => "sending DATA command",
            State::Message => "sending end of data -- message may be sent more than once",
            State::Rset => "sending RSET",
            State::Idle | State::Closed => "sending QUIT",
        }
    }

    /// Starts the next transaction on a session that ended the last one cleanly: RSET, then
    /// MAIL as for the first (RFC 5321 4.1.1.5); with PIPELINING in the same batch (RFC 2920
    /// lets RSET lead one), so that reuse costs no extra round trip.
    pub fn reset(&mut self, envelope: Envelope, message: impl Into<Arc<[u8]>>) {
        debug_assert_eq!(self.state, State::Idle);
        self.envelope = envelope;
        self.message = message.into();
        self.rcpt_replies.clear();
        self.outcome = None;
        self.input.clear();
        if let Some(refusal) = self.refusal() {
            self.quit(refusal);
            return;
        }
        self.send("RSET");
        self.reset_pipelined = self.extensions.pipelining;
        if self.reset_pipelined {
            self.begin_transaction();
        }
        self.state = State::Rset;
    }

    /// Ends an idle session: QUIT is queued, nothing more is read.
    pub fn close(&mut self) {
        if self.state == State::Idle {
            self.send("QUIT");
        }
        self.state = State::Closed;
    }

    /// Bytes to write to the server.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// What the server offered in its last EHLO reply.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    fn send(&mut self, line: &str) {
        self.output.extend_from_slice(line.as_bytes());
        self.output.extend_from_slice(b"\r\n");
    }

    /// After `Greeted`: ask for STARTTLS.
    pub fn start_tls(&mut self) {
        debug_assert_eq!(self.state, State::Decide);
        self.send("STARTTLS");
        self.state = State::StartTls;
    }

    /// After `Greeted`: go on with the transaction as things are.
    pub fn proceed(&mut self) {
        debug_assert_eq!(self.state, State::Decide);
        self.begin_transaction();
    }

    /// Ends the session politely without a transaction (the policy forbids going on); every
    /// recipient gets `reason`.
    pub fn quit(&mut self, reason: Reply) {
        self.end(reason, true);
        self.send("QUIT");
    }

    /// After the handshake: EHLO again; what the server said before is forgotten.
    pub fn tls_started(&mut self) {
        debug_assert_eq!(self.state, State::AwaitTls);
        self.tls = true;
        self.input.clear();
        self.extensions = Extensions::default();
        let ehlo = format!("EHLO {}", self.helo_name);
        self.send(&ehlo);
        self.state = State::Ehlo;
    }

    /// Why the session must not write its commands: an argument holding CR, LF or NUL would
    /// end the command early and let the rest be read as commands of its own (an address from
    /// a DNS record, say). The client refuses it as an error of its own; no byte of it is sent.
    fn refusal(&self) -> Option<Reply> {
        let unsafe_text = |s: &str| s.contains(['\r', '\n', '\0']);
        if unsafe_text(&self.helo_name) {
            return Some(Reply::new(
                501,
                "5.5.2 Error: the HELO name holds CR, LF or NUL",
            ));
        }
        let e = &self.envelope;
        (unsafe_text(&e.from) || e.recipients.iter().any(|r| unsafe_text(r)))
            .then(|| Reply::new(501, "5.1.3 Error: an envelope address holds CR, LF or NUL"))
    }

    fn begin_transaction(&mut self) {
        if let Some(refusal) = self.refusal() {
            self.quit(refusal);
            return;
        }
        let e = &self.envelope;
        let mut mail = format!("MAIL FROM:<{}>", e.from);
        if self.extensions.size.is_some() {
            mail.push_str(&format!(" SIZE={}", e.size));
        }
        if e.eight_bit && self.extensions.eight_bit_mime {
            mail.push_str(" BODY=8BITMIME");
        }
        if e.smtputf8 && self.extensions.smtputf8 {
            mail.push_str(" SMTPUTF8");
        }
        self.send(&mail);
        if self.extensions.pipelining {
            // RFC 2920: MAIL, every RCPT and DATA in one batch; replies come in order.
            let rcpts: Vec<String> = self
                .envelope
                .recipients
                .iter()
                .map(|r| format!("RCPT TO:<{r}>"))
                .collect();
            for r in rcpts {
                self.send(&r);
            }
            self.send("DATA");
        }
        self.state = State::Mail;
    }

    /// Ends the transaction with the server's `reply` for every recipient, and the session
    /// with QUIT.
    fn fail(&mut self, reply: Reply) {
        self.end(reply, false);
        self.send("QUIT");
    }

    /// Ends the session without QUIT, for a reason of our own.
    fn fail_silently(&mut self, reply: Reply) {
        self.end(reply, true);
    }

    fn end(&mut self, reply: Reply, local: bool) {
        self.outcome = Some(Outcome {
            recipients: self
                .envelope
                .recipients
                .iter()
                .map(|r| (r.clone(), reply.clone()))
                .collect(),
            session: Some(reply),
            local,
        });
        self.state = State::Closed;
    }

    /// One complete reply from the front of the input; `Err` for a malformed one.
    fn next_reply(&mut self) -> Option<Result<Reply, Reply>> {
        let mut lines = Vec::new();
        let mut code = None;
        let mut pos = 0;
        let (mut kept, mut count) = (0, 0);
        loop {
            let rest = &self.input[pos..];
            let Some(end) = rest.iter().position(|b| *b == b'\n') else {
                if rest.len() > MAX_REPLY_LINE {
                    return Some(Err(Reply::new(
                        451,
                        "4.5.0 Error: the server sent a line too long",
                    )));
                }
                return None;
            };
            let raw = &rest[..end];
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            pos += end + 1;
            let text = printable(raw);
            let malformed = || {
                Some(Err(Reply::new(
                    451,
                    format!("4.5.0 Error: malformed reply from the server: {text:.80}"),
                )))
            };
            if raw.len() < 3 || !raw[..3].iter().all(u8::is_ascii_digit) || count >= MAX_REPLY_LINES
            {
                return malformed();
            }
            let this: u16 = text[..3].parse().expect("three digits");
            if code.is_some_and(|c| c != this) {
                return malformed();
            }
            code = Some(this);
            count += 1;
            let mut line = text.get(4..).unwrap_or("").to_string();
            if kept < MAX_REPLY_TEXT {
                let mut end = line.len().min(MAX_REPLY_TEXT - kept);
                while !line.is_char_boundary(end) {
                    end -= 1;
                }
                line.truncate(end);
                kept += line.len().max(1);
                lines.push(line);
            }
            match raw.get(3) {
                None | Some(b' ') => break,
                Some(b'-') => continue,
                Some(_) => return malformed(),
            }
        }
        self.input.drain(..pos);
        Some(Ok(Reply::multi(code.expect("at least one line"), lines)))
    }

    /// What the shell must do next.
    pub fn poll(&mut self) -> ClientEvent {
        loop {
            if matches!(self.state, State::Closed | State::Idle) {
                return ClientEvent::Done(self.outcome.clone().expect("an outcome when done"));
            }
            let reply = match self.next_reply() {
                None => return ClientEvent::NeedInput,
                Some(Ok(r)) => r,
                Some(Err(e)) => {
                    // A server that speaks nonsense gets no QUIT: the session just ends.
                    self.fail_silently(e);
                    continue;
                }
            };
            self.replies += 1;
            if let Some(event) = self.handle(reply) {
                return event;
            }
        }
    }

    fn handle(&mut self, reply: Reply) -> Option<ClientEvent> {
        match self.state {
            State::Greeting => {
                if reply.code != 220 {
                    self.fail(reply);
                } else if let Some(refusal) = self.refusal() {
                    self.quit(refusal);
                } else {
                    let ehlo = format!("EHLO {}", self.helo_name);
                    self.send(&ehlo);
                    self.state = State::Ehlo;
                }
            }
            State::Ehlo if reply.code == 250 => {
                self.extensions = Extensions::parse(&reply);
                self.state = State::Decide;
                return Some(ClientEvent::Greeted {
                    extensions: self.extensions.clone(),
                    tls: self.tls,
                });
            }
            State::Ehlo if !self.tls && (500..=502).contains(&reply.code) => {
                // An old server without ESMTP.
                let helo = format!("HELO {}", self.helo_name);
                self.send(&helo);
                self.state = State::Helo;
            }
            State::Helo if reply.code == 250 => {
                self.extensions = Extensions::default();
                self.state = State::Decide;
                return Some(ClientEvent::Greeted {
                    extensions: Extensions::default(),
                    tls: self.tls,
                });
            }
            State::Ehlo | State::Helo => self.fail(reply),
            State::StartTls if reply.code == 220 => {
                // Whatever followed the 220 must never be read as coming from inside TLS.
                let discarded = self.input.len();
                self.input.clear();
                self.state = State::AwaitTls;
                return Some(ClientEvent::StartTls { discarded });
            }
            State::StartTls => {
                self.state = State::Decide;
                return Some(ClientEvent::StartTlsRefused(reply));
            }
            State::Rset if reply.code == 250 => {
                if std::mem::take(&mut self.reset_pipelined) {
                    self.state = State::Mail;
                } else {
                    self.begin_transaction();
                }
            }
            State::Rset => {
                self.fail(reply.clone());
                return Some(ClientEvent::ResetRefused(reply));
            }
            State::Mail => {
                if reply.code != 250 {
                    // Pipelined RCPT and DATA replies that follow are not read: QUIT ends it.
                    self.fail(reply);
                } else if self.extensions.pipelining {
                    self.state = State::Rcpt(0);
                } else {
                    self.state = State::Rcpt(0);
                    let r = format!("RCPT TO:<{}>", self.envelope.recipients[0]);
                    self.send(&r);
                }
            }
            State::Rcpt(i) => {
                self.rcpt_replies.push(reply);
                let next = i + 1;
                if next < self.envelope.recipients.len() {
                    self.state = State::Rcpt(next);
                    if !self.extensions.pipelining {
                        let r = format!("RCPT TO:<{}>", self.envelope.recipients[next]);
                        self.send(&r);
                    }
                } else {
                    self.state = State::Data;
                    let accepted = self
                        .rcpt_replies
                        .iter()
                        .any(|r| r.code == 250 || r.code == 251);
                    if !self.extensions.pipelining {
                        if accepted {
                            self.send("DATA");
                        } else {
                            self.finish_without_data();
                        }
                    }
                }
            }
            State::Data => {
                let accepted = self
                    .rcpt_replies
                    .iter()
                    .any(|r| r.code == 250 || r.code == 251);
                if reply.code == 354 && accepted {
                    let stuffed = dot_stuff(&self.message);
                    self.output.extend_from_slice(&stuffed);
                    self.output.extend_from_slice(b".\r\n");
                    self.state = State::Message;
                } else if reply.code == 354 {
                    // Pipelined DATA accepted though no recipient was: end it empty (RFC 2920 3.1).
                    self.output.extend_from_slice(b".\r\n");
                    self.state = State::Message;
                    self.rcpt_replies
                        .push(Reply::new(0, "no recipient accepted"));
                } else if accepted {
                    self.fail(reply);
                    self.keep_rcpt_refusals();
                } else {
                    self.finish_without_data();
                }
            }
            State::Message => {
                if self.rcpt_replies.last().is_some_and(|r| r.code == 0) {
                    self.rcpt_replies.pop();
                    self.finish_without_data();
                } else {
                    let recipients = self
                        .envelope
                        .recipients
                        .iter()
                        .zip(&self.rcpt_replies)
                        .map(|(r, rcpt)| {
                            (
                                r.clone(),
                                if rcpt.code == 250 || rcpt.code == 251 {
                                    reply.clone()
                                } else {
                                    rcpt.clone()
                                },
                            )
                        })
                        .collect();
                    self.outcome = Some(Outcome {
                        recipients,
                        session: None,
                        local: false,
                    });
                    self.state = State::Idle;
                }
            }
            State::Decide | State::AwaitTls | State::Idle | State::Closed => {
                // A reply nobody asked for: the server is out of step.
                self.fail_silently(Reply::new(
                    451,
                    "4.5.0 Error: unexpected reply from the server",
                ));
            }
        }
        None
    }

    /// Every recipient was refused: their own replies are the outcome.
    fn finish_without_data(&mut self) {
        let recipients = self
            .envelope
            .recipients
            .iter()
            .cloned()
            .zip(self.rcpt_replies.iter().cloned())
            .collect();
        self.outcome = Some(Outcome {
            recipients,
            session: None,
            local: false,
        });
        self.state = State::Idle;
    }

    /// A DATA failure: recipients refused at RCPT keep their own reply.
    fn keep_rcpt_refusals(&mut self) {
        if let Some(outcome) = self.outcome.as_mut() {
            for ((_, reply), rcpt) in outcome.recipients.iter_mut().zip(&self.rcpt_replies) {
                if rcpt.code != 250 && rcpt.code != 251 {
                    *reply = rcpt.clone();
                }
            }
        }
    }
}

/// Applies dot-stuffing (a line starting with `.` gets another) to a CRLF message; a missing
/// final CRLF is added. Lines are never split or rewrapped.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 2);
    let mut at_line_start = true;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}
