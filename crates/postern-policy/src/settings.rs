//! Settings the control plane distributes with the policy
//! (docs/src/policy.md#queue-retries-and-bounces, smtp.md), with their
//! defaults. A PUT replaces the whole document; fields left out take their defaults.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::error::FieldError;
use crate::relay::NextHop;

/// The settings `/v1/settings` holds, distributed to the workers with the policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Limits of the inbound SMTP server.
    pub smtp: SmtpLimits,
    /// Retries and lifetime of deferred mail.
    pub queue: QueueSettings,
    /// How the worker relays mail to next hops.
    pub delivery: DeliverySettings,
    /// Where `RCPT TO:<postmaster>` goes; null means `postmaster@<the worker's hostname>`.
    pub postmaster: Option<String>,
    /// Retention and size limits of message tracking.
    pub tracking: TrackingSettings,
    /// TLS-RPT reports: those sent about deliveries, and those received about our domains.
    pub reports: ReportSettings,
    /// The MTA-STS policy served for the relay domains.
    pub published_mta_sts: PublishedSts,
}

/// The MTA-STS policy (RFC 8461 3.2) the control plane serves for the relay domains at
/// `GET /.well-known/mta-sts.txt` with `Host: mta-sts.<domain>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct PublishedSts {
    /// `enforce`, `testing` or `none`; null: no policy is served (404).
    pub mode: Option<String>,
    /// The MX host names senders may deliver to (`*.` matches one leftmost label); at least
    /// one unless the mode is `none`.
    pub mx: Vec<String>,
    /// Seconds senders may cache the policy (at most 31557600).
    pub max_age: u32,
}

impl Default for PublishedSts {
    fn default() -> Self {
        PublishedSts {
            mode: None,
            mx: Vec::new(),
            max_age: 604_800,
        }
    }
}

impl PublishedSts {
    /// The policy file as served (CRLF line ends), when one is published.
    pub fn text(&self) -> Option<String> {
        let mode = self.mode.as_deref()?;
        let mut text = format!("version: STSv1\r\nmode: {mode}\r\n");
        for mx in &self.mx {
            text.push_str(&format!("mx: {mx}\r\n"));
        }
        text.push_str(&format!("max_age: {}\r\n", self.max_age));
        Some(text)
    }
}

/// TLS-RPT (RFC 8460): the reports Postern sends about its deliveries to recipient domains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct ReportSettings {
    /// Each day after 00:00 UTC, build the previous day's report for every recipient domain
    /// Postern delivered to, and send it to the addresses of the domain's `_smtp._tls` record
    /// (`contact` must be set). Off by default: reports say which partners' TLS failed, and
    /// the operator decides whether to tell them.
    pub tls_rpt: bool,
    /// The reports' `organization-name`; empty: the contact's domain.
    pub organization_name: String,
    /// The reports' `contact-info`, and the From and envelope sender of mailed reports; its
    /// domain is the report submitter.
    pub contact: Option<String>,
    /// Mail to this address is taken as TLS-RPT reports about our own domains (publish it as
    /// `rua=mailto:` in `_smtp._tls.<domain>`): workers read the report from the message and
    /// the control plane stores it (`GET /v1/reports/tls/received`) instead of relaying it.
    pub receive_address: Option<String>,
    /// Bytes the reports received about our domains may take (anyone may send one): past it,
    /// new ones are refused until retention removes old ones. Kept apart from message
    /// tracking, whose retention they never touch. 1 GiB.
    pub received_max_bytes: u64,
}

impl Default for ReportSettings {
    fn default() -> Self {
        ReportSettings {
            tls_rpt: false,
            organization_name: String::new(),
            contact: None,
            receive_address: None,
            received_max_bytes: 1 << 30,
        }
    }
}

/// SMTP server limits (docs/src/smtp.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct SmtpLimits {
    /// Longest command line in octets, CRLF included (at least 512; default 512).
    pub max_command_line: u32,
    /// Longest text line in DATA in octets, CRLF included (at least 1000; default 1000).
    pub max_line: u32,
    /// Largest message in bytes, advertised with SIZE (default 26214400, 25 MiB).
    pub max_message_size: u64,
    /// Largest header block of a message in bytes (default 1048576, 1 MiB).
    pub max_header_size: u64,
    /// Recipients per message at most (default 1000).
    pub max_recipients: u32,
    /// Errors in a session before it is closed (default 20).
    pub max_hard_errors: u32,
    /// Commands allowed before MAIL FROM; past them the session is closed (default 100).
    pub max_commands_before_mail: u32,
    /// Seconds a client may take to send each command (default 300).
    pub command_timeout_s: u32,
    /// Seconds a session may last in all (default 1800, 30 minutes).
    pub session_timeout_s: u32,
    /// Concurrent sessions per worker at most (default 1000).
    pub max_sessions: u32,
    /// Concurrent sessions from one client IP at most (default 50).
    pub max_sessions_per_ip: u32,
    /// `Received:` headers before a message is refused as looping (default 50).
    pub max_received_headers: u32,
    /// How long SIGTERM waits for sessions in flight.
    pub shutdown_grace_s: u32,
}

impl Default for SmtpLimits {
    fn default() -> Self {
        SmtpLimits {
            max_command_line: 512,
            max_line: 1000,
            max_message_size: 25 * 1024 * 1024,
            max_header_size: 1024 * 1024,
            max_recipients: 1000,
            max_hard_errors: 20,
            max_commands_before_mail: 100,
            command_timeout_s: 300,
            session_timeout_s: 30 * 60,
            max_sessions: 1000,
            max_sessions_per_ip: 50,
            max_received_headers: 50,
            shutdown_grace_s: 30,
        }
    }
}

/// Retry schedule and lifetime of deferred mail (docs/src/policy.md#queue-retries-and-bounces).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct QueueSettings {
    /// Seconds before the first retry of deferred mail; the delay then doubles (default 300).
    pub first_retry_s: u32,
    /// Longest delay between retries in seconds; at least `first_retry_s` (default 3600).
    pub max_retry_s: u32,
    /// Seconds from arrival after which undelivered mail bounces (default 432000, 5 days).
    pub lifetime_s: u32,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            first_retry_s: 300,
            max_retry_s: 3600,
            lifetime_s: 5 * 24 * 3600,
        }
    }
}

/// How the worker relays (docs/src/policy.md#outbound, features.md): where to, how many at once,
/// and the deadline of
/// every step. Defaults follow Postfix 3.x (`smtp_connect_timeout`, `smtp_helo_timeout`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct DeliverySettings {
    /// `host:port` or `[ip]:port` for mail to non-relay domains; null means MX lookup.
    pub smart_host: Option<String>,
    /// DNS servers as `ip` or `ip:port`; empty means the system resolver.
    pub nameservers: Vec<String>,
    /// The port MX hosts are contacted on (25; tests point it elsewhere).
    pub mx_port: u16,
    /// Connections to next hops at once, over all destinations.
    pub concurrency: u32,
    /// Connections to one destination (a next hop, or a domain's MX hosts) at once.
    pub per_destination_concurrency: u32,
    /// TCP connect (Postfix `smtp_connect_timeout`, 30).
    pub connect_timeout_s: u32,
    /// The server's greeting and the EHLO reply (`smtp_helo_timeout`, 300).
    pub greeting_timeout_s: u32,
    /// Each command's reply, the STARTTLS handshake and each command write (`smtp_mail_timeout`,
    /// `smtp_rcpt_timeout`, ..., 300).
    pub command_timeout_s: u32,
    /// The message body: each write must make progress within this (`smtp_data_xfer_timeout`,
    /// 180); the reply to the final dot gets `command_timeout_s`.
    pub data_timeout_s: u32,
    /// One connection from connect to QUIT, whatever the progress.
    pub session_timeout_s: u32,
    /// Addresses tried per delivery attempt, over all MX hosts (`smtp_mx_address_limit`, 5).
    pub mx_address_limit: u32,
    /// Sessions that got past the greeting per delivery attempt (`smtp_mx_session_limit`, 2).
    pub mx_session_limit: u32,
    /// How long a connection is used for further messages to the same next hop
    /// (`smtp_connection_reuse_time_limit`, 300).
    pub connection_reuse_time_s: u32,
    /// Messages per connection at most (`smtp_connection_reuse_count_limit`; 0 means no reuse).
    pub connection_reuse_count: u32,
    /// How long an unused connection waits for the next message
    /// (`smtp_connection_cache_time_limit`, 2).
    pub connection_idle_s: u32,
    /// Apply the MTA-STS policies recipient domains publish (RFC 8461) where no local outbound
    /// rule matches; a local rule for a domain exempts it.
    pub mta_sts: bool,
    /// The HTTPS port of `mta-sts.<domain>` (443; tests point it elsewhere, as `mx_port`).
    pub mta_sts_port: u16,
    /// Networks (CIDR) that MTA-STS policy fetches and TLS-RPT `https:` POSTs may reach
    /// although they are not public: loopback, private, link-local, unique-local and shared
    /// addresses are refused otherwise, so a domain's DNS cannot point our workers at the
    /// operator's own network. Empty by default; tests list loopback.
    pub fetch_networks: Vec<String>,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            smart_host: None,
            mta_sts: true,
            mta_sts_port: 443,
            nameservers: Vec::new(),
            mx_port: 25,
            concurrency: 100,
            per_destination_concurrency: 20,
            connect_timeout_s: 30,
            greeting_timeout_s: 300,
            command_timeout_s: 300,
            data_timeout_s: 180,
            session_timeout_s: 3600,
            mx_address_limit: 5,
            mx_session_limit: 2,
            connection_reuse_time_s: 300,
            connection_reuse_count: 100,
            connection_idle_s: 2,
            fetch_networks: Vec::new(),
        }
    }
}

impl DeliverySettings {
    /// `fetch_networks`, parsed (the invalid ones were refused when the settings were saved).
    pub fn fetch_networks(&self) -> Vec<ipnet::IpNet> {
        self.fetch_networks
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect()
    }
}

/// Retention and size limits of message tracking (docs/src/tracking.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct TrackingSettings {
    /// Tracking data older than this is removed by the control plane.
    pub retention_days: u32,
    /// The control plane's message tracking is kept under this size (oldest messages go first).
    pub max_bytes: u64,
    /// Connection records are kept apart, under this size of their own (oldest go first), so
    /// that many connections never push message records out. 1 GiB.
    pub connections_max_bytes: u64,
    /// Each worker's event outbox is kept under this size (docs/src/tracking.md: 1 GiB; at least
    /// 16 MiB).
    pub outbox_max_bytes: u64,
}

impl Default for TrackingSettings {
    fn default() -> Self {
        TrackingSettings {
            retention_days: 30,
            max_bytes: 10 * 1024 * 1024 * 1024,
            connections_max_bytes: 1024 * 1024 * 1024,
            outbox_max_bytes: 1024 * 1024 * 1024,
        }
    }
}

impl Settings {
    /// The settings in canonical form, or every problem with them.
    pub fn normalized(&self) -> Result<Settings, Vec<FieldError>> {
        let mut s = self.clone();
        let mut errors = Vec::new();
        let mut positive = |pointer: &str, value: u64| {
            if value == 0 {
                errors.push(FieldError::new(pointer, "must be greater than 0"));
            }
        };
        let l = &s.smtp;
        positive("/smtp/max_message_size", l.max_message_size);
        positive("/smtp/max_header_size", l.max_header_size);
        positive("/smtp/max_recipients", l.max_recipients.into());
        positive("/smtp/max_hard_errors", l.max_hard_errors.into());
        positive(
            "/smtp/max_commands_before_mail",
            l.max_commands_before_mail.into(),
        );
        positive("/smtp/command_timeout_s", l.command_timeout_s.into());
        positive("/smtp/session_timeout_s", l.session_timeout_s.into());
        positive("/smtp/max_sessions", l.max_sessions.into());
        positive("/smtp/max_sessions_per_ip", l.max_sessions_per_ip.into());
        positive("/smtp/max_received_headers", l.max_received_headers.into());
        positive("/queue/first_retry_s", s.queue.first_retry_s.into());
        positive("/queue/lifetime_s", s.queue.lifetime_s.into());
        positive("/delivery/mx_port", s.delivery.mx_port.into());
        positive("/delivery/concurrency", s.delivery.concurrency.into());
        positive(
            "/delivery/per_destination_concurrency",
            s.delivery.per_destination_concurrency.into(),
        );
        let d = &s.delivery;
        for (pointer, value) in [
            ("/delivery/connect_timeout_s", d.connect_timeout_s),
            ("/delivery/greeting_timeout_s", d.greeting_timeout_s),
            ("/delivery/command_timeout_s", d.command_timeout_s),
            ("/delivery/data_timeout_s", d.data_timeout_s),
            ("/delivery/session_timeout_s", d.session_timeout_s),
            ("/delivery/mx_address_limit", d.mx_address_limit),
            ("/delivery/mx_session_limit", d.mx_session_limit),
            (
                "/delivery/connection_reuse_time_s",
                d.connection_reuse_time_s,
            ),
            ("/delivery/connection_idle_s", d.connection_idle_s),
        ] {
            positive(pointer, value.into());
        }
        positive("/tracking/retention_days", s.tracking.retention_days.into());
        positive("/reports/received_max_bytes", s.reports.received_max_bytes);
        positive("/tracking/max_bytes", s.tracking.max_bytes);
        positive(
            "/tracking/connections_max_bytes",
            s.tracking.connections_max_bytes,
        );
        for (i, n) in s.delivery.fetch_networks.iter().enumerate() {
            if n.parse::<ipnet::IpNet>().is_err() {
                errors.push(FieldError::new(
                    format!("/delivery/fetch_networks/{i}"),
                    "not a network in CIDR notation (192.0.2.0/24, 2001:db8::/32)",
                ));
            }
        }
        // The outbox works in 4 MiB segments: fewer than four would drop events the uploader
        // is about to send.
        if s.tracking.outbox_max_bytes < 16 * 1024 * 1024 {
            errors.push(FieldError::new(
                "/tracking/outbox_max_bytes",
                "must be at least 16 MiB (16777216)",
            ));
        }
        // RFC 5321 4.5.3.1: a server must accept command lines of 512 and text lines of 1000.
        if l.max_command_line < 512 {
            errors.push(FieldError::new(
                "/smtp/max_command_line",
                "must be at least 512 (RFC 5321)",
            ));
        }
        if l.max_line < 1000 {
            errors.push(FieldError::new(
                "/smtp/max_line",
                "must be at least 1000 (RFC 5321)",
            ));
        }
        if s.queue.max_retry_s < s.queue.first_retry_s {
            errors.push(FieldError::new(
                "/queue/max_retry_s",
                "must be at least first_retry_s",
            ));
        }
        if s.delivery.per_destination_concurrency > s.delivery.concurrency {
            errors.push(FieldError::new(
                "/delivery/per_destination_concurrency",
                "must not exceed concurrency",
            ));
        }
        if let Some(hop) = &s.delivery.smart_host {
            match NextHop::parse(hop) {
                Ok(NextHop::Mx) => errors.push(FieldError::new(
                    "/delivery/smart_host",
                    "a smart host is 'host:port' or '[ip]:port'",
                )),
                Ok(h) => s.delivery.smart_host = Some(h.to_string()),
                Err(e) => errors.push(FieldError::new("/delivery/smart_host", e)),
            }
        }
        for (i, ns) in s.delivery.nameservers.iter_mut().enumerate() {
            match parse_nameserver(ns) {
                Some(addr) => *ns = addr.to_string(),
                None => errors.push(FieldError::new(
                    format!("/delivery/nameservers/{i}"),
                    format!("'{ns}' is not 'ip' or 'ip:port'"),
                )),
            }
        }
        // No control characters: the address goes into DSN headers and replies.
        if let Some(pm) = &s.postmaster
            && !is_address(pm)
        {
            errors.push(FieldError::new(
                "/postmaster",
                "must be an address like postmaster@example.com",
            ));
        }
        let r = &s.reports;
        if let Some(c) = &r.contact
            && !is_address(c)
        {
            errors.push(FieldError::new(
                "/reports/contact",
                "must be an address like tlsrpt@example.com",
            ));
        }
        if let Some(a) = &r.receive_address
            && !is_address(a)
        {
            errors.push(FieldError::new(
                "/reports/receive_address",
                "must be an address like tlsrpt@example.com",
            ));
        }
        let p = &mut s.published_mta_sts;
        if let Some(mode) = &p.mode
            && !["enforce", "testing", "none"].contains(&mode.as_str())
        {
            errors.push(FieldError::new(
                "/published_mta_sts/mode",
                "must be enforce, testing or none",
            ));
        }
        if p.mode.as_deref().is_some_and(|m| m != "none") && p.mx.is_empty() {
            errors.push(FieldError::new(
                "/published_mta_sts/mx",
                "needs at least one MX host name",
            ));
        }
        for (i, mx) in p.mx.iter_mut().enumerate() {
            let (wild, name) = match mx.strip_prefix("*.") {
                Some(rest) => ("*.", rest),
                None => ("", mx.as_str()),
            };
            match crate::domain::normalize_domain(name) {
                Ok(n) if n.contains('.') => *mx = format!("{wild}{n}"),
                _ => errors.push(FieldError::new(
                    format!("/published_mta_sts/mx/{i}"),
                    "must be a host name, or *. and a domain",
                )),
            }
        }
        if p.max_age == 0 || p.max_age > 31_557_600 {
            errors.push(FieldError::new(
                "/published_mta_sts/max_age",
                "must be between 1 and 31557600 (RFC 8461)",
            ));
        }
        if r.organization_name.chars().any(char::is_control) {
            errors.push(FieldError::new(
                "/reports/organization_name",
                "contains control characters",
            ));
        }
        if r.tls_rpt && r.contact.is_none() {
            errors.push(FieldError::new(
                "/reports/contact",
                "is required to send TLS-RPT reports (tls_rpt)",
            ));
        }
        if errors.is_empty() {
            Ok(s)
        } else {
            Err(errors)
        }
    }
}

/// A plain `local@domain` address that can go into mail headers and replies.
fn is_address(a: &str) -> bool {
    match crate::domain::domain_of_address(a) {
        Some(d) => {
            crate::domain::normalize_domain(d).is_ok()
                && !a.contains(['<', '>', ' ', '"', ','])
                && !a.chars().any(char::is_control)
        }
        None => false,
    }
}

fn parse_nameserver(s: &str) -> Option<SocketAddr> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some(addr);
    }
    s.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, 53))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::{Relay, RelayDomain};

    /// Every string of the settings and the relay document, each spoiled with CR, LF, a tab or
    /// a NUL, is refused at its own pointer (they reach replies, DSN headers and logs).
    #[test]
    fn control_characters_are_refused_in_every_string() {
        for bad in ["\r\n", "\n", "\t", "\0", "\u{7f}"] {
            let postmaster = Settings {
                postmaster: Some(format!("post{bad}master@example.com")),
                ..Settings::default()
            };
            let smart_host = Settings {
                delivery: DeliverySettings {
                    smart_host: Some(format!("relay{bad}.example:25")),
                    ..DeliverySettings::default()
                },
                ..Settings::default()
            };
            let nameserver = Settings {
                delivery: DeliverySettings {
                    nameservers: vec![format!("192.0.2.53{bad}")],
                    ..DeliverySettings::default()
                },
                ..Settings::default()
            };
            let contact = Settings {
                reports: ReportSettings {
                    contact: Some(format!("tls{bad}rpt@example.com")),
                    ..ReportSettings::default()
                },
                ..Settings::default()
            };
            let organization = Settings {
                reports: ReportSettings {
                    organization_name: format!("Example{bad}Org"),
                    ..ReportSettings::default()
                },
                ..Settings::default()
            };
            for (settings, pointer) in [
                (postmaster, "/postmaster"),
                (contact, "/reports/contact"),
                (organization, "/reports/organization_name"),
                (smart_host, "/delivery/smart_host"),
                (nameserver, "/delivery/nameservers/0"),
            ] {
                let errors = settings.normalized().unwrap_err();
                assert!(
                    errors.iter().any(|e| e.pointer == pointer),
                    "{bad:?} at {pointer}: {errors:?}"
                );
            }
            let relay = |domain: &str, next_hop: &str, network: &str| Relay {
                domains: vec![RelayDomain {
                    domain: domain.into(),
                    next_hop: next_hop.into(),
                }],
                networks: vec![network.into()],
            };
            for (r, pointer) in [
                (
                    relay(&format!("a{bad}.example"), "mx", "192.0.2.0/24"),
                    "/domains/0/domain",
                ),
                (
                    relay("a.example", &format!("h{bad}.example:25"), "192.0.2.0/24"),
                    "/domains/0/next_hop",
                ),
                (
                    relay("a.example", "mx", &format!("192.0.2.0/24{bad}")),
                    "/networks/0",
                ),
            ] {
                let errors = r.normalized().unwrap_err();
                assert!(
                    errors.iter().any(|e| e.pointer == pointer),
                    "{bad:?} at {pointer}: {errors:?}"
                );
            }
        }
        assert!(
            Settings {
                postmaster: Some("postmaster@example.com".into()),
                ..Settings::default()
            }
            .normalized()
            .is_ok()
        );
    }
}
