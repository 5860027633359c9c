//! A Postfix instance of the lab's own (Debian's Postfix 3.7, OpenSSL): its own configuration
//! directory, queue, data directory and maillog, never the machine's default instance. It
//! accepts injected mail on one port and sends it to Postern per recipient domain through a
//! transport of its own (bind address and TLS settings as an operator sets them in master.cf),
//! and it is a next hop on further ports (one smtpd service per TLS behaviour), delivering into
//! one Maildir.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::peers::{Arrival, ClientProfile, ClientTls, Fate, ServerProfile, ServerTls, poll, run};

pub struct Postfix {
    pub dir: PathBuf,
    pub inject: String,
}

impl Postfix {
    /// Configures and starts the instance. `postern` is Postern's SMTP address; mail for
    /// `mailbox_domains` is delivered here.
    pub async fn start(
        dir: &Path,
        inject_port: u16,
        postern: &str,
        clients: &[ClientProfile],
        servers: &[ServerProfile],
        mailbox_domains: &[String],
        extra_transports: &[(String, String)],
    ) -> Postfix {
        let etc = dir.join("etc");
        for d in ["etc", "spool", "data", "mail"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        run(Command::new("chown").args(["postfix", &dir.join("data").display().to_string()]));
        run(Command::new("chown").args(["nobody:nogroup", &dir.join("mail").display().to_string()]));
        let d = dir.display();
        let main = format!(
            "compatibility_level = 3.6
queue_directory = {d}/spool
data_directory = {d}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.lab
mydomain = lab
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
alias_maps =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_peername_lookup = no
# Mail for nowhere.test is bounced by Postfix's error transport after it is queued.
smtpd_reject_unlisted_recipient = no
maillog_file_prefixes = {d}
maillog_file = {d}/maillog
message_size_limit = 52428800
virtual_mailbox_limit = 0
smtputf8_enable = yes
local_header_rewrite_clients =
transport_maps = texthash:{d}/etc/transport
smtp_tls_loglevel = 1
smtpd_tls_loglevel = 1
smtp_tls_security_level = may
virtual_mailbox_domains = {domains}
virtual_mailbox_base = {d}/mail
virtual_mailbox_maps = static:box/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
minimal_backoff_time = 300s
",
            domains = mailbox_domains.join(" "),
        );
        std::fs::write(etc.join("main.cf"), main).unwrap();

        let mut master = format!("127.0.0.1:{inject_port} inet n - n - - smtpd\n");
        for s in servers {
            let _ = write!(
                master,
                "127.0.0.1:{} inet n - n - - smtpd -o syslog_name=nh/{}",
                s.port, s.name
            );
            match &s.tls {
                ServerTls::Offer(f) | ServerTls::Tls12(f) => {
                    let _ = write!(
                        master,
                        " -o smtpd_tls_security_level=may -o smtpd_tls_chain_files={},{}",
                        f.key, f.cert
                    );
                    if matches!(s.tls, ServerTls::Tls12(_)) {
                        master.push_str(" -o smtpd_tls_protocols=!TLSv1.3");
                    }
                }
                ServerTls::NotOffered => master.push_str(" -o smtpd_tls_security_level=none"),
                ServerTls::NoCertificate => {
                    let _ = write!(
                        master,
                        " -o smtpd_tls_security_level=may -o smtpd_tls_chain_files={d}/missing.pem"
                    );
                }
            }
            master.push('\n');
        }
        let mut transport = String::new();
        for c in clients {
            let _ = write!(
                master,
                "t_{n} unix - - n - - smtp -o syslog_name=lab/{n} -o smtp_bind_address={ip}",
                n = c.name,
                ip = c.bind_ip
            );
            let level = match c.tls {
                ClientTls::Never => "none",
                ClientTls::May | ClientTls::MayTls12 => "may",
                ClientTls::RequireAes128 => "encrypt",
            };
            let _ = write!(master, " -o smtp_tls_security_level={level}");
            match c.tls {
                ClientTls::MayTls12 => master.push_str(" -o smtp_tls_protocols=!TLSv1.3"),
                // A peer without 256-bit suites: the medium list cut down to one suite.
                ClientTls::RequireAes128 => master.push_str(
                    " -o smtp_tls_mandatory_protocols=!TLSv1.3 -o smtp_tls_mandatory_ciphers=medium -o tls_medium_cipherlist=ECDHE-ECDSA-AES128-GCM-SHA256",
                ),
                _ => {}
            }
            if let Some(f) = &c.cert {
                let _ = write!(master, " -o smtp_tls_chain_files={},{}", f.key, f.cert);
            }
            master.push('\n');
            let _ = writeln!(
                transport,
                "{} t_{}:[127.0.0.1]:{}",
                c.domain,
                c.name,
                port_of(postern)
            );
        }
        for (domain, next_hop) in extra_transports {
            let _ = writeln!(transport, "{domain} {next_hop}");
        }
        master.push_str(include_str!("postfix-master.cf"));
        std::fs::write(etc.join("master.cf"), master).unwrap();
        std::fs::write(etc.join("transport"), transport).unwrap();

        let p = Postfix {
            dir: dir.to_path_buf(),
            inject: format!("127.0.0.1:{inject_port}"),
        };
        p.postfix("start");
        let log = dir.join("maillog");
        poll(Duration::from_secs(30), async || {
            super::peers::read_log(&log)
                .contains("daemon started")
                .then_some(())
        })
        .await
        .expect("postfix's master starts");
        p
    }

    fn postfix(&self, verb: &str) {
        run(Command::new("postfix").args([
            "-c",
            &self.dir.join("etc").display().to_string(),
            verb,
        ]));
    }

    pub fn log(&self) -> String {
        super::peers::read_log(&self.dir.join("maillog"))
    }

    /// The final or deferred fate of the message Postfix queued as `qid`, for `rcpt`.
    pub async fn fate(&self, qid: &str, rcpt: &str, timeout: Duration) -> Option<Fate> {
        let prefix = format!("{qid}: to=<{rcpt}>");
        poll(timeout, async || {
            self.log()
                .lines()
                .filter(|l| l.contains(&prefix))
                .find_map(|l| {
                    let (status, text) = l.split_once(", status=")?.1.split_once(' ')?;
                    let text = text
                        .trim_start_matches('(')
                        .trim_end_matches(')')
                        .to_string();
                    match status {
                        "sent" => Some(Fate::Sent(text)),
                        "deferred" => Some(Fate::Deferred(text)),
                        "bounced" => Some(Fate::Bounced(text)),
                        _ => None,
                    }
                })
        })
        .await
    }

    /// The TLS line Postfix logged for the transport `name` (one message each), if any.
    pub fn client_tls(&self, name: &str) -> Option<String> {
        let tag = format!(" lab/{name}/smtp[");
        self.log()
            .lines()
            .rfind(|l| l.contains(&tag) && l.contains("TLS connection established"))
            .map(str::to_string)
    }

    /// How the message from `sender` arrived at one of the next-hop services: the smtpd
    /// process that logged its queue id, and whether that session had TLS.
    pub async fn arrival(&self, sender: &str, timeout: Duration) -> Option<Arrival> {
        poll(timeout, async || {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let from = format!(": from=<{sender}>");
            let qid = lines
                .iter()
                .find(|l| l.contains(&from))?
                .split(": from=")
                .next()?
                .rsplit(' ')
                .next()?
                .to_string();
            let client = format!(": {qid}: client=");
            let at = lines.iter().position(|l| l.contains(&client))?;
            let process = lines[at]
                .split(": ")
                .next()?
                .rsplit(' ')
                .next()?
                .to_string();
            let session = lines[..at]
                .iter()
                .rev()
                .take_while(|l| !(l.contains(&process) && l.contains(": connect from")))
                .filter(|l| l.contains(&process))
                .find(|l| l.contains("TLS connection established"));
            Some(Arrival {
                tls: session.and_then(|l| super::peers::tls_version(l)),
                line: session.unwrap_or(&lines[at]).to_string(),
            })
        })
        .await
    }

    /// Messages delivered to the Maildir, oldest first.
    pub fn mailbox(&self) -> Vec<Vec<u8>> {
        super::exim::maildir(&self.dir.join("mail/box/new"))
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .args(["-c", &self.dir.join("etc").display().to_string(), "stop"])
            .output();
    }
}

pub fn port_of(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap()
}
