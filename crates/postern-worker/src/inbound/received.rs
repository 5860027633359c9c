//! The one header Postern adds (docs/src/smtp.md): `Received:` with the TLS version and suite.

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

/// The header for a message received at `now_s` (Unix seconds).
pub fn header(t: &Trace<'_>, now_s: u64) -> String {
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
    h.push_str(&format!(";\r\n\t{}\r\n", postern_time::rfc5322(now_s)));
    h
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let h = header(&t, 0);
        assert_eq!(
            h,
            "Received: from client.example (unknown [192.0.2.7])\r\n\tby mx.test (Postern) with ESMTPS id 01ABC\r\n\tfor <b@example.com>\r\n\ttls TLS_AES_256_GCM_SHA384 (TLSv1.3, client certificate: none);\r\n\tThu, 01 Jan 1970 00:00:00 +0000\r\n"
        );
        let plain = header(
            &Trace {
                tls: None,
                recipients: &[],
                ..t
            },
            0,
        );
        assert!(
            plain.contains("with ESMTP id 01ABC;") && !plain.contains("tls"),
            "{plain}"
        );
    }
}
