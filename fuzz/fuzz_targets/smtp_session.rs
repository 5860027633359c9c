//! Arbitrary bytes into an SMTP server session, split at arbitrary points, with every decision
//! accepted: the codec must never panic, and the output must stay bounded by the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_smtp::{Answer, Event, Limits, Reply, Server, ServerConfig};

fuzz_target!(|data: &[u8]| {
    // The product's defaults (docs/src/smtp.md); the SMTP crate takes its limits from its caller.
    let limits = Limits {
        max_command_line: 512,
        max_line: 1000,
        max_message_size: 25 * 1024 * 1024,
        max_header_size: 1024 * 1024,
        max_recipients: 1000,
        max_hard_errors: 20,
        max_commands_before_mail: 100,
        max_received_headers: 50,
    };
    let config = ServerConfig { hostname: "mx.fuzz".into(), limits, offer_starttls: true };
    let mut server = Server::new(config);
    server.greeting();
    let (split, data) = data.split_first().map_or((1, data), |(s, d)| (usize::from(*s).max(1), d));
    let mut output = 0usize;
    for piece in data.chunks(split) {
        server.receive(piece);
        loop {
            match server.poll() {
                Event::NeedInput | Event::Close => break,
                Event::Mail { .. } | Event::Rcpt { .. } => server.answer(Answer::Accept),
                Event::DataEnd(postern_smtp::DataOutcome::Complete) => server.answer(Answer::Reply(Reply::queued("ID"))),
                Event::StartTls { .. } => server.tls_started(),
                Event::Data(_) | Event::DataEnd(_) => {}
            }
        }
        output += server.take_output().len();
    }
    // Every reply answers at least one input line; none is longer than a few hundred bytes.
    assert!(output <= 512 * (data.len() + 2), "output {output} for input {}", data.len());
});
