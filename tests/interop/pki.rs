//! The lab's own certificates, written as PEM files the MTAs read: a CA whose certificate goes
//! into `/v1/trust`, and the kinds of certificate real peers present (valid, self-signed, for
//! the wrong name, expired, a client certificate from a CA nobody trusts).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

pub struct LabCa {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
    dir: PathBuf,
}

/// Files of one certificate: `<name>.pem` (the certificate) and `<name>.key`.
#[derive(Clone, Debug)]
pub struct Files {
    pub cert: String,
    pub key: String,
}

fn params(cn: &str, names: &[&str]) -> CertificateParams {
    let mut p =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p
}

impl LabCa {
    pub fn new(dir: &Path, cn: &str) -> LabCa {
        std::fs::create_dir_all(dir).unwrap();
        let mut p = params(cn, &[]);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        LabCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(p, key),
            dir: dir.to_path_buf(),
        }
    }

    fn write(&self, file: &str, cert_pem: &str, key: &KeyPair) -> Files {
        let files = Files {
            cert: self.dir.join(format!("{file}.pem")).display().to_string(),
            key: self.dir.join(format!("{file}.key")).display().to_string(),
        };
        std::fs::write(&files.cert, cert_pem).unwrap();
        // MTAs read their keys after dropping privileges (Exim as Debian-exim); the lab's keys
        // are throwaway test keys.
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    fn issue(&self, file: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Files {
        let mut p = params(names[0], names);
        p.extended_key_usages = vec![usage];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        self.write(file, &cert.pem(), &key)
    }

    pub fn server(&self, file: &str, names: &[&str]) -> Files {
        self.issue(file, names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    pub fn client(&self, file: &str, names: &[&str]) -> Files {
        self.issue(file, names, ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// Signed by this CA for the right name, but its validity ended in 2021.
    pub fn expired(&self, file: &str, names: &[&str]) -> Files {
        let mut p = params(names[0], names);
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        self.write(file, &cert.pem(), &key)
    }

    pub fn self_signed(&self, file: &str, names: &[&str]) -> Files {
        let key = KeyPair::generate().unwrap();
        let cert = params(names[0], names).self_signed(&key).unwrap();
        self.write(file, &cert.pem(), &key)
    }
}
