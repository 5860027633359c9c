//! What message tracking stores (docs/src/tracking.md): one record per message and per connection,
//! built by the event fold (`fold.rs`). Typed and in milliseconds: the REST views are made
//! from these at the API edge (`api/tracking_view.rs`), so changing a view changes no stored
//! data. Records written before times were kept as numbers (RFC 3339 strings, under the old
//! names) are read as they are.

use std::collections::VecDeque;

use postern_events::{self as ev, Certificate, PolicySource, Violation};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

/// Unix milliseconds, read from a number or (records before issue 24) an RFC 3339 string.
pub(crate) fn ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Ms(u64),
        Text(String),
    }
    match Either::deserialize(d)? {
        Either::Ms(ms) => Ok(ms),
        Either::Text(t) => postern_time::parse_rfc3339_ms(&t)
            .map_err(|_| serde::de::Error::custom(format!("not a time: {t:?}"))),
    }
}

/// A TLS session (IANA names) and how the peer's certificate was judged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsRecord {
    pub version: String,
    pub cipher: String,
    pub key_exchange: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<Certificate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<Certificate>,
}

impl TlsRecord {
    pub(super) fn client(t: ev::Tls) -> TlsRecord {
        TlsRecord {
            version: t.version,
            cipher: t.cipher,
            key_exchange: t.key_exchange,
            client_certificate: Some(t.certificate),
            server_certificate: None,
        }
    }

    pub(super) fn server(t: ev::Tls) -> TlsRecord {
        TlsRecord {
            server_certificate: Some(t.certificate),
            client_certificate: None,
            ..TlsRecord::client(t)
        }
    }
}

/// `name [ip]`, and ` (via TLS)` when encrypted: how Postfix's logs name a peer.
pub fn display(name: &str, ip: &str, tls: bool) -> String {
    let via = if tls { " (via TLS)" } else { "" };
    format!("{name} [{ip}]{via}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub ip: String,
    pub helo: String,
    pub tls: Option<TlsRecord>,
}

impl SourceRecord {
    pub fn display(&self) -> String {
        display(&self.helo, &self.ip, self.tls.is_some())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RcptStatus {
    Queued,
    Deferred,
    Delivered,
    Bounced,
    Rejected,
}

/// One delivery attempt of one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptRecord {
    pub at_ms: u64,
    pub host: Option<String>,
    pub ip: Option<String>,
    pub tls: Option<TlsRecord>,
    pub tls_fallback: bool,
    pub reply: String,
    /// Set when the TLS policy deferred the attempt.
    pub violation: Option<Violation>,
    /// What set the TLS level, with the MTA-STS policy followed and what it found wrong.
    pub policy: PolicySource,
}

/// An attempt as stored: now, or before issue 24 (its time as text, its source as strings).
#[derive(Deserialize)]
struct StoredAttempt {
    #[serde(alias = "at", deserialize_with = "ms")]
    at_ms: u64,
    host: Option<String>,
    ip: Option<String>,
    tls: Option<TlsRecord>,
    tls_fallback: bool,
    reply: String,
    violation: Option<Violation>,
    #[serde(default)]
    policy: Option<PolicySource>,
    #[serde(default)]
    policy_source: Option<String>,
    #[serde(default)]
    sts_policy_id: Option<String>,
    #[serde(default)]
    sts_mode: Option<postern_sts::Mode>,
    #[serde(default)]
    sts_failure: Option<postern_sts::ResultType>,
}

impl<'de> Deserialize<'de> for AttemptRecord {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = StoredAttempt::deserialize(d)?;
        let policy = s
            .policy
            .unwrap_or_else(|| match s.policy_source.as_deref() {
                Some("rule") => PolicySource::Rule { id: String::new() },
                Some("mta-sts") => PolicySource::MtaSts(ev::StsApplied {
                    id: s.sts_policy_id.unwrap_or_default(),
                    mode: s.sts_mode.unwrap_or(postern_sts::Mode::Testing),
                    failure: s.sts_failure,
                }),
                _ => PolicySource::Default,
            });
        Ok(AttemptRecord {
            at_ms: s.at_ms,
            host: s.host,
            ip: s.ip,
            tls: s.tls,
            tls_fallback: s.tls_fallback,
            reply: s.reply,
            violation: s.violation,
            policy,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub recipient: String,
    pub status: RcptStatus,
    /// The next hop of the last attempt.
    pub host: Option<String>,
    pub ip: Option<String>,
    pub tls: Option<TlsRecord>,
    /// The last reply or reason.
    pub reason: Option<String>,
    /// The newest attempts, oldest first.
    pub attempts: VecDeque<AttemptRecord>,
}

impl DeliveryRecord {
    /// The last attempt's next hop, as logs name it.
    pub fn display(&self) -> Option<String> {
        Some(display(
            self.host.as_deref()?,
            self.ip.as_deref().unwrap_or_default(),
            self.tls.is_some(),
        ))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Marks {
    /// Some leg encrypted.
    pub tls: bool,
    /// Some leg in plaintext.
    pub plaintext: bool,
    /// A TLS rule refused or deferred it: a 530, a 421 4.7.x, a 4.7.4 or a 4.7.5
    /// (`violations` says which).
    pub violation: bool,
    /// A `may` delivery fell back to plaintext.
    pub tls_fallback: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Rejected,
    Deferred,
    Queued,
    Bounced,
    Delivered,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Rejected => "rejected",
            Status::Deferred => "deferred",
            Status::Queued => "queued",
            Status::Bounced => "bounced",
            Status::Delivered => "delivered",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineRecord {
    #[serde(alias = "at", deserialize_with = "ms")]
    pub at_ms: u64,
    /// `received`, `rejected`, `attempt`, `deferred`, `delivered`, `bounced`, `deleted`.
    pub kind: String,
    pub worker: String,
    pub policy_version: u64,
    pub detail: String,
    /// A field of the event was cut to its cap on the worker.
    #[serde(default)]
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub id: String,
    /// The worker that received it (only its events fold in).
    pub worker: String,
    #[serde(alias = "received_at", deserialize_with = "ms")]
    pub received_ms: u64,
    pub sender: String,
    pub recipients: Vec<String>,
    pub subject: Option<String>,
    pub message_id: Option<String>,
    pub size: Option<u64>,
    pub status: Status,
    pub marks: Marks,
    pub policy_version: u64,
    pub source: Option<SourceRecord>,
    pub rejections: Vec<String>,
    #[serde(default)]
    pub violations: Vec<Violation>,
    pub deliveries: Vec<DeliveryRecord>,
    pub dsn: Option<String>,
    /// The newest entries (the store keeps them beside the record).
    pub timeline: VecDeque<TimelineRecord>,
    #[serde(default)]
    pub timeline_dropped: u64,
}

/// What lists show and filter on: small, so scans are quick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryRecord {
    pub id: String,
    pub worker: String,
    #[serde(alias = "received_at", deserialize_with = "ms")]
    pub received_ms: u64,
    pub sender: String,
    pub recipients: Vec<String>,
    pub subject: Option<String>,
    pub message_id: Option<String>,
    pub status: Status,
    pub marks: Marks,
    pub policy_version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRecord {
    pub session: String,
    pub worker: String,
    pub ip: String,
    #[serde(alias = "started_at", deserialize_with = "ms")]
    pub started_ms: u64,
    pub helo: Option<String>,
    pub tls: Option<TlsRecord>,
    pub tls_failure: Option<String>,
    pub refused: Option<String>,
    pub messages: u32,
    #[serde(default)]
    pub starttls_leftovers: u64,
    #[serde(default)]
    pub refused_count: u32,
    pub policy_version: u64,
}

impl ConnectionRecord {
    pub fn new(worker: &str, version: u64, c: &ev::Connection) -> ConnectionRecord {
        ConnectionRecord {
            session: c.session.clone(),
            worker: worker.to_string(),
            ip: c.ip.clone(),
            started_ms: c.started_ms,
            helo: c.helo.clone(),
            tls: c.tls.clone().map(TlsRecord::client),
            tls_failure: c.tls_failure.clone(),
            refused: c.refused.clone(),
            messages: c.messages,
            starttls_leftovers: c.starttls_leftovers,
            refused_count: if c.refused.is_some() {
                c.refused_count.max(1)
            } else {
                0
            },
            policy_version: version,
        }
    }

    pub fn display(&self) -> String {
        display(
            self.helo.as_deref().unwrap_or("unknown"),
            &self.ip,
            self.tls.is_some(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records written before issue 24 (times as RFC 3339, an attempt's source as strings,
    /// derived `display` fields) read as the typed records.
    #[test]
    fn records_of_the_previous_format_are_read() {
        let attempt: AttemptRecord = serde_json::from_str(
            r#"{"at":"2026-12-07T10:00:00.250Z","host":"mx.partner.example","ip":"192.0.2.7",
                "tls":null,"tls_fallback":false,"reply":"450 4.7.5 Server certificate not trusted",
                "violation":"certificate_not_trusted","policy_source":"mta-sts",
                "sts_policy_id":"20261207","sts_mode":"enforce","sts_failure":"certificate-expired"}"#,
        )
        .unwrap();
        assert_eq!(
            attempt.at_ms,
            postern_time::parse_rfc3339_ms("2026-12-07T10:00:00.250Z").unwrap()
        );
        assert_eq!(
            attempt.policy,
            PolicySource::MtaSts(ev::StsApplied {
                id: "20261207".into(),
                mode: postern_sts::Mode::Enforce,
                failure: Some(postern_sts::ResultType::CertificateExpired),
            })
        );
        let ruled: AttemptRecord = serde_json::from_str(
            r#"{"at":"2026-12-07T10:00:00Z","host":null,"ip":null,"tls":null,"tls_fallback":false,
                "reply":"x","violation":null,"policy_source":"rule"}"#,
        )
        .unwrap();
        assert_eq!(ruled.policy, PolicySource::Rule { id: String::new() });
        // What is written now reads back as it was.
        let again: AttemptRecord =
            serde_json::from_slice(&serde_json::to_vec(&attempt).unwrap()).unwrap();
        assert_eq!(again, attempt);

        let connection: ConnectionRecord = serde_json::from_str(
            r#"{"session":"S1","worker":"w","ip":"192.0.2.9","started_at":"2026-12-07T10:00:00Z",
                "helo":"h.example","tls":null,"tls_failure":null,"refused":null,"messages":1,
                "policy_version":3,"display":"h.example [192.0.2.9]"}"#,
        )
        .unwrap();
        assert_eq!(connection.display(), "h.example [192.0.2.9]");
        assert!(connection.started_ms > 0);
        let bad = r#"{"at":"yesterday","kind":"k","worker":"w","policy_version":1,"detail":"d"}"#;
        assert!(serde_json::from_str::<TimelineRecord>(bad).is_err());
    }
}
