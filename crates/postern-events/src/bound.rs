//! Every event is bounded where it is made (docs/src/design.md: outside data is hostile where it
//! enters): each string field has a cap, and the whole event a budget, so that no event can
//! grow past what the outbox, the wire and the stores take. A next hop's reply is already cut
//! by the SMTP client (Postfix keeps 2,048 bytes of a reply); these caps are the last line for
//! everything else a peer, a DNS record or a report can put in an event. A cut field ends in
//! `...`, and the record says it was cut (`Record::truncated`).

use crate::*;

/// Host names, addresses, ids, modes, result types: RFC 5321's longest path is 256 octets,
/// its longest domain 255.
pub const NAME: usize = 512;
/// Replies and reasons (ours wrap a next hop's reply of at most 2,048 bytes), subjects.
pub const TEXT: usize = 4096;
/// A received TLS-RPT report's JSON (the stated cap of received reports: larger ones are
/// refused before they become an event).
pub const REPORT: usize = 512 * 1024;
/// All text of one event together, each list item counted with 8 bytes of framing: well
/// under the outbox's 1 MiB record limit, whatever the event holds.
pub const EVENT: usize = 640 * 1024;

const ITEM: usize = 8;
const MORE: &str = "...";

/// What is left of one event's budget.
struct Budget {
    left: usize,
    truncated: bool,
}

impl Budget {
    fn text(&mut self, s: &mut String, cap: usize) {
        let cap = cap.min(self.left);
        if s.len() > cap {
            let mut end = cap.saturating_sub(MORE.len());
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
            s.push_str(if cap >= MORE.len() { MORE } else { "" });
            self.truncated = true;
        }
        self.left -= s.len().min(self.left);
    }

    fn opt(&mut self, s: &mut Option<String>, cap: usize) {
        if let Some(s) = s {
            self.text(s, cap);
        }
    }

    /// Items in order until the budget runs out; the rest are dropped.
    fn list(&mut self, items: &mut Vec<String>, cap: usize) {
        for (i, item) in items.iter_mut().enumerate() {
            if self.left < ITEM + item.len().min(cap) {
                items.truncate(i);
                self.truncated = true;
                return;
            }
            self.left -= ITEM;
            self.text(item, cap);
        }
    }

    /// MX patterns are at most 253 bytes each (`MxPattern::parse`): only the list is cut.
    fn patterns(&mut self, items: &mut Vec<MxPattern>) {
        for (i, item) in items.iter().enumerate() {
            let len = ITEM + item.as_str().len();
            if self.left < len {
                items.truncate(i);
                self.truncated = true;
                return;
            }
            self.left -= len;
        }
    }

    /// A result type is registered, or a token of at most `MAX_UNREGISTERED` bytes.
    fn result(&mut self, r: &mut Option<ResultType>) {
        if let Some(r) = r {
            self.left -= r.as_str().len().min(self.left);
        }
    }

    fn source(&mut self, s: &mut Source) {
        self.text(&mut s.ip, NAME);
        self.text(&mut s.helo, NAME);
        self.tls(&mut s.tls);
    }

    fn tls(&mut self, t: &mut Option<Tls>) {
        if let Some(t) = t {
            self.text(&mut t.version, NAME);
            self.text(&mut t.cipher, NAME);
            self.text(&mut t.key_exchange, NAME);
        }
    }
}

impl Event {
    /// Cuts every field to its cap and the event to its budget; whether anything was cut.
    pub fn bound(&mut self) -> bool {
        let mut b = Budget {
            left: EVENT,
            truncated: false,
        };
        match self {
            Event::Connection(c) => {
                b.text(&mut c.session, NAME);
                b.text(&mut c.ip, NAME);
                b.opt(&mut c.helo, NAME);
                b.tls(&mut c.tls);
                b.opt(&mut c.tls_failure, TEXT);
                b.opt(&mut c.refused, TEXT);
            }
            Event::Received(r) => {
                b.text(&mut r.queue_id, NAME);
                b.text(&mut r.session, NAME);
                b.source(&mut r.source);
                b.text(&mut r.sender, NAME);
                b.opt(&mut r.message_id, NAME);
                b.opt(&mut r.subject, TEXT);
                b.list(&mut r.recipients, NAME);
            }
            Event::Rejected(r) => {
                b.text(&mut r.queue_id, NAME);
                b.text(&mut r.session, NAME);
                b.source(&mut r.source);
                b.text(&mut r.sender, NAME);
                b.opt(&mut r.recipient, NAME);
                b.text(&mut r.reply, TEXT);
            }
            Event::Attempt(a) => {
                b.text(&mut a.queue_id, NAME);
                b.text(&mut a.recipient, NAME);
                if let Some(leg) = &mut a.leg {
                    b.text(&mut leg.host, NAME);
                    b.text(&mut leg.ip, NAME);
                    b.tls(&mut leg.tls);
                }
                match &mut a.policy {
                    PolicySource::MtaSts(s) => b.text(&mut s.id, NAME),
                    PolicySource::Rule { id } => b.text(id, NAME),
                    PolicySource::Default => {}
                }
                b.text(&mut a.reply, TEXT);
            }
            Event::Deferred(d) => {
                b.text(&mut d.queue_id, NAME);
                b.text(&mut d.recipient, NAME);
                b.text(&mut d.reason, TEXT);
            }
            Event::Delivered(d) => {
                b.text(&mut d.queue_id, NAME);
                b.text(&mut d.recipient, NAME);
                b.text(&mut d.reply, TEXT);
            }
            Event::Bounced(x) => {
                b.text(&mut x.queue_id, NAME);
                b.text(&mut x.recipient, NAME);
                b.opt(&mut x.dsn, NAME);
                b.text(&mut x.reason, TEXT);
            }
            Event::Deleted(d) => b.text(&mut d.queue_id, NAME),
            Event::StartTlsLeftovers(l) => {
                b.text(&mut l.session, NAME);
                b.text(&mut l.ip, NAME);
            }
            Event::OutboxGap(_) => {}
            Event::StsPolicy(p) => {
                b.text(&mut p.domain, NAME);
                b.text(&mut p.id, NAME);
                b.patterns(&mut p.mx);
            }
            Event::TlsSession(t) => {
                b.text(&mut t.domain, NAME);
                b.result(&mut t.result);
                b.opt(&mut t.sending_ip, NAME);
                b.opt(&mut t.receiving_mx, NAME);
                b.opt(&mut t.receiving_ip, NAME);
                if let Some(p) = &mut t.sts {
                    b.text(&mut p.id, NAME);
                    b.patterns(&mut p.mx);
                    b.list(&mut p.lines, NAME);
                }
            }
            Event::TlsReportReceived(r) => {
                b.text(&mut r.queue_id, NAME);
                b.text(&mut r.sender, NAME);
                b.text(&mut r.report, REPORT);
            }
        }
        b.truncated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(recipients: usize, each: usize) -> Event {
        Event::Received(Received {
            queue_id: "Q".into(),
            session: "S".into(),
            source: Source {
                ip: "192.0.2.1".into(),
                helo: "h".repeat(10_000),
                tls: None,
            },
            sender: "a@b".into(),
            recipients: (0..recipients)
                .map(|i| format!("{i}{}", "r".repeat(each)))
                .collect(),
            size: 1,
            subject: Some("é".repeat(3_000)),
            message_id: None,
        })
    }

    #[test]
    fn fields_are_cut_at_a_char_boundary_and_marked() {
        let mut e = received(2, 10);
        assert!(e.bound());
        let Event::Received(r) = &e else { panic!() };
        assert_eq!(r.source.helo.len(), NAME);
        assert!(r.source.helo.ends_with(MORE));
        let subject = r.subject.as_deref().unwrap();
        assert!(
            subject.len() <= TEXT && subject.ends_with(MORE),
            "{}",
            subject.len()
        );
        assert_eq!(r.recipients.len(), 2);

        let mut small = received(3, 5);
        if let Event::Received(r) = &mut small {
            r.source.helo = "mx".into();
            r.subject = None;
        }
        let before = small.clone();
        assert!(!small.bound(), "nothing to cut");
        assert_eq!(small, before);
    }

    #[test]
    fn a_whole_event_stays_within_its_budget() {
        // 5,000 recipients of 500 bytes: 2.5 MB of addresses.
        let mut e = received(5_000, 500);
        assert!(e.bound());
        let Event::Received(r) = &e else { panic!() };
        let text: usize = r.recipients.iter().map(|x| x.len() + ITEM).sum();
        assert!(text <= EVENT, "{text}");
        assert!(r.recipients.len() > 1_000 && r.recipients.len() < 5_000);
        assert!(
            r.recipients[0].starts_with('0'),
            "the first recipients are kept"
        );

        let mut report = Event::TlsReportReceived(TlsReportReceived {
            queue_id: "Q".into(),
            sender: "s@x".into(),
            report: "\u{fffd}".repeat(400_000),
        });
        assert!(report.bound());
        let Event::TlsReportReceived(r) = &report else {
            panic!()
        };
        assert!(r.report.len() <= REPORT);
    }
}
