//! SMTP TLS Reporting (RFC 8460) without I/O: the `_smtp._tls` TXT record (where reports go)
//! and the daily report, aggregated from the sessions of one recipient domain: one entry per
//! applied policy (`sts` with its policy lines and mx patterns, or `no-policy-found`), the
//! session counts, and the failures grouped by result type, sending IP, MX name and receiving IP.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::result::{PolicyType, ResultType};

/// One `rua` destination of a `v=TLSRPTv1` record, validated: a mailbox we may put in an
/// envelope and a header, or an `https:` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rua {
    /// A `mailto:` address, percent-decoded and checked to be an RFC 5321 mailbox.
    Mailto(String),
    /// An `https:` URL with a host, at most 2048 characters long.
    Https(url::Url),
}

impl std::fmt::Display for Rua {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rua::Mailto(to) => write!(f, "mailto:{to}"),
            Rua::Https(url) => f.write_str(url.as_str()),
        }
    }
}

/// Where a domain's reports go: the addresses we use, and what we left out of the record, each
/// with its reason (for a log line: the text is escaped and cut, it came from DNS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Destinations {
    /// The addresses to send reports to, in record order, at most `MAX_RUA`.
    pub ruas: Vec<Rua>,
    /// Each address left out, quoted, with the reason.
    pub ignored: Vec<String>,
}

/// The most `rua` addresses we send one report to: a record listing hundreds must not make
/// one report into hundreds of mails and POSTs. RFC 8460 sets no number; five is generous
/// (published records name one or two).
pub const MAX_RUA: usize = 5;

/// The most characters of a published value quoted in an error or log line.
const QUOTE: usize = 120;

/// Why a domain's `_smtp._tls` TXT records give no report destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsRptError {
    /// No TXT record begins with `v=TLSRPTv1`.
    #[error("no v=TLSRPTv1 record")]
    None,
    /// More than one record begins with `v=TLSRPTv1` (how many).
    #[error("{0} v=TLSRPTv1 records (exactly one is allowed)")]
    Several(usize),
    /// The one record is malformed or has no usable `rua` (why, with the record quoted).
    #[error("invalid v=TLSRPTv1 record: {0}")]
    Invalid(String),
}

/// The report destinations among `txts` (each TXT record's strings joined): records not
/// beginning with `v=TLSRPTv1` are discarded, exactly one must remain, with at least one valid
/// `mailto:` or `https:` address in `rua` (other schemes are skipped, RFC 8460 3). A `mailto:`
/// is percent-decoded (RFC 6068; any `?hfields` part is dropped) and must be an RFC 5321
/// mailbox; an `https:` one must be a URL with a host. At most `MAX_RUA` are kept.
pub fn tlsrpt_record<S: AsRef<str>>(txts: &[S]) -> Result<Destinations, TlsRptError> {
    let ours: Vec<&str> = txts
        .iter()
        .map(AsRef::as_ref)
        .filter(|t| t.starts_with("v=TLSRPTv1;") || *t == "v=TLSRPTv1")
        .collect();
    let text = match ours.as_slice() {
        [] => return Err(TlsRptError::None),
        [one] => *one,
        many => return Err(TlsRptError::Several(many.len())),
    };
    let invalid = |why: &str| TlsRptError::Invalid(format!("{why} in {}", quoted(text)));
    let mut rua = None;
    for field in text
        .split(';')
        .map(str::trim)
        .skip(1)
        .filter(|f| !f.is_empty())
    {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| invalid("a field without '='"))?;
        if key.trim() == "rua" {
            if rua.is_some() {
                return Err(invalid("rua given twice"));
            }
            let mut found = Destinations::default();
            for uri in value.split(',').map(str::trim) {
                match destination(uri) {
                    Some(Ok(_)) if found.ruas.len() == MAX_RUA => found
                        .ignored
                        .push(format!("{}: more than {MAX_RUA} addresses", quoted(uri))),
                    Some(Ok(d)) => found.ruas.push(d),
                    Some(Err(why)) => found.ignored.push(format!("{}: {why}", quoted(uri))),
                    None => {}
                }
            }
            rua = Some(found);
        }
    }
    match rua {
        Some(found) if !found.ruas.is_empty() => Ok(found),
        Some(found) if !found.ignored.is_empty() => Err(invalid(&format!(
            "no usable address ({})",
            found.ignored.join("; ")
        ))),
        Some(_) => Err(invalid("no mailto: or https: address in rua")),
        None => Err(invalid("no rua")),
    }
}

/// One `rua` URI: `None` for a scheme we do not send to, `Err` for a malformed address.
fn destination(uri: &str) -> Option<Result<Rua, &'static str>> {
    if let Some(addr) = uri.strip_prefix("mailto:") {
        let addr = addr.split_once('?').map_or(addr, |(a, _)| a);
        let decoded = percent_encoding::percent_decode_str(addr).decode_utf8();
        return Some(match decoded {
            Ok(a) if postern_smtp::is_mailbox(&a) => Ok(Rua::Mailto(a.into_owned())),
            Ok(_) => Err("not an RFC 5321 mailbox"),
            Err(_) => Err("not UTF-8 once percent-decoded"),
        });
    }
    if !uri.starts_with("https://") {
        return None;
    }
    Some(match url::Url::parse(uri) {
        Ok(u) if u.host_str().is_some_and(|h| !h.is_empty()) && u.as_str().len() <= 2048 => {
            Ok(Rua::Https(u))
        }
        Ok(_) => Err("not a URL with a host (of at most 2048 characters)"),
        Err(_) => Err("not a valid URL"),
    })
}

/// `text` as it may go into an error or a log line: cut, control characters escaped.
fn quoted(text: &str) -> String {
    let cut: String = text.chars().take(QUOTE).collect();
    let more = if cut.len() < text.len() { "..." } else { "" };
    format!("{cut:?}{more}")
}

/// The policy a session was made under.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Applied {
    /// An MTA-STS policy: its lines (as served) and its mx patterns.
    Sts {
        /// The policy file's lines as served (the report's `policy-string`).
        lines: Vec<String>,
        /// The policy's `mx` patterns (the report's `mx-host`).
        mx: Vec<String>,
    },
    /// No policy applied (`no-policy-found`).
    NoPolicyFound,
}

/// One SMTP session to the domain's MX hosts: `result` is `None` for a success, else why it
/// failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The policy the session was made under.
    pub applied: Applied,
    /// `None` for a success, else the failure's `result-type`.
    pub result: Option<ResultType>,
    /// Our IP address (`sending-mta-ip`), if known.
    pub sending_ip: Option<String>,
    /// The MX host name (`receiving-mx-hostname`), if known.
    pub receiving_mx: Option<String>,
    /// The MX host's IP address (`receiving-ip`), if known.
    pub receiving_ip: Option<String>,
}

/// RFC 8460 4.4, field for field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Report {
    /// `organization-name`: who sends the report.
    pub organization_name: String,
    /// `date-range`: the period the report covers.
    pub date_range: DateRange,
    /// `contact-info`: how to reach the sender.
    pub contact_info: String,
    /// `report-id`: the report's unique identifier.
    pub report_id: String,
    /// `policies`: one entry per applied policy.
    pub policies: Vec<PolicyResult>,
}

impl Report {
    /// (successful, failed) sessions over all its policies.
    pub fn session_counts(&self) -> (u64, u64) {
        self.policies.iter().fold((0, 0), |(ok, failed), p| {
            (
                ok + p.summary.total_successful_session_count,
                failed + p.summary.total_failure_session_count,
            )
        })
    }
}

/// `date-range`: the period a report covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DateRange {
    /// `start-datetime` (RFC 3339).
    pub start_datetime: String,
    /// `end-datetime` (RFC 3339).
    pub end_datetime: String,
}

/// One entry of `policies`: a policy, its session counts and its failures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PolicyResult {
    /// `policy`: the policy applied.
    pub policy: PolicyDescription,
    /// `summary`: the session counts.
    pub summary: Summary,
    /// `failure-details`: the failed sessions, grouped; omitted when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failure_details: Vec<FailureDetail>,
}

/// `policy`: which policy applied, for which domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PolicyDescription {
    /// `policy-type`: `sts`, `tlsa` or `no-policy-found`.
    pub policy_type: PolicyType,
    /// `policy-string`: the policy's lines; omitted when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_string: Vec<String>,
    /// `policy-domain`: the recipient domain.
    pub policy_domain: String,
    /// `mx-host`: the policy's MX patterns; omitted when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mx_host: Vec<String>,
}

/// `summary`: a policy's session counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Summary {
    /// `total-successful-session-count`: sessions that succeeded.
    pub total_successful_session_count: u64,
    /// `total-failure-session-count`: sessions that failed.
    pub total_failure_session_count: u64,
}

/// One entry of `failure-details`: sessions that failed alike, to the same hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FailureDetail {
    /// `result-type`: why the sessions failed.
    pub result_type: ResultType,
    /// `sending-mta-ip`: our IP address; omitted if unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sending_mta_ip: Option<String>,
    /// `receiving-mx-hostname`: the MX host name; omitted if unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receiving_mx_hostname: Option<String>,
    /// `receiving-ip`: the MX host's IP address; omitted if unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receiving_ip: Option<String>,
    /// `failed-session-count`: how many sessions failed so.
    pub failed_session_count: u64,
}

/// Who sends the report and which day (UTC, RFC 3339) it covers.
#[derive(Debug, Clone)]
pub struct ReportHeader {
    /// The report's `organization-name`.
    pub organization_name: String,
    /// The report's `contact-info`.
    pub contact_info: String,
    /// The report's `report-id`.
    pub report_id: String,
    /// `start-datetime`: the start of the day covered (RFC 3339, UTC).
    pub start_datetime: String,
    /// `end-datetime`: the end of the day covered (RFC 3339, UTC).
    pub end_datetime: String,
}

type FailureKey = (ResultType, Option<String>, Option<String>, Option<String>);

/// A domain's report as its sessions are added one at a time: what it holds is one counter
/// per applied policy and distinct failure, never the sessions, so a day of a million
/// sessions builds in the memory of its distinct failures.
#[derive(Debug, Default)]
pub struct Aggregate {
    by_policy: BTreeMap<Applied, (u64, BTreeMap<FailureKey, u64>)>,
}

impl Aggregate {
    /// Counts one session: a success, or a failure by result type, IP addresses and MX name.
    pub fn add(&mut self, s: Session) {
        let (ok, failures) = self.by_policy.entry(s.applied).or_default();
        match s.result {
            None => *ok += 1,
            Some(kind) => {
                let key = (kind, s.sending_ip, s.receiving_mx, s.receiving_ip);
                *failures.entry(key).or_default() += 1;
            }
        }
    }

    /// The report for `domain`, policies in a stable order.
    pub fn report(self, header: ReportHeader, domain: &str) -> Report {
        let by_policy = self.by_policy;
        let policies = by_policy
            .into_iter()
            .map(|(applied, (ok, failures))| {
                let policy = match applied {
                    Applied::Sts { lines, mx } => PolicyDescription {
                        policy_type: PolicyType::Sts,
                        policy_string: lines,
                        policy_domain: domain.to_string(),
                        mx_host: mx,
                    },
                    Applied::NoPolicyFound => PolicyDescription {
                        policy_type: PolicyType::NoPolicyFound,
                        policy_string: Vec::new(),
                        policy_domain: domain.to_string(),
                        mx_host: Vec::new(),
                    },
                };
                PolicyResult {
                    policy,
                    summary: Summary {
                        total_successful_session_count: ok,
                        total_failure_session_count: failures.values().sum(),
                    },
                    failure_details: failures
                        .into_iter()
                        .map(|((result_type, sending, mx, ip), n)| FailureDetail {
                            result_type,
                            sending_mta_ip: sending,
                            receiving_mx_hostname: mx,
                            receiving_ip: ip,
                            failed_session_count: n,
                        })
                        .collect(),
                }
            })
            .collect();
        Report {
            organization_name: header.organization_name,
            date_range: DateRange {
                start_datetime: header.start_datetime,
                end_datetime: header.end_datetime,
            },
            contact_info: header.contact_info,
            report_id: header.report_id,
            policies,
        }
    }
}

/// The report for `domain` from its sessions (`Aggregate` without holding them).
pub fn build(header: ReportHeader, domain: &str, sessions: &[Session]) -> Report {
    let mut aggregate = Aggregate::default();
    for s in sessions {
        aggregate.add(s.clone());
    }
    aggregate.report(header, domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_names_where_reports_go() {
        let r = tlsrpt_record(&["v=TLSRPTv1; rua=mailto:tls@example.com,https://r.example.com/v1"])
            .unwrap();
        assert_eq!(
            r.ruas,
            [
                Rua::Mailto("tls@example.com".into()),
                Rua::Https("https://r.example.com/v1".parse().unwrap())
            ]
        );
        assert!(r.ignored.is_empty());
        // Unknown schemes are skipped; other TXT records are not ours.
        let r =
            tlsrpt_record(&["v=spf1 -all", "v=TLSRPTv1;rua=ftp://x,mailto:a@b.example"]).unwrap();
        assert_eq!(r.ruas, [Rua::Mailto("a@b.example".into())]);
        assert_eq!(tlsrpt_record::<&str>(&[]), Err(TlsRptError::None));
        assert_eq!(
            tlsrpt_record(&[
                "v=TLSRPTv1; rua=mailto:a@b.example",
                "v=TLSRPTv1; rua=mailto:c@d.example"
            ]),
            Err(TlsRptError::Several(2))
        );
        for bad in [
            "v=TLSRPTv1",
            "v=TLSRPTv1; rua=ftp://x",
            "v=TLSRPTv1; rua=mailto:a@b.example; rua=mailto:c@d.example",
            "v=TLSRPTv1; rua=mailto:a@b.example\r\nRCPT TO:<staff@victim.test>",
        ] {
            assert!(
                matches!(tlsrpt_record(&[bad]), Err(TlsRptError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn published_addresses_are_decoded_and_checked() {
        let r = tlsrpt_record(&[
            "v=TLSRPTv1; rua=mailto:tls%2Breports@example.com?subject=x,mailto:a%0D%0AMAIL%20FROM:%3Cceo@victim.test%3E@b.example,mailto:x%3Ey@b.example,mailto:%FF@b.example,https://,https://ok.example/r",
        ])
        .unwrap();
        assert_eq!(
            r.ruas,
            [
                Rua::Mailto("tls+reports@example.com".into()),
                Rua::Https("https://ok.example/r".parse().unwrap())
            ]
        );
        assert_eq!(r.ignored.len(), 4, "{:?}", r.ignored);
        assert!(
            r.ignored.iter().all(|i| !i.contains(['\r', '\n'])),
            "{:?}",
            r.ignored
        );

        let many: Vec<String> = (0..8).map(|i| format!("mailto:r{i}@example.com")).collect();
        let r = tlsrpt_record(&[format!("v=TLSRPTv1; rua={}", many.join(","))]).unwrap();
        assert_eq!(r.ruas.len(), MAX_RUA);
        assert_eq!(r.ignored.len(), 3);
        assert!(r.ignored[0].contains("more than 5"), "{:?}", r.ignored);

        let Err(TlsRptError::Invalid(why)) =
            tlsrpt_record(&[format!("v=TLSRPTv1; rua=mailto:{}\n", "x".repeat(10_000))])
        else {
            panic!("an over-long invalid address is refused");
        };
        assert!(why.len() < 1_000 && !why.contains('\n'), "{why}");
    }

    fn session(applied: &Applied, result: Option<&str>, mx: &str) -> Session {
        Session {
            applied: applied.clone(),
            result: result.map(|r| ResultType::registered(r).unwrap()),
            sending_ip: Some("192.0.2.25".into()),
            receiving_mx: Some(mx.into()),
            receiving_ip: Some("198.51.100.7".into()),
        }
    }

    #[test]
    fn sessions_are_counted_per_policy_and_failures_grouped() {
        let sts = Applied::Sts {
            lines: vec![
                "version: STSv1".into(),
                "mode: enforce".into(),
                "mx: *.example.net".into(),
                "max_age: 86400".into(),
            ],
            mx: vec!["*.example.net".into()],
        };
        let sessions = [
            session(&sts, None, "mx1.example.net"),
            session(&sts, None, "mx1.example.net"),
            session(&sts, Some("certificate-host-mismatch"), "mx2.example.net"),
            session(&sts, Some("certificate-host-mismatch"), "mx2.example.net"),
            session(&sts, Some("starttls-not-supported"), "mx3.example.net"),
            session(&Applied::NoPolicyFound, None, "mx1.example.net"),
        ];
        let header = ReportHeader {
            organization_name: "Postern at example.org".into(),
            contact_info: "postmaster@example.org".into(),
            report_id: "2026-12-06_example.net".into(),
            start_datetime: "2026-12-06T00:00:00Z".into(),
            end_datetime: "2026-12-06T23:59:59Z".into(),
        };
        let report = build(header, "example.net", &sessions);
        let json = serde_json::to_value(&report).unwrap();
        let sts = &json["policies"][0];
        assert_eq!(sts["policy"]["policy-type"], "sts");
        assert_eq!(sts["policy"]["mx-host"][0], "*.example.net");
        assert_eq!(sts["summary"]["total-successful-session-count"], 2);
        assert_eq!(sts["summary"]["total-failure-session-count"], 3);
        assert_eq!(
            sts["failure-details"][0]["result-type"],
            "certificate-host-mismatch"
        );
        assert_eq!(sts["failure-details"][0]["failed-session-count"], 2);
        assert_eq!(
            sts["failure-details"][0]["receiving-mx-hostname"],
            "mx2.example.net"
        );
        assert_eq!(
            sts["failure-details"][1]["result-type"],
            "starttls-not-supported"
        );
        let none = &json["policies"][1];
        assert_eq!(none["policy"]["policy-type"], "no-policy-found");
        assert!(none.get("failure-details").is_none());
        assert_eq!(json["date-range"]["end-datetime"], "2026-12-06T23:59:59Z");
        // What we write, we read back (the control plane lists reports as JSON).
        assert_eq!(serde_json::from_value::<Report>(json).unwrap(), report);
    }
}
