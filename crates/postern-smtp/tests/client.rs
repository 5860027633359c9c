//! The sans-IO client against the sans-IO server (both real, no sockets), and against scripted
//! servers for what ours never does (refusals, injection, nonsense).

mod common;

use postern_smtp::{
    Answer, Client, ClientEvent, Envelope, Event, Reply, Server, ServerConfig, dot_stuff,
};

fn envelope(recipients: &[&str]) -> Envelope {
    Envelope {
        from: "a@sender.example".into(),
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
        size: 100,
        eight_bit: false,
        smtputf8: false,
    }
}

/// Runs a client against our server; `tls` decides STARTTLS. Returns the outcome and what the
/// server queued.
fn against_server(
    client: &mut Client,
    offer_starttls: bool,
    want_tls: bool,
    refuse: &[&str],
) -> (postern_smtp::Outcome, Vec<Vec<u8>>, bool) {
    let mut server = Server::new(ServerConfig {
        hostname: "mx.test".into(),
        limits: common::limits(),
        offer_starttls,
    });
    server.greeting();
    let (mut queued, mut message, mut saw_tls) = (Vec::new(), Vec::new(), false);
    for _ in 0..1000 {
        client.receive(&server.take_output());
        loop {
            match client.poll() {
                ClientEvent::NeedInput => break,
                ClientEvent::Greeted { extensions, tls } => {
                    saw_tls |= tls;
                    if want_tls && extensions.starttls && !tls {
                        client.start_tls();
                    } else {
                        client.proceed();
                    }
                }
                ClientEvent::StartTls { discarded } => {
                    assert_eq!(discarded, 0);
                    client.tls_started();
                }
                ClientEvent::StartTlsRefused(r) => panic!("refused: {r}"),
                ClientEvent::ResetRefused(r) => panic!("RSET refused: {r}"),
                ClientEvent::Done(outcome) => return (outcome, queued, saw_tls),
            }
        }
        server.receive(&client.take_output());
        loop {
            match server.poll() {
                Event::NeedInput | Event::Close => break,
                Event::Mail { .. } => server.answer(Answer::Accept),
                Event::Rcpt { to } if refuse.contains(&to.0.as_str()) => server.answer(
                    Answer::Reply(Reply::new(550, "5.1.1 <x>: Recipient address rejected")),
                ),
                Event::Rcpt { .. } => server.answer(Answer::Accept),
                Event::Data(b) => message.extend(b),
                Event::DataEnd(_) => {
                    queued.push(std::mem::take(&mut message));
                    server.answer(Answer::Reply(Reply::queued("Q1")));
                }
                Event::StartTls { .. } => server.tls_started(),
            }
        }
    }
    panic!("no outcome");
}

#[test]
fn delivers_to_our_own_server_with_pipelining_and_dot_stuffing() {
    let message = b"Subject: x\r\n\r\n.leading dot\r\n..two\r\nend\r\n".to_vec();
    let mut client = Client::new(
        "relay.test",
        envelope(&["b@x.example", "c@x.example"]),
        message.clone(),
    );
    let (outcome, queued, _) = against_server(&mut client, false, false, &[]);
    assert!(client.extensions().pipelining);
    assert_eq!(outcome.session, None);
    assert_eq!(outcome.recipients.len(), 2);
    assert!(
        outcome
            .recipients
            .iter()
            .all(|(_, r)| r.to_string() == "250 2.0.0 Ok: queued as Q1\r\n")
    );
    assert_eq!(queued, [message], "dot-stuffing must round-trip");
}

#[test]
fn starttls_then_ehlo_again_inside_tls() {
    let mut client = Client::new("relay.test", envelope(&["b@x.example"]), b"x\r\n".to_vec());
    let (outcome, queued, saw_tls) = against_server(&mut client, true, true, &[]);
    assert!(saw_tls);
    assert!(
        !client.extensions().starttls,
        "capabilities come from the EHLO inside TLS"
    );
    assert_eq!(queued.len(), 1);
    assert_eq!(outcome.recipients[0].1.code, 250);
}

#[test]
fn recipients_succeed_and_fail_independently() {
    let mut client = Client::new(
        "relay.test",
        envelope(&["good@x.example", "bad@x.example", "also@x.example"]),
        b"x\r\n".to_vec(),
    );
    let (outcome, queued, _) = against_server(&mut client, false, false, &["bad@x.example"]);
    let codes: Vec<u16> = outcome.recipients.iter().map(|(_, r)| r.code).collect();
    assert_eq!(codes, [250, 550, 250]);
    assert_eq!(queued.len(), 1);
}

#[test]
fn all_recipients_refused_sends_no_message() {
    let mut client = Client::new(
        "relay.test",
        envelope(&["bad@x.example"]),
        b"x\r\n".to_vec(),
    );
    let (outcome, queued, _) = against_server(&mut client, false, false, &["bad@x.example"]);
    assert_eq!(outcome.recipients[0].1.code, 550);
    assert!(queued.is_empty());
}

/// The decision of a plain transaction: go on once greeted; nothing else may happen.
fn proceed_when_greeted(c: &mut Client, e: ClientEvent) -> Option<postern_smtp::Outcome> {
    match e {
        ClientEvent::Greeted { .. } => c.proceed(),
        other => panic!("{other:?}"),
    }
    None
}

/// A scripted server: feeds `replies` one chunk per `NeedInput` and records the client's output.
fn scripted(
    client: &mut Client,
    replies: &[&str],
    mut decide: impl FnMut(&mut Client, ClientEvent) -> Option<postern_smtp::Outcome>,
) -> (postern_smtp::Outcome, String) {
    let mut sent = String::new();
    let mut replies = replies.iter();
    loop {
        match client.poll() {
            ClientEvent::NeedInput => {
                sent.push_str(&String::from_utf8(client.take_output()).unwrap());
                match replies.next() {
                    Some(r) => client.receive(r.as_bytes()),
                    None => panic!("the script ran out; the client sent {sent:?}"),
                }
            }
            ClientEvent::Done(o) => {
                sent.push_str(&String::from_utf8(client.take_output()).unwrap());
                return (o, sent);
            }
            event => {
                if let Some(o) = decide(client, event) {
                    return (o, sent);
                }
            }
        }
    }
}

#[test]
fn a_refused_starttls_is_reported() {
    let mut client = Client::new("relay.test", envelope(&["b@x.example"]), b"x\r\n".to_vec());
    let mut refused = None;
    let (outcome, sent) = scripted(
        &mut client,
        &[
            "220 mx ESMTP\r\n",
            "250-mx\r\n250 STARTTLS\r\n",
            "454 4.7.0 TLS not available due to local problem\r\n",
            "221 bye\r\n",
        ],
        |c, e| {
            match e {
                ClientEvent::Greeted { .. } => c.start_tls(),
                ClientEvent::StartTlsRefused(r) => {
                    refused = Some(r.clone());
                    c.quit(Reply::new(451, format!("4.7.5 TLS is required, but host mx[192.0.2.1] refused to start TLS: {r}")));
                }
                other => panic!("{other:?}"),
            }
            None
        },
    );
    assert_eq!(refused.unwrap().code, 454);
    assert!(
        outcome.recipients[0]
            .1
            .one_line()
            .starts_with("451 4.7.5 TLS is required")
    );
    assert_eq!(sent, "EHLO relay.test\r\nSTARTTLS\r\nQUIT\r\n");
}

#[test]
fn anything_after_the_starttls_reply_is_discarded() {
    let mut client = Client::new("relay.test", envelope(&["b@x.example"]), b"x\r\n".to_vec());
    let mut discarded = None;
    let (outcome, _) = scripted(
        &mut client,
        &[
            "220 mx ESMTP\r\n",
            "250-mx\r\n250-PIPELINING\r\n250 STARTTLS\r\n",
            // The injected replies would answer MAIL, RCPT and DATA if they were believed.
            "220 go ahead\r\n250 injected\r\n250 injected\r\n354 injected\r\n",
            "250-mx\r\n250 PIPELINING\r\n",
            "250 ok\r\n250 ok\r\n354 go\r\n",
            "250 2.0.0 queued\r\n",
            "221 bye\r\n",
        ],
        |c, e| {
            match e {
                ClientEvent::Greeted { tls: false, .. } => c.start_tls(),
                ClientEvent::Greeted { tls: true, .. } => c.proceed(),
                ClientEvent::StartTls { discarded: d } => {
                    discarded = Some(d);
                    c.tls_started();
                }
                other => panic!("{other:?}"),
            }
            None
        },
    );
    assert_eq!(
        discarded,
        Some("250 injected\r\n250 injected\r\n354 injected\r\n".len())
    );
    assert_eq!(outcome.recipients[0].1.one_line(), "250 2.0.0 queued");
}

#[test]
fn session_failures_apply_to_every_recipient() {
    for (script, code) in [
        (&["554 5.3.2 go away\r\n", "221 bye\r\n"][..], 554),
        (
            &[
                "220 mx\r\n",
                "250 mx\r\n",
                "451 4.3.0 try later\r\n",
                "221 bye\r\n",
            ][..],
            451,
        ),
    ] {
        let mut client = Client::new(
            "relay.test",
            envelope(&["b@x.example", "c@x.example"]),
            b"x\r\n".to_vec(),
        );
        let (outcome, _) = scripted(&mut client, script, |c, e| {
            match e {
                ClientEvent::Greeted { .. } => c.proceed(),
                other => panic!("{other:?}"),
            }
            None
        });
        assert!(
            outcome.recipients.iter().all(|(_, r)| r.code == code),
            "{outcome:?}"
        );
        assert_eq!(outcome.session.unwrap().code, code);
    }
}

#[test]
fn a_server_speaking_nonsense_ends_the_attempt() {
    let mut client = Client::new("relay.test", envelope(&["b@x.example"]), b"x\r\n".to_vec());
    let (outcome, _) = scripted(&mut client, &["220 mx\r\n", "hello there\r\n"], |_, e| {
        panic!("{e:?}")
    });
    assert_eq!(outcome.recipients[0].1.code, 451);
}

#[test]
fn without_esmtp_the_client_falls_back_to_helo() {
    let mut client = Client::new("relay.test", envelope(&["b@x.example"]), b"x\r\n".to_vec());
    let (outcome, sent) = scripted(
        &mut client,
        &[
            "220 mx\r\n",
            "502 no\r\n",
            "250 mx\r\n",
            "250 ok\r\n",
            "250 ok\r\n",
            "354 go\r\n",
            "250 queued\r\n",
            "221 bye\r\n",
        ],
        |c, e| {
            match e {
                ClientEvent::Greeted { extensions, .. } => {
                    assert!(!extensions.pipelining);
                    c.proceed()
                }
                other => panic!("{other:?}"),
            }
            None
        },
    );
    assert_eq!(outcome.recipients[0].1.code, 250);
    assert!(sent.starts_with("EHLO relay.test\r\nHELO relay.test\r\nMAIL FROM:<a@sender.example>\r\nRCPT TO:<b@x.example>\r\nDATA\r\n"), "{sent}");
}

#[test]
fn dot_stuffing_never_rewraps() {
    assert_eq!(dot_stuff(b".a\r\nb.\r\n..c\r\n"), b"..a\r\nb.\r\n...c\r\n");
    assert_eq!(dot_stuff(b"no final newline"), b"no final newline\r\n");
    let long = vec![b'x'; 5000];
    assert_eq!(&dot_stuff(&long)[..5000], &long[..]);
}

#[test]
fn a_clean_session_carries_the_next_message_after_rset() {
    let mut client = Client::new(
        "relay.test",
        envelope(&["b@x.example"]),
        b"one\r\n".to_vec(),
    );
    let (first, sent) = scripted(
        &mut client,
        &[
            "220 mx\r\n",
            "250 mx\r\n",
            "250 ok\r\n250 ok\r\n354 go\r\n",
            "250 2.0.0 one\r\n",
        ],
        proceed_when_greeted,
    );
    assert_eq!(first.recipients[0].1.one_line(), "250 2.0.0 one");
    assert!(client.reusable(), "no QUIT after a clean transaction");
    assert!(!sent.contains("QUIT"), "{sent}");
    client.reset(envelope(&["c@x.example"]), b"two\r\n".to_vec());
    let (second, sent) = scripted(
        &mut client,
        &[
            "250 2.0.0 reset\r\n",
            "250 ok\r\n",
            "250 ok\r\n",
            "354 go\r\n",
            "250 2.0.0 two\r\n",
        ],
        |_, e| panic!("{e:?}"),
    );
    assert_eq!(
        second.recipients,
        [("c@x.example".to_string(), Reply::new(250, "2.0.0 two"))]
    );
    assert_eq!(
        sent,
        "RSET\r\nMAIL FROM:<a@sender.example>\r\nRCPT TO:<c@x.example>\r\nDATA\r\ntwo\r\n.\r\n"
    );
    client.close();
    assert_eq!(client.take_output(), b"QUIT\r\n");
    assert!(!client.reusable());
}

#[test]
fn a_refused_rset_is_not_the_message_s_outcome() {
    let mut client = Client::new("relay.test", envelope(&["b@x.example"]), b"x\r\n".to_vec());
    scripted(
        &mut client,
        &[
            "220 mx\r\n",
            "250 mx\r\n",
            "250 ok\r\n",
            "250 ok\r\n",
            "354 go\r\n",
            "250 ok\r\n",
        ],
        proceed_when_greeted,
    );
    client.reset(envelope(&["c@x.example"]), b"y\r\n".to_vec());
    let mut refused = None;
    scripted(&mut client, &["421 4.4.2 idle too long\r\n"], |_, e| {
        match e {
            ClientEvent::ResetRefused(r) => refused = Some(r),
            other => panic!("{other:?}"),
        }
        Some(postern_smtp::Outcome {
            recipients: vec![],
            session: None,
            local: true,
        })
    });
    assert_eq!(refused.unwrap().code, 421);
    assert!(!client.reusable());
}

#[test]
fn control_characters_in_replies_never_come_out_raw() {
    let mut client = Client::new("relay.test", envelope(&["b@x.example"]), b"x\r\n".to_vec());
    let (outcome, _) = scripted(
        &mut client,
        &[
            "220 mx\r\n",
            "250 mx\r\n",
            "550 5.1.1 bad\rInjected: yes\x1b[2J\x00\u{85}end\r\n",
        ],
        proceed_when_greeted,
    );
    let text = outcome.recipients[0].1.one_line();
    assert_eq!(text, "550 5.1.1 bad?Injected: yes?[2J??end");
}

#[test]
fn with_pipelining_rset_leads_the_next_transaction_s_batch() {
    let mut client = Client::new(
        "relay.test",
        envelope(&["b@x.example"]),
        b"one\r\n".to_vec(),
    );
    scripted(
        &mut client,
        &[
            "220 mx\r\n",
            "250-mx\r\n250 PIPELINING\r\n",
            "250 ok\r\n250 ok\r\n354 go\r\n",
            "250 2.0.0 one\r\n",
        ],
        proceed_when_greeted,
    );
    client.reset(envelope(&["c@x.example"]), b"two\r\n".to_vec());
    let (second, sent) = scripted(
        &mut client,
        &[
            "250 2.0.0 reset\r\n250 ok\r\n250 ok\r\n354 go\r\n",
            "250 2.0.0 two\r\n",
        ],
        |_, e| panic!("{e:?}"),
    );
    assert_eq!(second.recipients[0].1.one_line(), "250 2.0.0 two");
    assert_eq!(
        sent,
        "RSET\r\nMAIL FROM:<a@sender.example>\r\nRCPT TO:<c@x.example>\r\nDATA\r\ntwo\r\n.\r\n"
    );
}

/// An address holding CR, LF or NUL (from a hostile DNS record, say) must never reach the wire:
/// the client refuses the transaction as its own error (before EHLO on a new session, before
/// RSET on a reused one) and writes only QUIT.
#[test]
fn an_argument_with_a_line_end_is_refused_not_written() {
    let hostile = "x@evil.example>\r\nMAIL FROM:<ceo@victim.test>\r\nRCPT TO:<staff@victim.test";
    let mut client = Client::new("relay.test", envelope(&[hostile]), b"x\r\n".to_vec());
    let (outcome, sent) = scripted(&mut client, &["220 mx\r\n"], proceed_when_greeted);
    assert_eq!(sent, "QUIT\r\n");
    assert!(outcome.local);
    assert_eq!(outcome.recipients[0].1.code, 501);
    assert_eq!(outcome.recipients[0].0, hostile);
    let mut sender = envelope(&["b@x.example"]);
    sender.from = "a@b\0".into();
    let mut client = Client::new("relay.test", sender, b"x\r\n".to_vec());
    let (outcome, sent) = scripted(&mut client, &["220 mx\r\n"], proceed_when_greeted);
    assert_eq!(sent, "QUIT\r\n");
    assert!(outcome.local);

    // On a reused session, the refusal comes before RSET.
    let mut client = Client::new(
        "relay.test",
        envelope(&["b@x.example"]),
        b"one\r\n".to_vec(),
    );
    scripted(
        &mut client,
        &[
            "220 mx\r\n",
            "250 mx\r\n",
            "250 ok\r\n250 ok\r\n354 go\r\n",
            "250 2.0.0 one\r\n",
        ],
        proceed_when_greeted,
    );
    assert!(client.reusable());
    client.reset(envelope(&[hostile]), b"two\r\n".to_vec());
    let (outcome, sent) = scripted(&mut client, &[], |_, e| panic!("{e:?}"));
    assert_eq!(sent, "QUIT\r\n");
    assert!(outcome.local && outcome.recipients[0].1.code == 501);

    // A HELO name with a line end is refused before EHLO.
    let mut client = Client::new(
        "relay.test\r\nRSET",
        envelope(&["b@x.example"]),
        b"x\r\n".to_vec(),
    );
    let (outcome, sent) = scripted(&mut client, &["220 mx\r\n"], |_, e| panic!("{e:?}"));
    assert_eq!(sent, "QUIT\r\n");
    assert!(outcome.local);
}

/// A next hop's reply of 200 lines of 2,000 invalid bytes (each a 3-byte U+FFFD when made
/// printable) is kept to 2,048 bytes of text, like Postfix; the session goes on.
#[test]
fn a_huge_reply_is_kept_to_its_cap() {
    let mut client = Client::new("relay.test", envelope(&["b@x.example"]), b"x\r\n".to_vec());
    let mut huge = Vec::new();
    for i in 0..200 {
        huge.extend_from_slice(if i == 199 { b"450 " } else { b"450-" });
        huge.extend(std::iter::repeat_n(0xFFu8, 2000));
        huge.extend_from_slice(b"\r\n");
    }
    client.receive(b"220 mx\r\n");
    assert!(matches!(client.poll(), ClientEvent::NeedInput));
    client.receive(b"250 mx\r\n");
    match client.poll() {
        ClientEvent::Greeted { .. } => client.proceed(),
        other => panic!("{other:?}"),
    }
    client.receive(&huge);
    let ClientEvent::Done(outcome) = client.poll() else {
        panic!("the MAIL reply ends the attempt")
    };
    let reply = &outcome.recipients[0].1;
    assert_eq!(reply.code, 450);
    let text: usize = reply.lines.iter().map(String::len).sum();
    assert!(text <= postern_smtp::MAX_REPLY_TEXT, "{text}");
    assert!(text > 2000, "{text}");
    assert!(reply.lines[0].starts_with('\u{fffd}'));
}
