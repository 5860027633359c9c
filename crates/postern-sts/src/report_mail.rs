//! A TLS-RPT report as RFC 8460 5 delivers it: gzip-compressed JSON, named
//! `submitter!policy-domain!begin!end.json.gz`, posted as `application/tlsrpt+gzip` or mailed
//! as the second part of a `multipart/report; report-type="tlsrpt"` message with the
//! `TLS-Report-Domain` and `TLS-Report-Submitter` headers (and `TLS-Required: No`, RFC 8689,
//! so that a broken TLS path does not stop the report about it).

use std::fmt::Write as _;
use std::io::Write as _;

use base64::Engine as _;

/// The media type of a compressed report (RFC 8460 6.4).
pub const MEDIA_TYPE: &str = "application/tlsrpt+gzip";

/// The report's JSON, gzip-compressed.
pub fn gzip(json: &[u8]) -> Vec<u8> {
    let mut out = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    out.write_all(json).expect("writing to memory");
    out.finish().expect("writing to memory")
}

/// RFC 8460 5.1's file name; the times are unix seconds.
pub fn filename(submitter: &str, policy_domain: &str, start_s: u64, end_s: u64) -> String {
    format!("{submitter}!{policy_domain}!{start_s}!{end_s}.json.gz")
}

/// Everything a mailed report says besides the report.
#[derive(Debug, Clone)]
pub struct ReportMail<'a> {
    /// The From address (the report's contact).
    pub from: &'a str,
    /// The To address (a `mailto:` `rua` of the policy domain).
    pub to: &'a str,
    /// The submitter's domain (`TLS-Report-Submitter`).
    pub submitter: &'a str,
    /// The domain the report is about (`TLS-Report-Domain`).
    pub policy_domain: &'a str,
    /// The report's `report-id`, quoted in the Subject.
    pub report_id: &'a str,
    /// RFC 5322 date.
    pub date: &'a str,
    /// Without angle brackets.
    pub message_id: &'a str,
    /// Start of the reported period (unix s), for the file name and the MIME boundary.
    pub start_s: u64,
    /// End of the reported period (unix s), for the file name and the MIME boundary.
    pub end_s: u64,
}

impl ReportMail<'_> {
    /// The Subject RFC 8460 suggests: `Report Domain: … Submitter: … Report-ID: <…>`.
    pub fn subject(&self) -> String {
        format!(
            "Report Domain: {} Submitter: {} Report-ID: <{}>",
            self.policy_domain, self.submitter, self.report_id
        )
    }

    /// The whole message, CRLF line ends, the report (`gz`) base64 in lines of 76.
    pub fn compose(&self, gz: &[u8]) -> Vec<u8> {
        let boundary = format!("=_tlsrpt_{}_{}", self.start_s, self.end_s);
        let name = filename(self.submitter, self.policy_domain, self.start_s, self.end_s);
        let encoded = base64::engine::general_purpose::STANDARD.encode(gz);
        let mut m = String::new();
        let mut line = |s: &str| {
            m.push_str(s);
            m.push_str("\r\n");
        };
        line(&format!("From: <{}>", self.from));
        line(&format!("To: <{}>", self.to));
        line(&format!("Date: {}", self.date));
        line(&format!("Subject: {}", self.subject()));
        line(&format!("Message-ID: <{}>", self.message_id));
        line(&format!("TLS-Report-Domain: {}", self.policy_domain));
        line(&format!("TLS-Report-Submitter: {}", self.submitter));
        line("TLS-Required: No");
        line("MIME-Version: 1.0");
        line(&format!(
            "Content-Type: multipart/report; report-type=\"tlsrpt\";\r\n\tboundary=\"{boundary}\""
        ));
        line("");
        line("This is a multipart message in MIME format.");
        line("");
        line(&format!("--{boundary}"));
        line("Content-Type: text/plain; charset=\"us-ascii\"");
        line("Content-Transfer-Encoding: 7bit");
        line("");
        line(&format!(
            "This is an aggregate TLS report from {} about mail to {}.",
            self.submitter, self.policy_domain
        ));
        line("");
        line(&format!("--{boundary}"));
        line(&format!("Content-Type: {MEDIA_TYPE}"));
        line("Content-Transfer-Encoding: base64");
        line(&format!(
            "Content-Disposition: attachment;\r\n\tfilename=\"{name}\""
        ));
        line("");
        for chunk in encoded.as_bytes().chunks(76) {
            line(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        }
        line("");
        let _ = write!(m, "--{boundary}--\r\n");
        m.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    #[test]
    fn the_mail_carries_the_rfc_headers_and_the_compressed_report() {
        let json = br#"{"organization-name":"x"}"#;
        let gz = gzip(json);
        let mut back = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back.as_bytes(), json);
        let mail = ReportMail {
            from: "tlsrpt@gw.example",
            to: "reports@partner.example",
            submitter: "gw.example",
            policy_domain: "partner.example",
            report_id: "2026-12-06_partner.example@gw.example",
            date: "Mon, 07 Dec 2026 00:10:00 +0000",
            message_id: "r1@gw.example",
            start_s: 1796601600,
            end_s: 1796687999,
        };
        let text = String::from_utf8(mail.compose(&gz)).unwrap();
        for needle in [
            "TLS-Report-Domain: partner.example\r\n",
            "TLS-Report-Submitter: gw.example\r\n",
            "TLS-Required: No\r\n",
            "Subject: Report Domain: partner.example Submitter: gw.example Report-ID: <2026-12-06_partner.example@gw.example>\r\n",
            "report-type=\"tlsrpt\"",
            "Content-Type: application/tlsrpt+gzip\r\n",
            "filename=\"gw.example!partner.example!1796601600!1796687999.json.gz\"",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
        assert!(text.lines().all(|l| l.len() <= 998));
        assert!(text.ends_with("--=_tlsrpt_1796601600_1796687999--\r\n"));
        // The base64 part decodes back to the compressed report.
        let (_, attachment) = text.split_once(".json.gz\"\r\n\r\n").unwrap();
        let body: String = attachment.lines().take_while(|l| !l.is_empty()).collect();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        assert_eq!(decoded, gz);
    }
}
