//! Names in certificates.

use std::net::IpAddr;

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// Whether `name` (a DNS name or an IP address) is exactly one of the certificate's subject
/// alternative names. Used to check that a worker's `--worker-id` is a name in its client
/// certificate; a wildcard name never counts, so one certificate for `*.workers.example` cannot
/// claim every worker id under it.
pub fn certificate_has_name(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return false;
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return false;
    };
    let ip: Option<IpAddr> = name.parse().ok();
    let dns = name.strip_suffix('.').unwrap_or(name);
    san.value.general_names.iter().any(|general| match general {
        GeneralName::DNSName(d) => {
            !d.contains('*')
                && ip.is_none()
                && d.strip_suffix('.').unwrap_or(d).eq_ignore_ascii_case(dns)
        }
        GeneralName::IPAddress(bytes) => match ip {
            Some(IpAddr::V4(a)) => *bytes == a.octets(),
            Some(IpAddr::V6(a)) => *bytes == a.octets(),
            None => false,
        },
        _ => false,
    })
}
