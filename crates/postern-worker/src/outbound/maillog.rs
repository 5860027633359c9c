//! One log line per recipient outcome in the shape of Postfix's maillog, so that operators'
//! greps, log parsers and habits carry over (issue 13, point 6):
//!
//! `01J…: from=<a@x.example>, to=<b@y.example>, relay=mx.y.example[198.51.100.2], delay=3,
//! dsn=2.0.0, status=sent (250 2.0.0 Ok), tls=TLSv1.3/TLS_AES_256_GCM_SHA384`
//!
//! With `--log-format json` the same facts are fields of the event (target `postern::maillog`).

use postern_events::Leg;
use postern_smtp::EnhancedStatus;

/// A recipient's outcome.
pub struct Outcome<'a> {
    pub queue_id: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    /// The next hop of the last attempt; `None` when none was reached.
    pub leg: Option<&'a Leg>,
    /// Seconds since the message arrived.
    pub delay_s: u64,
    pub dsn: Option<EnhancedStatus>,
    /// `sent`, `deferred`, `bounced` or `expired`.
    pub status: &'a str,
    /// The reply, or our own reason.
    pub reply: &'a str,
}

impl Outcome<'_> {
    fn relay(&self) -> String {
        self.leg
            .map_or_else(|| "none".to_string(), |l| format!("{}[{}]", l.host, l.ip))
    }

    fn dsn(&self) -> String {
        let status = self.dsn.unwrap_or(match self.status {
            "sent" => EnhancedStatus(2, 0, 0),
            "deferred" => EnhancedStatus(4, 0, 0),
            _ => EnhancedStatus(5, 0, 0),
        });
        status.to_string()
    }

    fn tls(&self) -> Option<String> {
        let tls = self.leg?.tls.as_ref()?;
        Some(format!("{}/{}", tls.version, tls.cipher))
    }

    /// The line, as Postfix would write it (plus `tls=` when the leg was encrypted).
    pub fn line(&self) -> String {
        let mut line = format!(
            "{}: from=<{}>, to=<{}>, relay={}, delay={}, dsn={}, status={} ({})",
            self.queue_id,
            self.from,
            self.to,
            self.relay(),
            self.delay_s,
            self.dsn(),
            self.status,
            self.reply
        );
        if let Some(tls) = self.tls() {
            line.push_str(&format!(", tls={tls}"));
        }
        // Addresses, host names and replies came from peers and DNS: whatever checks they
        // passed, a line end in them never starts a forged log line.
        postern_smtp::escaped_controls(&line)
    }

    pub fn log(&self) {
        let tls = self.leg.and_then(|l| l.tls.as_ref());
        tracing::info!(
            target: "postern::maillog",
            queue_id = self.queue_id,
            from = self.from,
            to = self.to,
            relay = %postern_smtp::escaped_controls(&self.relay()),
            delay = self.delay_s,
            dsn = %self.dsn(),
            status = self.status,
            tls_version = tls.map(|t| t.version.as_str()),
            tls_cipher = tls.map(|t| t.cipher.as_str()),
            "{}",
            self.line()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_events::{Certificate, Tls};

    #[test]
    fn lines_read_like_postfix() {
        let leg = Leg {
            host: "mx.y.example".into(),
            ip: "198.51.100.2".into(),
            tls: Some(Tls {
                version: "TLSv1.3".into(),
                cipher: "TLS_AES_256_GCM_SHA384".into(),
                key_exchange: "X25519".into(),
                certificate: Certificate::Verified,
            }),
            tls_fallback: false,
        };
        let sent = Outcome {
            queue_id: "Q1",
            from: "a@x.example",
            to: "b@y.example",
            leg: Some(&leg),
            delay_s: 3,
            dsn: Some(EnhancedStatus(2, 0, 0)),
            status: "sent",
            reply: "250 2.0.0 Ok: queued as 4F1",
        };
        assert_eq!(
            sent.line(),
            "Q1: from=<a@x.example>, to=<b@y.example>, relay=mx.y.example[198.51.100.2], delay=3, \
             dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4F1), tls=TLSv1.3/TLS_AES_256_GCM_SHA384"
        );
        let deferred = Outcome {
            leg: None,
            dsn: None,
            status: "deferred",
            reply: "4.4.1 connect to mx.y.example[198.51.100.2]:25: Connection refused",
            from: "",
            ..sent
        };
        assert_eq!(
            deferred.line(),
            "Q1: from=<>, to=<b@y.example>, relay=none, delay=3, dsn=4.0.0, status=deferred \
             (4.4.1 connect to mx.y.example[198.51.100.2]:25: Connection refused)"
        );
        // A line end from a peer never starts a line of its own.
        let forged = Outcome {
            reply: "550 no\r\nQ2: from=<ceo@victim.test>, status=sent",
            ..deferred
        };
        let line = forged.line();
        assert!(!line.contains(['\r', '\n']), "{line}");
        assert!(line.contains("550 no\\u{d}\\u{a}Q2"), "{line}");
    }
}
