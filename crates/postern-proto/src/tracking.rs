//! Conversions between `pb` tracking events and `postern_events` (the worker encodes, the
//! control plane decodes; anything it cannot understand is a `WireError`).

use postern_events as ev;

use crate::WireError;
use crate::pb::{self, event_record::Event as PbEvent};

fn certificate_to(c: ev::Certificate) -> pb::Certificate {
    match c {
        ev::Certificate::Verified => pb::Certificate::Verified,
        ev::Certificate::Untrusted => pb::Certificate::Unverified,
        ev::Certificate::NameMismatch => pb::Certificate::NameMismatch,
        // As UNVERIFIED until every control plane reads EXPIRED (the control plane shows both
        // as `unverified`; the worker, which judges TLS-RPT results, keeps the difference).
        ev::Certificate::Expired => pb::Certificate::Unverified,
        ev::Certificate::None => pb::Certificate::None,
    }
}

fn certificate_from(value: i32) -> Result<ev::Certificate, WireError> {
    match pb::Certificate::try_from(value) {
        Ok(pb::Certificate::Verified) => Ok(ev::Certificate::Verified),
        Ok(pb::Certificate::Unverified) => Ok(ev::Certificate::Untrusted),
        Ok(pb::Certificate::NameMismatch) => Ok(ev::Certificate::NameMismatch),
        Ok(pb::Certificate::Expired) => Ok(ev::Certificate::Expired),
        Ok(pb::Certificate::None) => Ok(ev::Certificate::None),
        _ => Err(WireError::Enum {
            field: "tls.certificate".into(),
            value,
        }),
    }
}

const VIOLATIONS: [(ev::Violation, pb::Violation); 9] = [
    (ev::Violation::MustUseTls, pb::Violation::MustUseTls),
    (ev::Violation::CipherTooWeak, pb::Violation::CipherTooWeak),
    (
        ev::Violation::UnverifiedClientCertificate,
        pb::Violation::UnverifiedClientCertificate,
    ),
    (ev::Violation::MustNotUseTls, pb::Violation::MustNotUseTls),
    (ev::Violation::TlsNotOffered, pb::Violation::TlsNotOffered),
    (
        ev::Violation::StartTlsRefused,
        pb::Violation::StarttlsRefused,
    ),
    (
        ev::Violation::HandshakeFailed,
        pb::Violation::HandshakeFailed,
    ),
    (
        ev::Violation::CertificateNotTrusted,
        pb::Violation::CertificateNotTrusted,
    ),
    (
        ev::Violation::CertificateNotVerified,
        pb::Violation::CertificateNotVerified,
    ),
];

fn violation_to(v: Option<ev::Violation>) -> i32 {
    let found = VIOLATIONS.iter().find(|(e, _)| Some(*e) == v);
    found.map_or(pb::Violation::Unspecified, |(_, p)| *p) as i32
}

/// Unspecified is "none"; a value this build does not know is an error, not a silent none.
fn violation_from(value: i32, field: &str) -> Result<Option<ev::Violation>, WireError> {
    if value == pb::Violation::Unspecified as i32 {
        return Ok(None);
    }
    VIOLATIONS
        .iter()
        .find(|(_, p)| *p as i32 == value)
        .map(|(e, _)| Some(*e))
        .ok_or_else(|| WireError::Enum {
            field: field.into(),
            value,
        })
}

fn tls_to(t: ev::Tls) -> pb::Tls {
    pb::Tls {
        version: t.version,
        cipher: t.cipher,
        key_exchange: t.key_exchange,
        certificate: certificate_to(t.certificate) as i32,
    }
}

fn tls_from(t: pb::Tls) -> Result<ev::Tls, WireError> {
    Ok(ev::Tls {
        version: t.version,
        cipher: t.cipher,
        key_exchange: t.key_exchange,
        certificate: certificate_from(t.certificate)?,
    })
}

fn source_to(s: ev::Source) -> pb::Source {
    pb::Source {
        ip: s.ip,
        helo: s.helo,
        tls: s.tls.map(tls_to),
    }
}

fn source_from(s: Option<pb::Source>) -> Result<ev::Source, WireError> {
    let s = s.ok_or(WireError::Missing("source"))?;
    Ok(ev::Source {
        ip: s.ip,
        helo: s.helo,
        tls: s.tls.map(tls_from).transpose()?,
    })
}

fn leg_to(l: ev::Leg) -> pb::Leg {
    pb::Leg {
        host: l.host,
        ip: l.ip,
        tls: l.tls.map(tls_to),
        tls_fallback: l.tls_fallback,
    }
}

fn leg_from(l: pb::Leg) -> Result<ev::Leg, WireError> {
    Ok(ev::Leg {
        host: l.host,
        ip: l.ip,
        tls: l.tls.map(tls_from).transpose()?,
        tls_fallback: l.tls_fallback,
    })
}

fn policy_source_to(p: ev::PolicySource) -> Option<pb::PolicySource> {
    use pb::policy_source::Kind;
    Some(match p {
        ev::PolicySource::Default => return None,
        ev::PolicySource::Rule { id } => pb::PolicySource {
            kind: Kind::Rule as i32,
            rule_id: id,
            ..Default::default()
        },
        ev::PolicySource::MtaSts(s) => pb::PolicySource {
            kind: Kind::MtaSts as i32,
            sts_id: s.id,
            sts_mode: s.mode.as_str().into(),
            sts_failure: s.failure.map(|f| f.as_str().into()),
            rule_id: String::new(),
        },
    })
}

/// MTA-STS's and TLS-RPT's words travel as text (as RFC 8460 spells them); each is checked
/// here, at the edge.
fn mode_from(field: &str, s: &str) -> Result<ev::Mode, WireError> {
    ev::Mode::parse(s).ok_or_else(|| invalid(field, "not an MTA-STS mode"))
}

fn result_from(field: &str, s: &str) -> Result<ev::ResultType, WireError> {
    ev::ResultType::parse(s).ok_or_else(|| invalid(field, "not a TLS-RPT result type"))
}

fn patterns_from(field: &str, mx: Vec<String>) -> Result<Vec<ev::MxPattern>, WireError> {
    mx.iter()
        .map(|m| ev::MxPattern::parse(m).map_err(|e| invalid(field, &e.to_string())))
        .collect()
}

fn invalid(field: &str, detail: &str) -> WireError {
    WireError::Invalid {
        field: field.into(),
        detail: detail.into(),
    }
}

fn policy_source_from(p: Option<pb::PolicySource>) -> Result<ev::PolicySource, WireError> {
    use pb::policy_source::Kind;
    let Some(p) = p else {
        return Ok(ev::PolicySource::Default);
    };
    match Kind::try_from(p.kind) {
        Ok(Kind::Default) => Ok(ev::PolicySource::Default),
        Ok(Kind::Rule) => Ok(ev::PolicySource::Rule { id: p.rule_id }),
        Ok(Kind::MtaSts) => Ok(ev::PolicySource::MtaSts(ev::StsApplied {
            id: p.sts_id,
            mode: mode_from("attempt.policy.sts_mode", &p.sts_mode)?,
            failure: p
                .sts_failure
                .map(|f| result_from("attempt.policy.sts_failure", &f))
                .transpose()?,
        })),
        Err(_) => Err(WireError::Enum {
            field: "attempt.policy.kind".into(),
            value: p.kind,
        }),
    }
}

impl From<ev::Record> for pb::EventRecord {
    fn from(r: ev::Record) -> Self {
        let event = match r.event {
            ev::Event::Connection(c) => PbEvent::Connection(pb::Connection {
                session: c.session,
                ip: c.ip,
                started_ms: c.started_ms,
                helo: c.helo,
                tls: c.tls.map(tls_to),
                tls_failure: c.tls_failure,
                refused: c.refused,
                messages: c.messages,
                starttls_leftovers: c.starttls_leftovers,
                refused_count: c.refused_count,
            }),
            ev::Event::Received(m) => PbEvent::Received(pb::Received {
                queue_id: m.queue_id,
                session: m.session,
                source: Some(source_to(m.source)),
                sender: m.sender,
                recipients: m.recipients,
                size: m.size,
                subject: m.subject,
                message_id: m.message_id,
            }),
            ev::Event::Rejected(m) => PbEvent::Rejected(pb::Rejected {
                queue_id: m.queue_id,
                session: m.session,
                source: Some(source_to(m.source)),
                sender: m.sender,
                recipient: m.recipient,
                reply: m.reply,
                violation: violation_to(m.violation),
            }),
            ev::Event::Attempt(a) => PbEvent::Attempt(pb::Attempt {
                queue_id: a.queue_id,
                recipient: a.recipient,
                leg: a.leg.map(leg_to),
                reply: a.reply,
                violation: violation_to(a.violation),
                policy: policy_source_to(a.policy),
            }),
            ev::Event::Deferred(d) => PbEvent::Deferred(pb::Deferred {
                queue_id: d.queue_id,
                recipient: d.recipient,
                reason: d.reason,
                next_attempt_ms: d.next_attempt_ms,
                violation: violation_to(d.violation),
            }),
            ev::Event::Delivered(d) => PbEvent::Delivered(pb::Delivered {
                queue_id: d.queue_id,
                recipient: d.recipient,
                reply: d.reply,
            }),
            ev::Event::Bounced(b) => PbEvent::Bounced(pb::Bounced {
                queue_id: b.queue_id,
                recipient: b.recipient,
                reason: b.reason,
                dsn: b.dsn,
            }),
            ev::Event::Deleted(d) => PbEvent::Deleted(pb::Deleted {
                queue_id: d.queue_id,
                dsn: d.dsn,
            }),
            ev::Event::StartTlsLeftovers(l) => PbEvent::StarttlsLeftovers(pb::StartTlsLeftovers {
                session: l.session,
                ip: l.ip,
                bytes: l.bytes,
            }),
            ev::Event::OutboxGap(g) => PbEvent::OutboxGap(pb::OutboxGap {
                first_seq: g.first_seq,
                last_seq: g.last_seq,
            }),
            ev::Event::StsPolicy(p) => PbEvent::StsPolicy(pb::StsPolicy {
                domain: p.domain,
                id: p.id,
                mode: p.mode.as_str().into(),
                max_age: p.max_age,
                mx: p.mx.iter().map(|m| m.as_str().into()).collect(),
                fetched_ms: p.fetched_ms,
            }),
            ev::Event::TlsSession(t) => PbEvent::TlsSession(pb::TlsSession {
                domain: t.domain,
                sts: t.sts.map(|p| pb::SessionPolicy {
                    id: p.id,
                    lines: p.lines,
                    mx: p.mx.iter().map(|m| m.as_str().into()).collect(),
                }),
                result: t.result.map(|r| r.as_str().into()).unwrap_or_default(),
                sending_ip: t.sending_ip.unwrap_or_default(),
                receiving_mx: t.receiving_mx.unwrap_or_default(),
                receiving_ip: t.receiving_ip.unwrap_or_default(),
                at_ms: t.at_ms,
            }),
            ev::Event::TlsReportReceived(r) => PbEvent::TlsReportReceived(pb::TlsReportReceived {
                queue_id: r.queue_id,
                sender: r.sender,
                report: r.report,
            }),
        };
        pb::EventRecord {
            seq: r.seq,
            at_ms: r.at_ms,
            policy_version: r.policy_version,
            truncated: r.truncated,
            event: Some(event),
        }
    }
}

impl TryFrom<pb::EventRecord> for ev::Record {
    type Error = WireError;

    fn try_from(r: pb::EventRecord) -> Result<Self, WireError> {
        let event = match r.event.ok_or(WireError::Missing("event"))? {
            PbEvent::Connection(c) => ev::Event::Connection(ev::Connection {
                session: c.session,
                ip: c.ip,
                started_ms: c.started_ms,
                helo: c.helo,
                tls: c.tls.map(tls_from).transpose()?,
                tls_failure: c.tls_failure,
                refused: c.refused,
                messages: c.messages,
                starttls_leftovers: c.starttls_leftovers,
                refused_count: c.refused_count,
            }),
            PbEvent::Received(m) => ev::Event::Received(ev::Received {
                queue_id: m.queue_id,
                session: m.session,
                source: source_from(m.source)?,
                sender: m.sender,
                recipients: m.recipients,
                size: m.size,
                subject: m.subject,
                message_id: m.message_id,
            }),
            PbEvent::Rejected(m) => ev::Event::Rejected(ev::Rejected {
                queue_id: m.queue_id,
                session: m.session,
                source: source_from(m.source)?,
                sender: m.sender,
                recipient: m.recipient,
                reply: m.reply,
                violation: violation_from(m.violation, "rejected.violation")?,
            }),
            PbEvent::Attempt(a) => ev::Event::Attempt(ev::Attempt {
                queue_id: a.queue_id,
                recipient: a.recipient,
                leg: a.leg.map(leg_from).transpose()?,
                reply: a.reply,
                violation: violation_from(a.violation, "attempt.violation")?,
                policy: policy_source_from(a.policy)?,
            }),
            PbEvent::Deferred(d) => ev::Event::Deferred(ev::Deferred {
                queue_id: d.queue_id,
                recipient: d.recipient,
                reason: d.reason,
                next_attempt_ms: d.next_attempt_ms,
                violation: violation_from(d.violation, "deferred.violation")?,
            }),
            PbEvent::Delivered(d) => ev::Event::Delivered(ev::Delivered {
                queue_id: d.queue_id,
                recipient: d.recipient,
                reply: d.reply,
            }),
            PbEvent::Bounced(b) => ev::Event::Bounced(ev::Bounced {
                queue_id: b.queue_id,
                recipient: b.recipient,
                reason: b.reason,
                dsn: b.dsn,
            }),
            PbEvent::Deleted(d) => ev::Event::Deleted(ev::Deleted {
                queue_id: d.queue_id,
                dsn: d.dsn,
            }),
            PbEvent::StarttlsLeftovers(l) => ev::Event::StartTlsLeftovers(ev::StartTlsLeftovers {
                session: l.session,
                ip: l.ip,
                bytes: l.bytes,
            }),
            PbEvent::OutboxGap(g) => ev::Event::OutboxGap(ev::OutboxGap {
                first_seq: g.first_seq,
                last_seq: g.last_seq,
            }),
            PbEvent::StsPolicy(p) => ev::Event::StsPolicy(ev::StsPolicy {
                domain: p.domain,
                id: p.id,
                mode: mode_from("sts_policy.mode", &p.mode)?,
                max_age: p.max_age,
                mx: patterns_from("sts_policy.mx", p.mx)?,
                fetched_ms: p.fetched_ms,
            }),
            PbEvent::TlsSession(t) => {
                let some = |s: String| (!s.is_empty()).then_some(s);
                ev::Event::TlsSession(ev::TlsSession {
                    domain: t.domain,
                    sts: t
                        .sts
                        .map(|p| {
                            Ok::<_, WireError>(ev::SessionPolicy {
                                id: p.id,
                                lines: p.lines,
                                mx: patterns_from("tls_session.sts.mx", p.mx)?,
                            })
                        })
                        .transpose()?,
                    result: some(t.result)
                        .map(|r| result_from("tls_session.result", &r))
                        .transpose()?,
                    sending_ip: some(t.sending_ip),
                    receiving_mx: some(t.receiving_mx),
                    receiving_ip: some(t.receiving_ip),
                    at_ms: t.at_ms,
                })
            }
            PbEvent::TlsReportReceived(r) => ev::Event::TlsReportReceived(ev::TlsReportReceived {
                queue_id: r.queue_id,
                sender: r.sender,
                report: r.report,
            }),
        };
        Ok(ev::Record {
            seq: r.seq,
            at_ms: r.at_ms,
            policy_version: r.policy_version,
            event,
            truncated: r.truncated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_the_wire() {
        let tls = Some(ev::Tls {
            version: "TLSv1.3".into(),
            cipher: "TLS_AES_256_GCM_SHA384".into(),
            key_exchange: "x25519".into(),
            certificate: ev::Certificate::NameMismatch,
        });
        let source = ev::Source {
            ip: "192.0.2.7".into(),
            helo: "client.example".into(),
            tls: tls.clone(),
        };
        let events = vec![
            ev::Event::Connection(ev::Connection {
                session: "S".into(),
                ip: "192.0.2.7".into(),
                started_ms: 5,
                helo: Some("client.example".into()),
                tls: None,
                tls_failure: Some("handshake failure".into()),
                refused: None,
                messages: 0,
                starttls_leftovers: 17,
                refused_count: 3,
            }),
            ev::Event::Received(ev::Received {
                queue_id: "Q".into(),
                session: "S".into(),
                source: source.clone(),
                sender: "a@x".into(),
                recipients: vec!["b@y".into()],
                size: 10,
                subject: Some("héllo".into()),
                message_id: None,
            }),
            ev::Event::Rejected(ev::Rejected {
                queue_id: "Q".into(),
                session: "S".into(),
                source,
                sender: "a@x".into(),
                recipient: Some("c@z".into()),
                reply: "554 5.7.1 no".into(),
                violation: None,
            }),
            ev::Event::Attempt(ev::Attempt {
                queue_id: "Q".into(),
                recipient: "b@y".into(),
                leg: Some(ev::Leg {
                    host: "mx.y".into(),
                    ip: "198.51.100.2".into(),
                    tls,
                    tls_fallback: false,
                }),
                reply: "250 ok".into(),
                violation: None,
                policy: ev::PolicySource::MtaSts(ev::StsApplied {
                    id: "20261206".into(),
                    mode: ev::Mode::Enforce,
                    failure: None,
                }),
            }),
            ev::Event::Deferred(ev::Deferred {
                queue_id: "Q".into(),
                recipient: "b@y".into(),
                reason: "4.7.5 Server certificate not verified".into(),
                next_attempt_ms: 9,
                violation: Some(ev::Violation::CertificateNotVerified),
            }),
            ev::Event::Delivered(ev::Delivered {
                queue_id: "Q".into(),
                recipient: "b@y".into(),
                reply: "250".into(),
            }),
            ev::Event::Bounced(ev::Bounced {
                queue_id: "Q".into(),
                recipient: "b@y".into(),
                reason: "550".into(),
                dsn: None,
            }),
            ev::Event::Deleted(ev::Deleted {
                queue_id: "Q".into(),
                dsn: true,
            }),
            ev::Event::StartTlsLeftovers(ev::StartTlsLeftovers {
                session: "S".into(),
                ip: "192.0.2.7".into(),
                bytes: 12,
            }),
            ev::Event::OutboxGap(ev::OutboxGap {
                first_seq: 3,
                last_seq: 7,
            }),
            ev::Event::StsPolicy(ev::StsPolicy {
                domain: "partner.example".into(),
                id: "20261206".into(),
                mode: ev::Mode::Enforce,
                max_age: 86400,
                mx: vec![ev::MxPattern::parse("*.partner.example").unwrap()],
                fetched_ms: 1_765_000_000_000,
            }),
            ev::Event::TlsSession(ev::TlsSession {
                domain: "partner.example".into(),
                sts: Some(ev::SessionPolicy {
                    id: "20261206".into(),
                    lines: vec!["version: STSv1".into(), "mode: enforce".into()],
                    mx: vec![ev::MxPattern::parse("*.partner.example").unwrap()],
                }),
                result: Some(ev::ResultType::CertificateHostMismatch),
                sending_ip: Some("192.0.2.1".into()),
                receiving_mx: Some("mx1.partner.example".into()),
                receiving_ip: None,
                at_ms: 1_765_000_000_000,
            }),
            ev::Event::TlsReportReceived(ev::TlsReportReceived {
                queue_id: "Q1".into(),
                sender: "tls@big.example".into(),
                report: "{}".into(),
            }),
            ev::Event::TlsSession(ev::TlsSession {
                domain: "plain.example".into(),
                sts: None,
                result: None,
                sending_ip: None,
                receiving_mx: None,
                receiving_ip: None,
                at_ms: 1,
            }),
        ];
        for (seq, event) in events.into_iter().enumerate() {
            let record = ev::Record {
                seq: seq as u64,
                at_ms: 1,
                policy_version: 2,
                event,
                truncated: seq % 2 == 0,
            };
            let wire = pb::EventRecord::from(record.clone());
            assert_eq!(ev::Record::try_from(wire).unwrap(), record);
        }
        // Every violation kind and certificate status crosses the wire and back.
        for v in ev::Violation::ALL {
            assert_eq!(violation_from(violation_to(Some(v)), "v"), Ok(Some(v)));
        }
        for c in [
            ev::Certificate::Verified,
            ev::Certificate::Untrusted,
            ev::Certificate::NameMismatch,
            ev::Certificate::None,
        ] {
            assert_eq!(certificate_from(certificate_to(c) as i32), Ok(c));
        }
        // Expired travels as unverified (what an older control plane reads), and is read back.
        let expired = certificate_to(ev::Certificate::Expired);
        assert_eq!(
            certificate_from(expired as i32),
            Ok(ev::Certificate::Untrusted)
        );
        assert_eq!(
            certificate_from(pb::Certificate::Expired as i32),
            Ok(ev::Certificate::Expired)
        );
        assert!(violation_from(99, "v").is_err());
        let empty = pb::EventRecord::default();
        assert_eq!(
            ev::Record::try_from(empty),
            Err(WireError::Missing("event"))
        );
    }
}
