//! What both conversation suites share.

use postern_smtp::Limits;

/// Limits for the conversations: the product's defaults (docs/src/smtp.md), written out because
/// this crate takes its limits from the caller.
pub fn limits() -> Limits {
    Limits {
        max_command_line: 512,
        max_line: 1000,
        max_message_size: 25 * 1024 * 1024,
        max_header_size: 1024 * 1024,
        max_recipients: 1000,
        max_hard_errors: 20,
        max_commands_before_mail: 100,
        max_received_headers: 50,
    }
}
