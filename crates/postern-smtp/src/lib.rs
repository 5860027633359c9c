//! Sans-IO SMTP (docs/src/design.md style 1): bytes in, events and reply bytes out; no sockets, no
//! awaits.
//! The server session frames commands strictly on CRLF (bare CR, bare LF and NUL are errors,
//! never line ends), reads DATA to the real `<CRLF>.<CRLF>` only, stops at STARTTLS and reports
//! the bytes it discarded, and asks its shell for every decision it cannot make alone (MAIL FROM
//! and RCPT TO policy, spooling).
//!
//! We frame and parse ourselves rather than use smtp-proto because the contract needs what it
//! does not do: commands end only at CRLF (smtp-proto ends them at a bare LF), lines are capped
//! at our limits (it caps at 4096), and DATA must reject bare CR/LF/NUL (it passes them on).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod address;
mod client;
mod command;
mod data;
mod line;
mod reply;
mod server;
mod text;

pub use address::{Address, is_envelope_address, is_mailbox, parse_path};
pub use client::{Client, ClientEvent, Envelope, Extensions, MAX_REPLY_TEXT, Outcome, dot_stuff};
pub use command::{Command, MailParams, parse_command};
pub use data::{DataOutcome, DataReader};
pub use line::{Line, LineReader};
pub use reply::{EnhancedStatus, Reply};
pub use server::{Answer, Event, Limits, Server, ServerConfig};
pub use text::{escaped_ascii, escaped_controls, printable};
