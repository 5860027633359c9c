//! The server session: feed it bytes with `receive`, then call `poll` until it asks for more
//! input. Replies accumulate in an output buffer the shell writes out before reading again
//! (which is what PIPELINING allows). Decisions the session cannot take alone (MAIL FROM and
//! RCPT TO under the policy, the spool's answer after DATA) are events the shell answers with
//! `answer`; until then the session processes nothing further, so pipelined commands keep their
//! order.

use crate::address::Address;
use crate::command::{Command, MailParams, parse_command};
use crate::data::{DataOutcome, DataReader};
use crate::line::{Line, LineReader};
use crate::reply::Reply;

/// Session limits (docs/src/smtp.md). No defaults here: the values, and their defaults, are
/// `/v1/settings`' (postern-policy's `SmtpLimits`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest command line, CRLF included.
    pub max_command_line: usize,
    /// Longest text line in DATA, CRLF included.
    pub max_line: usize,
    /// Largest message, in bytes (advertised with SIZE).
    pub max_message_size: u64,
    /// Largest header block, in bytes.
    pub max_header_size: u64,
    /// Recipients per message.
    pub max_recipients: u32,
    /// Errors before the session is closed.
    pub max_hard_errors: u32,
    /// Commands allowed before MAIL FROM.
    pub max_commands_before_mail: u32,
    /// `Received:` headers before a message is refused as looping.
    pub max_received_headers: u32,
}

#[derive(Debug, Clone)]
/// What a session is set up with.
pub struct ServerConfig {
    /// The name in the banner, the EHLO reply and 421 texts.
    pub hostname: String,
    /// The session limits.
    pub limits: Limits,
    /// Whether EHLO offers STARTTLS (the connect-time policy level is not `none`).
    pub offer_starttls: bool,
}

/// What the shell must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Write the pending output, then read more input.
    NeedInput,
    /// Decide on this sender; answer `Accept` (250), `Reject` or `Close`.
    Mail {
        /// The reverse path.
        from: Address,
        /// Its parameters.
        params: MailParams,
    },
    /// Decide on this recipient.
    Rcpt {
        /// The forward path.
        to: Address,
    },
    /// Message bytes to spool (dot-unstuffed, CRLF line ends).
    Data(Vec<u8>),
    /// The message ended. `Complete`: spool it and answer with the reply (250 queued as, or an
    /// error). Otherwise the session has already replied; discard what was spooled.
    DataEnd(DataOutcome),
    /// Write the pending output (the 220), then run the TLS handshake and call `tls_started`.
    /// `discarded` bytes that arrived after the STARTTLS line were thrown away.
    StartTls {
        /// Bytes that followed the STARTTLS line.
        discarded: usize,
    },
    /// Write the pending output and close the connection.
    Close,
}

/// The shell's answer to `Mail`, `Rcpt` or `DataEnd(Complete)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The default success reply.
    Accept,
    /// Send this reply; the session goes on (a 2xx reply counts as acceptance).
    Reply(Reply),
    /// Send this reply and close (every 421).
    Close(Reply),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    Mail,
    Rcpt,
    DataEnd,
    Tls,
}

#[derive(Debug)]
/// The sans-IO SMTP server: one session, fed bytes with `receive`, asked what to do with `poll`,
/// its replies taken with `take_output`.
pub struct Server {
    config: ServerConfig,
    input: Vec<u8>,
    /// How much of `input` has been parsed.
    input_pos: usize,
    output: Vec<u8>,
    lines: LineReader,
    data: Option<DataReader>,
    chunk: Vec<u8>,
    waiting: Option<Waiting>,
    closed: bool,
    tls: bool,
    helo: Option<String>,
    /// The client greeted with EHLO (the Received header says ESMTP), not HELO (SMTP).
    esmtp: bool,
    mail: Option<(Address, MailParams)>,
    pending_mail: Option<(Address, MailParams)>,
    pending_rcpt: Option<Address>,
    recipients: Vec<Address>,
    /// The end of the message, announced after its last chunk.
    data_end: Option<DataOutcome>,
    hard_errors: u32,
    commands_before_mail: u32,
    /// Replies that enforced a limit (for the rejection metric).
    limits_hit: u32,
}

/// Spool chunks of about this size, so a large message is never held whole.
const CHUNK: usize = 64 * 1024;

impl Server {
    /// A session that greets with the banner.
    pub fn new(config: ServerConfig) -> Server {
        Server {
            lines: LineReader::new(config.limits.max_command_line),
            config,
            input: Vec::new(),
            input_pos: 0,
            output: Vec::new(),
            data: None,
            chunk: Vec::new(),
            waiting: None,
            closed: false,
            tls: false,
            helo: None,
            esmtp: false,
            mail: None,
            pending_mail: None,
            pending_rcpt: None,
            recipients: Vec::new(),
            data_end: None,
            hard_errors: 0,
            commands_before_mail: 0,
            limits_hit: 0,
        }
    }

    /// The banner: `220 <hostname> ESMTP Postern`.
    pub fn greeting(&mut self) {
        let banner = Reply::new(220, format!("{} ESMTP Postern", self.config.hostname));
        self.reply(banner);
    }

    /// Bytes read from the client (ignored once the session is closed).
    pub fn receive(&mut self, bytes: &[u8]) {
        if !self.closed {
            // Lines already parsed are removed here, once per read rather than once per line.
            self.input.drain(..std::mem::take(&mut self.input_pos));
            self.input.extend_from_slice(bytes);
        }
    }

    /// Bytes to write to the client.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// The HELO or EHLO name, since the last greeting.
    pub fn helo(&self) -> Option<&str> {
        self.helo.as_deref()
    }

    /// The client greeted with EHLO.
    pub fn esmtp(&self) -> bool {
        self.esmtp
    }

    /// The sender of the transaction in progress.
    pub fn sender(&self) -> Option<&Address> {
        self.mail.as_ref().map(|(a, _)| a)
    }

    /// The recipients accepted so far in the transaction.
    pub fn recipients(&self) -> &[Address] {
        &self.recipients
    }

    /// The MAIL FROM parameters of the transaction in progress.
    pub fn mail_params(&self) -> Option<&MailParams> {
        self.mail.as_ref().map(|(_, p)| p)
    }

    /// Replies so far that enforced one of the limits (line length, recipients, errors,
    /// commands before MAIL); the DATA limits are the `DataEnd` outcomes.
    pub fn limits_hit(&self) -> u32 {
        self.limits_hit
    }

    /// STARTTLS completed.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Queues a reply and closes: for the shell's own 421s (timeouts, shutdown).
    pub fn close_with(&mut self, reply: Reply) {
        self.reply(reply);
        self.closed = true;
    }

    /// After a successful handshake: everything the client said before is forgotten (HELO
    /// too), and STARTTLS is no longer offered.
    pub fn tls_started(&mut self) {
        debug_assert_eq!(self.waiting, Some(Waiting::Tls));
        self.waiting = None;
        self.tls = true;
        self.input.clear();
        self.input_pos = 0;
        self.lines = LineReader::new(self.config.limits.max_command_line);
        self.reset_transaction();
        self.helo = None;
    }

    fn reply(&mut self, reply: Reply) {
        self.output.extend_from_slice(&reply.to_bytes());
    }

    /// A 5xx to a command: counts towards the hard error limit, after which the session ends.
    fn error(&mut self, reply: Reply) {
        let permanent = reply.code >= 500;
        self.reply(reply);
        if permanent {
            self.hard_errors += 1;
            if self.hard_errors >= self.config.limits.max_hard_errors {
                self.limits_hit += 1;
                let r = Reply::too_many_errors(&self.config.hostname);
                self.close_with(r);
            }
        }
    }

    fn reset_transaction(&mut self) {
        self.mail = None;
        self.pending_mail = None;
        self.pending_rcpt = None;
        self.recipients.clear();
        self.data = None;
        self.data_end = None;
        self.chunk.clear();
    }

    /// Applies the shell's answer to the event it was given.
    pub fn answer(&mut self, answer: Answer) {
        let Some(waiting) = self.waiting.take() else {
            debug_assert!(false, "answer without a pending decision");
            return;
        };
        let (reply, close, accepted) = match answer {
            Answer::Accept => (None, false, true),
            Answer::Reply(r) => {
                let ok = r.code < 300;
                (Some(r), false, ok)
            }
            Answer::Close(r) => (Some(r), true, false),
        };
        match waiting {
            Waiting::Mail => {
                let pending = self.pending_mail.take();
                if accepted {
                    self.mail = pending;
                    self.commands_before_mail = 0;
                }
                self.finish_answer(reply.unwrap_or_else(|| Reply::new(250, "2.1.0 Ok")), close);
            }
            Waiting::Rcpt => {
                if let Some(to) = self.pending_rcpt.take().filter(|_| accepted) {
                    self.recipients.push(to);
                }
                self.finish_answer(reply.unwrap_or_else(|| Reply::new(250, "2.1.5 Ok")), close);
            }
            Waiting::DataEnd => {
                self.reset_transaction();
                let r = reply.unwrap_or_else(Reply::local_error);
                self.finish_answer(r, close);
            }
            Waiting::Tls => {}
        }
    }

    fn finish_answer(&mut self, reply: Reply, close: bool) {
        if close {
            self.close_with(reply);
        } else if reply.code >= 500 {
            self.error(reply);
        } else {
            self.reply(reply);
        }
    }

    /// Advances the session as far as the input allows.
    pub fn poll(&mut self) -> Event {
        loop {
            if self.closed {
                return Event::Close;
            }
            if self.waiting.is_some() {
                // The shell owes an answer; nothing moves until it gives one.
                return Event::NeedInput;
            }
            if self.data.is_some() {
                if let Some(event) = self.poll_data() {
                    return event;
                }
                continue;
            }
            let Some(line) = self.lines.next_at(&mut self.input, &mut self.input_pos) else {
                return Event::NeedInput;
            };
            let command = match line {
                Line::Ok(l) => parse_command(&l),
                Line::Bare => Err(Reply::bare_line_end()),
                Line::TooLong => {
                    self.limits_hit += 1;
                    Err(Reply::command_too_long())
                }
            };
            if !matches!(
                command,
                Ok(Command::Mail(..) | Command::Rcpt(_) | Command::Data | Command::Quit)
            ) && self.mail.is_none()
            {
                self.commands_before_mail += 1;
                if self.commands_before_mail > self.config.limits.max_commands_before_mail {
                    self.limits_hit += 1;
                    let r = Reply::too_many_errors(&self.config.hostname);
                    self.close_with(r);
                    continue;
                }
            }
            match command {
                Err(reply) => self.error(reply),
                Ok(command) => {
                    if let Some(event) = self.command(command) {
                        return event;
                    }
                }
            }
        }
    }

    fn command(&mut self, command: Command) -> Option<Event> {
        match command {
            Command::Ehlo(name) => {
                self.reset_transaction();
                self.helo = Some(name);
                self.esmtp = true;
                let mut lines = vec![
                    self.config.hostname.clone(),
                    "PIPELINING".into(),
                    format!("SIZE {}", self.config.limits.max_message_size),
                ];
                if self.config.offer_starttls && !self.tls {
                    lines.push("STARTTLS".into());
                }
                lines.extend([
                    "ENHANCEDSTATUSCODES".into(),
                    "8BITMIME".into(),
                    "SMTPUTF8".into(),
                ]);
                self.reply(Reply::multi(250, lines));
            }
            Command::Helo(name) => {
                self.reset_transaction();
                self.helo = Some(name);
                self.esmtp = false;
                let r = Reply::new(250, self.config.hostname.clone());
                self.reply(r);
            }
            Command::Mail(from, params) => {
                if self.helo.is_none() {
                    self.error(Reply::send_helo_first());
                } else if self.mail.is_some() {
                    self.error(Reply::new(503, "5.5.1 Error: nested MAIL command"));
                } else if params
                    .size
                    .is_some_and(|s| s > self.config.limits.max_message_size)
                {
                    self.error(Reply::size_exceeds_limit());
                } else {
                    self.pending_mail = Some((from.clone(), params.clone()));
                    self.waiting = Some(Waiting::Mail);
                    return Some(Event::Mail { from, params });
                }
            }
            Command::Rcpt(to) => {
                if self.mail.is_none() {
                    self.error(Reply::new(503, "5.5.1 Error: need MAIL command"));
                } else if self.recipients.len() as u32 >= self.config.limits.max_recipients {
                    self.limits_hit += 1;
                    self.reply(Reply::too_many_recipients());
                } else {
                    self.waiting = Some(Waiting::Rcpt);
                    self.pending_rcpt = Some(to.clone());
                    return Some(Event::Rcpt { to });
                }
            }
            Command::Data => {
                if self.mail.is_none() {
                    self.error(Reply::new(503, "5.5.1 Error: need MAIL command"));
                } else if self.recipients.is_empty() {
                    self.error(Reply::new(503, "5.5.1 Error: need RCPT command"));
                } else {
                    let l = &self.config.limits;
                    self.data = Some(DataReader::new(
                        l.max_line,
                        l.max_message_size,
                        l.max_header_size,
                        l.max_received_headers,
                    ));
                    self.reply(Reply::start_data());
                }
            }
            Command::Rset => {
                self.reset_transaction();
                self.reply(Reply::ok());
            }
            Command::Noop => self.reply(Reply::ok()),
            Command::Quit => {
                self.close_with(Reply::bye());
            }
            Command::Vrfy(arg) => self.reply(Reply::new(252, format!("2.0.0 {arg}"))),
            Command::Help => self.reply(Reply::new(
                214,
                "2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT STARTTLS VRFY HELP",
            )),
            Command::StartTls => {
                if self.tls {
                    self.error(Reply::new(554, "5.5.1 Error: TLS already active"));
                } else if !self.config.offer_starttls {
                    self.error(Reply::not_implemented());
                } else if self.mail.is_some() {
                    self.error(Reply::new(503, "5.5.1 Error: MAIL transaction in progress"));
                } else {
                    self.reply(Reply::ready_to_start_tls());
                    // Whatever the client sent after STARTTLS must never run inside TLS.
                    let discarded = self.input.len() - self.input_pos;
                    self.input.clear();
                    self.input_pos = 0;
                    self.waiting = Some(Waiting::Tls);
                    return Some(Event::StartTls { discarded });
                }
            }
        }
        None
    }

    fn poll_data(&mut self) -> Option<Event> {
        if let Some(outcome) = self.data_end.take() {
            return Some(self.finish_data(outcome));
        }
        self.input.drain(..std::mem::take(&mut self.input_pos));
        let reader = self.data.as_mut().expect("in DATA");
        if let Some(outcome) = reader.feed(&mut self.input, &mut self.chunk) {
            self.data_end = Some(outcome);
        }
        // Message bytes go out before the end is announced.
        if self.chunk.len() >= CHUNK || (self.data_end.is_some() && !self.chunk.is_empty()) {
            return Some(Event::Data(std::mem::take(&mut self.chunk)));
        }
        match self.data_end.take() {
            Some(outcome) => Some(self.finish_data(outcome)),
            None => Some(Event::NeedInput),
        }
    }

    fn finish_data(&mut self, outcome: DataOutcome) -> Event {
        self.data = None;
        let Some(refusal) = outcome.refusal() else {
            self.waiting = Some(Waiting::DataEnd);
            return Event::DataEnd(outcome);
        };
        // The session continues after a refused message (docs/src/smtp.md).
        self.reset_transaction();
        self.reply(refusal);
        Event::DataEnd(outcome)
    }
}
