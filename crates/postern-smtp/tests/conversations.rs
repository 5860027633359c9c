//! Conversations with the sans-IO server, without sockets: bytes in, replies out.

mod common;

use postern_smtp::{Answer, DataOutcome, Event, Limits, Reply, Server, ServerConfig};
use proptest::prelude::*;

/// What the shell saw, besides the replies.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    mails: Vec<String>,
    rcpts: Vec<String>,
    messages: Vec<Vec<u8>>,
    refused: Vec<DataOutcome>,
    starttls: Vec<usize>,
    closed: bool,
}

/// A shell: feeds `input` in the given pieces, answers events with `decide` (MAIL and RCPT)
/// and queues every complete message as Q<n>.
struct Shell<F: FnMut(&Event) -> Answer> {
    server: Server,
    decide: F,
    seen: Seen,
    message: Vec<u8>,
    out: Vec<u8>,
}

fn config(starttls: bool) -> ServerConfig {
    ServerConfig {
        hostname: "mx.test".into(),
        limits: common::limits(),
        offer_starttls: starttls,
    }
}

impl<F: FnMut(&Event) -> Answer> Shell<F> {
    fn new(config: ServerConfig, decide: F) -> Self {
        let mut server = Server::new(config);
        server.greeting();
        Shell {
            server,
            decide,
            seen: Seen::default(),
            message: Vec::new(),
            out: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.server.receive(bytes);
        self.run();
    }

    fn run(&mut self) {
        loop {
            let event = self.server.poll();
            match &event {
                Event::NeedInput => break,
                Event::Mail { from, .. } => {
                    self.seen.mails.push(from.0.clone());
                    let a = (self.decide)(&event);
                    self.server.answer(a);
                }
                Event::Rcpt { to } => {
                    self.seen.rcpts.push(to.0.clone());
                    let a = (self.decide)(&event);
                    self.server.answer(a);
                }
                Event::Data(bytes) => self.message.extend_from_slice(bytes),
                Event::DataEnd(DataOutcome::Complete) => {
                    self.seen.messages.push(std::mem::take(&mut self.message));
                    let id = format!("Q{}", self.seen.messages.len());
                    self.server.answer(Answer::Reply(Reply::queued(&id)));
                }
                Event::DataEnd(outcome) => {
                    self.message.clear();
                    self.seen.refused.push(*outcome);
                }
                Event::StartTls { discarded } => {
                    self.seen.starttls.push(*discarded);
                    self.out.extend(self.server.take_output());
                    // The handshake would happen here.
                    self.server.tls_started();
                }
                Event::Close => {
                    self.seen.closed = true;
                    break;
                }
            }
        }
        self.out.extend(self.server.take_output());
    }

    fn replies(&self) -> Vec<String> {
        String::from_utf8(self.out.clone())
            .unwrap()
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }
}

fn accept_all(_: &Event) -> Answer {
    Answer::Accept
}

#[test]
fn a_whole_transaction() {
    let mut s = Shell::new(config(true), accept_all);
    s.send(b"EHLO client.example\r\n");
    s.send(b"MAIL FROM:<a@sender.example> SIZE=100\r\n");
    s.send(b"RCPT TO:<b@rcpt.example>\r\n");
    s.send(b"DATA\r\n");
    s.send(b"Subject: hi\r\n\r\n..leading dot\r\n.\r\n");
    s.send(b"QUIT\r\n");
    assert_eq!(
        s.replies(),
        [
            "220 mx.test ESMTP Postern",
            "250-mx.test",
            "250-PIPELINING",
            "250-SIZE 26214400",
            "250-STARTTLS",
            "250-ENHANCEDSTATUSCODES",
            "250-8BITMIME",
            "250 SMTPUTF8",
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "354 End data with <CR><LF>.<CR><LF>",
            "250 2.0.0 Ok: queued as Q1",
            "221 2.0.0 Bye",
        ]
    );
    assert_eq!(
        s.seen.messages,
        [b"Subject: hi\r\n\r\n.leading dot\r\n".to_vec()]
    );
    assert!(s.seen.closed);
}

#[test]
fn a_pipelined_batch_is_answered_in_order() {
    let mut s = Shell::new(config(true), |e| match e {
        Event::Rcpt { to } if to.0.starts_with("nobody") => {
            Answer::Reply(Reply::new(554, "5.7.1 <nobody@x>: Relay access denied"))
        }
        _ => Answer::Accept,
    });
    s.send(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nRCPT TO:<nobody@x>\r\nRCPT TO:<z@y>\r\nDATA\r\nbody\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n");
    let replies = s.replies();
    assert_eq!(
        replies[8..],
        [
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "554 5.7.1 <nobody@x>: Relay access denied",
            "250 2.1.5 Ok",
            "354 End data with <CR><LF>.<CR><LF>",
            "250 2.0.0 Ok: queued as Q1",
            "250 2.0.0 Ok",
            "250 2.0.0 Ok",
            "221 2.0.0 Bye",
        ]
    );
    assert_eq!(
        s.server.recipients().len(),
        0,
        "the transaction ended with the message"
    );
}

#[test]
fn sequence_errors() {
    let mut s = Shell::new(config(false), accept_all);
    s.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nHELO c\r\nDATA\r\nMAIL FROM:<a@b>\r\nDATA\r\nMAIL FROM:<a@b>\r\n");
    assert_eq!(
        s.replies()[1..],
        [
            "503 5.5.1 Error: send HELO/EHLO first",
            "503 5.5.1 Error: need MAIL command",
            "503 5.5.1 Error: need MAIL command",
            "250 mx.test",
            "503 5.5.1 Error: need MAIL command",
            "250 2.1.0 Ok",
            "503 5.5.1 Error: need RCPT command",
            "503 5.5.1 Error: nested MAIL command",
        ]
    );
    assert!(s.seen.rcpts.is_empty());
}

#[test]
fn starttls_discards_pipelined_plaintext_and_resets_the_session() {
    let mut s = Shell::new(config(true), accept_all);
    s.send(b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\n");
    assert_eq!(
        s.seen.starttls,
        [b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\n".len()]
    );
    assert!(
        s.seen.mails.is_empty(),
        "a command sent before the handshake ran inside TLS"
    );
    assert!(
        s.replies()
            .contains(&"220 2.0.0 Ready to start TLS".to_string())
    );
    // Inside TLS: HELO is forgotten, and STARTTLS is neither offered nor accepted again.
    let before = s.replies().len();
    s.send(b"MAIL FROM:<a@b>\r\nEHLO c\r\nSTARTTLS\r\n");
    let after = &s.replies()[before..];
    assert_eq!(after[0], "503 5.5.1 Error: send HELO/EHLO first");
    assert!(!after.iter().any(|l| l.contains("STARTTLS")), "{after:?}");
    assert_eq!(after.last().unwrap(), "554 5.5.1 Error: TLS already active");
    assert!(s.server.is_tls());
}

#[test]
fn starttls_when_not_offered() {
    let mut s = Shell::new(config(false), accept_all);
    s.send(b"EHLO c\r\nSTARTTLS\r\n");
    let replies = s.replies();
    assert!(!replies.iter().any(|l| l.contains("250-STARTTLS")));
    assert_eq!(
        replies.last().unwrap(),
        "502 5.5.1 Error: command not implemented"
    );
    assert!(s.seen.starttls.is_empty());
}

#[test]
fn bare_line_ends_in_commands() {
    for bad in [&b"NOOP\nNOOP\r\n"[..], b"NO\rOP\r\n", b"NOOP\x00\r\n"] {
        let mut s = Shell::new(config(false), accept_all);
        s.send(bad);
        assert_eq!(
            s.replies()[1],
            "500 5.5.2 Error: bare <CR> or <LF> received",
            "{bad:?}"
        );
    }
}

#[test]
fn nothing_can_be_smuggled_through_data() {
    for end in [
        &b"\n.\n"[..],
        b"\r.\r",
        b"\r.\n",
        b"\n.\r\n",
        b"\r\n.\n",
        b"\r\n\x00.\r\n",
    ] {
        let mut s = Shell::new(config(false), accept_all);
        let mut input =
            b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: x\r\n\r\nhello"
                .to_vec();
        input.extend_from_slice(end);
        input.extend_from_slice(
            b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nsmuggled\r\n.\r\nNOOP\r\n",
        );
        s.send(&input);
        assert_eq!(s.seen.mails, ["a@b"], "{end:?}: a smuggled MAIL ran");
        assert!(s.seen.messages.is_empty(), "{end:?}");
        assert_eq!(s.seen.refused, [DataOutcome::Bare], "{end:?}");
        let replies = s.replies();
        assert_eq!(
            replies[replies.len() - 2],
            "550 5.6.0 Error: bare <CR>, <LF> or <NUL> received",
            "{end:?}"
        );
        // The session continues.
        assert_eq!(replies[replies.len() - 1], "250 2.0.0 Ok", "{end:?}");
    }
}

#[test]
fn limits_and_their_replies() {
    let limits = Limits {
        max_recipients: 2,
        max_message_size: 1000,
        max_hard_errors: 3,
        ..common::limits()
    };
    let mut s = Shell::new(
        ServerConfig {
            limits,
            ..config(false)
        },
        accept_all,
    );
    s.send(b"HELO c\r\nMAIL FROM:<a@b> SIZE=1001\r\nMAIL FROM:<a@b> SIZE=1000\r\nRCPT TO:<1@x>\r\nRCPT TO:<2@x>\r\nRCPT TO:<3@x>\r\n");
    assert_eq!(
        s.replies()[2..],
        [
            "552 5.3.4 Message size exceeds fixed limit",
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "250 2.1.5 Ok",
            "452 4.5.3 Error: too many recipients"
        ]
    );
    s.send(b"DATA\r\n");
    s.send(
        &[
            b"x".repeat(900),
            b"\r\n".to_vec(),
            b"x".repeat(200),
            b"\r\n.\r\n".to_vec(),
        ]
        .concat(),
    );
    assert_eq!(
        s.replies().last().unwrap(),
        "552 5.3.4 Error: message file too big"
    );
    s.send(b"FROB\r\nFROB\r\n");
    assert_eq!(
        s.replies().last().unwrap(),
        "421 4.7.0 mx.test Error: too many errors"
    );
    assert!(s.seen.closed);
}

#[test]
fn commands_before_mail_are_limited() {
    let limits = Limits {
        max_commands_before_mail: 5,
        ..common::limits()
    };
    let mut s = Shell::new(
        ServerConfig {
            limits,
            ..config(false)
        },
        accept_all,
    );
    s.send(&b"NOOP\r\n".repeat(6));
    assert_eq!(
        s.replies().last().unwrap(),
        "421 4.7.0 mx.test Error: too many errors"
    );
    assert!(s.seen.closed);
}

#[test]
fn policy_answers_at_mail_from() {
    let mut s = Shell::new(config(true), |e| match e {
        Event::Mail { from, .. } if from.0.ends_with("@bank.example") => Answer::Reply(Reply::new(
            530,
            format!(
                "5.7.0 {}: Sender address rejected: Must use TLS",
                "<a@bank.example>"
            ),
        )),
        Event::Mail { .. } => Answer::Close(Reply::new(
            421,
            "4.7.0 <x@legacy.example>: Sender address rejected: Must not use TLS",
        )),
        _ => Answer::Accept,
    });
    s.send(b"EHLO c\r\nMAIL FROM:<a@bank.example>\r\nRCPT TO:<b@c>\r\nMAIL FROM:<x@legacy.example>\r\nNOOP\r\n");
    let replies = s.replies();
    let tail = &replies[replies.len() - 3..];
    assert_eq!(
        tail,
        [
            "530 5.7.0 <a@bank.example>: Sender address rejected: Must use TLS",
            "503 5.5.1 Error: need MAIL command",
            "421 4.7.0 <x@legacy.example>: Sender address rejected: Must not use TLS",
        ]
    );
    assert!(s.seen.closed, "a 421 closes the session");
}

#[test]
fn dsn_options_and_other_commands() {
    let mut s = Shell::new(config(false), accept_all);
    s.send(b"EHLO c\r\nMAIL FROM:<a@b> RET=FULL\r\nMAIL FROM:<> BODY=8BITMIME SMTPUTF8\r\nRCPT TO:<c@d> NOTIFY=SUCCESS\r\nVRFY someone\r\nHELP\r\nFROB\r\n");
    let replies = s.replies();
    let tail = &replies[replies.len() - 6..];
    assert_eq!(tail[0], "555 5.5.4 Unsupported option");
    assert_eq!(tail[1], "250 2.1.0 Ok");
    assert_eq!(tail[2], "555 5.5.4 Unsupported option");
    assert_eq!(tail[3], "252 2.0.0 someone");
    assert!(tail[4].starts_with("214 2.0.0"));
    assert_eq!(tail[5], "502 5.5.2 Error: command not recognized");
    let params = s.server.mail_params().unwrap();
    assert!(params.eight_bit && params.smtputf8);
}

#[test]
fn large_messages_arrive_in_chunks() {
    let mut s = Shell::new(config(false), accept_all);
    s.send(b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
    let body: Vec<u8> = (0..5000)
        .flat_map(|i| format!("line {i:0>90}\r\n").into_bytes())
        .collect();
    s.send(&body);
    s.send(b".\r\n");
    assert_eq!(s.seen.messages, [body]);
}

fn conversation() -> Vec<u8> {
    b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\r\n..y\r\n.\r\nFROB\r\nNO\nOP\r\nSTARTTLS\r\nNOOP\r\nMAIL FROM:<a@b>\r\nQUIT\r\n".to_vec()
}

proptest! {
    /// Framing does not depend on how the network splits the bytes.
    #[test]
    fn any_split_gives_the_same_conversation(cuts in prop::collection::vec(0usize..200, 0..20)) {
        let input = conversation();
        let mut whole = Shell::new(config(true), accept_all);
        whole.send(&input);
        let mut pieces = Shell::new(config(true), accept_all);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % input.len()).collect();
        cuts.sort();
        let mut start = 0;
        for c in cuts.into_iter().chain([input.len()]) {
            pieces.send(&input[start..c.max(start)]);
            start = c.max(start);
        }
        // STARTTLS discards what arrived with it, which depends on the split; compare only up
        // to the handshake.
        let upto = |r: Vec<String>| r[..r.iter().position(|l| l.starts_with("220 2.0.0")).unwrap() + 1].to_vec();
        prop_assert_eq!(upto(whole.replies()), upto(pieces.replies()));
        prop_assert_eq!(&whole.seen.messages, &pieces.seen.messages);
    }

    /// Arbitrary bytes never panic the session, and output stays bounded by the input.
    #[test]
    fn hostile_bytes_do_not_panic(input in prop::collection::vec(any::<u8>(), 0..4000)) {
        let mut s = Shell::new(config(true), accept_all);
        s.send(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n");
        s.send(&input);
        s.send(b"\r\n.\r\nQUIT\r\n");
    }
}
