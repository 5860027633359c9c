//! The one header Postern adds (PRODUCT.md 4): `Received:` with the TLS version and suite.

use std::time::{SystemTime, UNIX_EPOCH};

/// What the Received header records about the session.
pub struct Trace<'a> {
    pub helo: &'a str,
    pub ip: std::net::IpAddr,
    pub hostname: &'a str,
    pub id: &'a str,
    pub recipients: &'a [String],
    pub esmtp: bool,
    pub smtputf8: bool,
    /// (IANA suite, IANA version, client certificate status).
    pub tls: Option<(&'a str, &'a str, &'a str)>,
}

pub fn header(t: &Trace<'_>, now: SystemTime) -> String {
    let protocol = match (t.smtputf8, t.esmtp) {
        (true, _) => "UTF8SMTP",
        (false, true) => "ESMTP",
        (false, false) => "SMTP",
    };
    let secure = if t.tls.is_some() { "S" } else { "" };
    let mut h = format!(
        "Received: from {} (unknown [{}])\r\n\tby {} (Postern) with {protocol}{secure} id {}",
        t.helo, t.ip, t.hostname, t.id
    );
    if let [only] = t.recipients {
        h.push_str(&format!("\r\n\tfor <{only}>"));
    }
    if let Some((suite, version, cert)) = t.tls {
        h.push_str(&format!(
            "\r\n\ttls {suite} ({version}, client certificate: {cert})"
        ));
    }
    h.push_str(&format!(";\r\n\t{}\r\n", rfc5322_date(now)));
    h
}

/// `2026-11-29T20:00:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// `Sun, 29 Nov 2026 20:00:00 +0000`.
pub fn rfc5322_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let (y, m, d) = civil_from_days(days);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days.rem_euclid(7)) as usize];
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m - 1) as usize];
    let s = secs % 86_400;
    format!(
        "{weekday}, {d} {month} {y} {:02}:{:02}:{:02} +0000",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's civil calendar algorithm.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 1 Jan 1970 00:00:00 +0000");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_982_400 + 3_661);
        assert_eq!(rfc5322_date(t), "Sun, 29 Nov 2026 21:01:01 +0000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc5322_date(leap), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn header_forms() {
        let rcpts = vec!["b@example.com".to_string()];
        let t = Trace {
            helo: "client.example",
            ip: "192.0.2.7".parse().unwrap(),
            hostname: "mx.test",
            id: "01ABC",
            recipients: &rcpts,
            esmtp: true,
            smtputf8: false,
            tls: Some(("TLS_AES_256_GCM_SHA384", "TLSv1.3", "none")),
        };
        let h = header(&t, UNIX_EPOCH);
        assert_eq!(
            h,
            "Received: from client.example (unknown [192.0.2.7])\r\n\tby mx.test (Postern) with ESMTPS id 01ABC\r\n\tfor <b@example.com>\r\n\ttls TLS_AES_256_GCM_SHA384 (TLSv1.3, client certificate: none);\r\n\tThu, 1 Jan 1970 00:00:00 +0000\r\n"
        );
        let plain = header(
            &Trace {
                tls: None,
                recipients: &[],
                ..t
            },
            UNIX_EPOCH,
        );
        assert!(
            plain.contains("with ESMTP id 01ABC;") && !plain.contains("tls"),
            "{plain}"
        );
    }
}
