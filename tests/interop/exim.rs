//! An Exim 4 instance of the lab (Debian's exim4-daemon-light, GnuTLS), unpacked beside the
//! machine's Postfix (the two packages conflict; `.ci/run` unpacks the .deb). It runs from its
//! own configuration file, spool and log directory (`exim -C`). Like the Postfix instance it
//! takes injected mail on one port and sends it to Postern per recipient domain (interface,
//! TLS requirement, GnuTLS priority and client certificate looked up by domain), and it is a
//! next hop on further ports (certificate and STARTTLS behaviour looked up by port).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::peers::{Arrival, ClientProfile, ClientTls, Fate, ServerProfile, ServerTls, poll, run};

/// Where `.ci/run` unpacks the package (`EXIM` overrides it).
pub fn binary() -> PathBuf {
    std::env::var_os("EXIM").map_or_else(
        || PathBuf::from("/opt/postern-lab/exim4/usr/sbin/exim4"),
        PathBuf::from,
    )
}

pub struct Exim {
    pub dir: PathBuf,
    pub inject: String,
    /// The next-hop services: (profile name, port).
    pub servers: Vec<(String, u16)>,
}

impl Exim {
    pub async fn start(
        dir: &Path,
        inject_port: u16,
        postern: &str,
        clients: &[ClientProfile],
        servers: &[ServerProfile],
        mailbox_domains: &[String],
    ) -> Exim {
        for d in ["spool", "log", "mail"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
            run(Command::new("chown").args(["Debian-exim", &dir.join(d).display().to_string()]));
        }
        let d = dir.display();
        // Per-domain sending profiles and per-port listening profiles, as `key=value` words.
        let mut by_domain = String::new();
        for c in clients {
            let (tls, prio) = match c.tls {
                ClientTls::Never => ("never", "NORMAL"),
                ClientTls::May => ("may", "NORMAL"),
                ClientTls::MayTls12 => ("may", "NORMAL:-VERS-ALL:+VERS-TLS1.2"),
                ClientTls::RequireAes128 => (
                    "require",
                    "NORMAL:-VERS-ALL:+VERS-TLS1.2:-CIPHER-ALL:+AES-128-GCM",
                ),
            };
            let _ = write!(
                by_domain,
                "{}: ip={} tls={tls} prio={prio}",
                c.domain, c.bind_ip
            );
            if let Some(f) = &c.cert {
                let _ = write!(by_domain, " cert={} key={}", f.cert, f.key);
            }
            by_domain.push('\n');
        }
        let mut by_port = format!("{inject_port}: tls=none\n");
        let mut interfaces = format!("<; 127.0.0.1.{inject_port}");
        for s in servers {
            let _ = write!(interfaces, " ; 127.0.0.1.{}", s.port);
            let line = match &s.tls {
                ServerTls::Offer(f) => format!("tls=offer cert={} key={}", f.cert, f.key),
                ServerTls::Tls12(f) => format!(
                    "tls=offer cert={} key={} prio=NORMAL:-VERS-ALL:+VERS-TLS1.2",
                    f.cert, f.key
                ),
                ServerTls::NotOffered => "tls=none".into(),
                ServerTls::NoCertificate => {
                    format!("tls=offer cert={d}/missing.pem key={d}/missing.key")
                }
            };
            let _ = writeln!(by_port, "{}: {line}", s.port);
        }
        std::fs::write(dir.join("clients"), by_domain).unwrap();
        std::fs::write(dir.join("ports"), by_port).unwrap();
        let domain = |key: &str| {
            format!("${{extract{{{key}}}{{${{lookup{{$domain}}lsearch{{{d}/clients}}}}}}}}")
        };
        let port = |key: &str| {
            format!("${{extract{{{key}}}{{${{lookup{{$received_port}}lsearch{{{d}/ports}}}}}}}}")
        };
        let config = format!(
            "exim_path = {exim}
spool_directory = {d}/spool
log_file_path = {d}/log/%slog
primary_hostname = exim.lab
local_interfaces = {interfaces}
keep_environment =
host_lookup =
rfc1413_hosts =
smtputf8_advertise_hosts = *
message_size_limit = 50M
# Postern delivers the outbound cells at once; Exim's default (20) would refuse some.
smtp_accept_max = 200
domainlist local_domains = {locals}
tls_advertise_hosts = ${{if eq{{{tls}}}{{none}}{{}}{{*}}}}
tls_certificate = {cert}
tls_privatekey = {key}
tls_require_ciphers = ${{if eq{{{prio}}}{{}}{{NORMAL}}{{{prio}}}}}
acl_smtp_rcpt = acl_rcpt
log_selector = +tls_cipher +tls_peerdn +smtp_confirmation +received_recipients +smtp_connection +incoming_interface

begin acl
acl_rcpt:
  accept hosts = 127.0.0.0/8
  deny

begin routers
nowhere:
  driver = redirect
  domains = nowhere.test
  data = :fail: no such user here
  allow_fail
to_postern:
  driver = manualroute
  domains = lsearch;{d}/clients
  route_list = * 127.0.0.1
  self = send
  transport = to_postern
  no_more
undeliverable:
  driver = redirect
  local_parts = undeliverable
  data = :fail: mailbox unavailable
  allow_fail
local:
  driver = accept
  domains = +local_domains
  transport = mailbox

begin transports
to_postern:
  driver = smtp
  port = {postern_port}
  interface = {ip}
  hosts_avoid_tls = ${{if eq{{{ctls}}}{{never}}{{*}}{{}}}}
  hosts_require_tls = ${{if eq{{{ctls}}}{{require}}{{*}}{{}}}}
  tls_require_ciphers = {cprio}
  tls_certificate = {ccert}
  tls_privatekey = {ckey}
  connection_max_messages = 1
mailbox:
  driver = appendfile
  directory = {d}/mail
  maildir_format
  envelope_to_add = false
  return_path_add = false
  delivery_date_add = false
  user = Debian-exim

begin retry
* * F,1h,10m
",
            exim = binary().display(),
            locals = mailbox_domains.join(" : "),
            tls = port("tls"),
            cert = port("cert"),
            key = port("key"),
            prio = port("prio"),
            postern_port = super::postfix::port_of(postern),
            ip = domain("ip"),
            ctls = domain("tls"),
            cprio = domain("prio"),
            ccert = domain("cert"),
            ckey = domain("key"),
        );
        std::fs::write(dir.join("exim.conf"), config).unwrap();
        let e = Exim {
            dir: dir.to_path_buf(),
            inject: format!("127.0.0.1:{inject_port}"),
            servers: servers.iter().map(|s| (s.name.clone(), s.port)).collect(),
        };
        run(Command::new(binary()).args([
            "-C",
            &dir.join("exim.conf").display().to_string(),
            "-bd",
            "-q5s",
            "-oP",
            &dir.join("exim.pid").display().to_string(),
        ]));
        poll(Duration::from_secs(30), async || {
            e.log().contains("daemon started").then_some(())
        })
        .await
        .expect("exim's daemon starts");
        e
    }

    pub fn log(&self) -> String {
        super::peers::read_log(&self.dir.join("log/mainlog"))
    }

    /// The fate of message `id` for `rcpt`: `=>` delivered, `**` bounced, `==` deferred.
    pub async fn fate(&self, id: &str, rcpt: &str, timeout: Duration) -> Option<Fate> {
        poll(timeout, async || {
            self.log().lines().find_map(|l| {
                let rest = l.split_once(&format!(" {id} "))?.1;
                let (mark, rest) = rest.split_once(' ')?;
                if !rest.starts_with(rcpt) {
                    return None;
                }
                let text = rest.to_string();
                match mark {
                    "=>" => Some(Fate::Sent(
                        text.split("C=\"")
                            .nth(1)
                            .unwrap_or(&text)
                            .trim_end_matches('"')
                            .into(),
                    )),
                    "**" => Some(Fate::Bounced(text)),
                    "==" => Some(Fate::Deferred(text)),
                    _ => None,
                }
            })
        })
        .await
    }

    /// The `=>` line's TLS (`X=TLS1.3:...`) for message `id`, if it went over TLS.
    pub fn client_tls(&self, id: &str) -> Option<String> {
        self.log()
            .lines()
            .find(|l| l.contains(&format!(" {id} => ")) && l.contains(" X=TLS"))
            .map(str::to_string)
    }

    /// How the message from `sender` arrived here, from its `<=` line.
    pub async fn arrival(&self, sender: &str, timeout: Duration) -> Option<Arrival> {
        poll(timeout, async || {
            let log = self.log();
            let line = log
                .lines()
                .find(|l| l.contains(&format!(" <= {sender} ")))?;
            Some(Arrival {
                tls: line.split(" X=").nth(1).and_then(super::peers::tls_version),
                line: line.to_string(),
            })
        })
        .await
    }

    pub fn mailbox(&self) -> Vec<Vec<u8>> {
        maildir(&self.dir.join("mail/new"))
    }
}

impl Drop for Exim {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("exim.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

/// The messages in a Maildir's `new/`, oldest first (names start with the delivery time).
pub fn maildir(new: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(new)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().filter_map(|f| std::fs::read(f).ok()).collect()
}
