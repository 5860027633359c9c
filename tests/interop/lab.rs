//! The lab: Postern (a control plane and a worker, real processes), a DNS server and a sink of
//! the test's own, and one Postfix and one Exim instance configured for every case up front,
//! so each MTA starts once per suite.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::clients::Cli;
use super::exim::Exim;
use super::inbound::Cert;
use super::peers::{Arrival, ClientProfile, Fate, ServerProfile, poll, tls_version};
use super::pki::{Files, LabCa};
use super::postfix::Postfix;
use super::support::relay::{Seen, sink};
use super::support::{Pki, Postern};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Postfix,
    Exim,
    Cli(Cli),
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::Postfix => "Postfix",
            Peer::Exim => "Exim",
            Peer::Cli(c) => c.name(),
        }
    }

    /// A number per peer, for its addresses and names.
    pub fn number(self) -> u8 {
        match self {
            Peer::Postfix => 1,
            Peer::Exim => 2,
            Peer::Cli(Cli::Swaks) => 3,
            Peer::Cli(Cli::Openssl) => 4,
            Peer::Cli(Cli::Gnutls) => 5,
            Peer::Cli(Cli::Python) => 6,
        }
    }
}

/// The lab CA (trusted by Postern through `/v1/trust`) and the certificates made from it.
pub struct Certs {
    pub ca: LabCa,
    pub trusted: Files,
    pub untrusted: Files,
}

impl Certs {
    pub fn client(&self, cert: Cert) -> Option<&Files> {
        match cert {
            Cert::Absent => None,
            Cert::Trusted => Some(&self.trusted),
            Cert::Untrusted => Some(&self.untrusted),
        }
    }
}

/// What a section needs of the MTAs, gathered before they start.
pub struct Needs {
    /// The ports the MTAs take injected mail on (also next hops for the integrity cases).
    pub postfix_inject: u16,
    pub exim_inject: u16,
    pub postfix_clients: Vec<ClientProfile>,
    pub exim_clients: Vec<ClientProfile>,
    pub postfix_servers: Vec<ServerProfile>,
    pub exim_servers: Vec<ServerProfile>,
    /// Domains each MTA delivers into its Maildir.
    pub postfix_mailboxes: Vec<String>,
    pub exim_mailboxes: Vec<String>,
    /// Postfix transport table lines beyond the client profiles (`domain next-hop`).
    pub postfix_routes: Vec<(String, String)>,
    pub dns: Vec<(&'static str, hickory_resolver::proto::rr::RData)>,
    /// Postern's relay domains beyond `.in.test` (which goes to the sink): (domain, next hop).
    pub relay: Vec<(String, String)>,
    /// The MTAs' ports, held until just before they start so that nothing else (Postern's own
    /// listeners on port 0) is given one of them meanwhile.
    held: Vec<std::net::TcpListener>,
}

impl Needs {
    pub fn new() -> Needs {
        let mut needs = Needs {
            postfix_inject: 0,
            exim_inject: 0,
            postfix_clients: Vec::new(),
            exim_clients: Vec::new(),
            postfix_servers: Vec::new(),
            exim_servers: Vec::new(),
            postfix_mailboxes: Vec::new(),
            exim_mailboxes: Vec::new(),
            postfix_routes: Vec::new(),
            dns: Vec::new(),
            relay: Vec::new(),
            held: Vec::new(),
        };
        needs.postfix_inject = needs.port();
        needs.exim_inject = needs.port();
        needs
    }

    /// A free loopback port for an MTA, reserved until the MTAs start.
    pub fn port(&mut self) -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        self.held.push(listener);
        port
    }
}

pub struct Lab {
    pub certs: Certs,
    pub postfix: Postfix,
    pub exim: Exim,
    pub seen: Seen,
    pub sink: String,
    control: Postern,
    worker: Postern,
    /// The certificates of the control plane and its workers.
    pki: Pki,
    pub dir: tempfile::TempDir,
}

impl Lab {
    pub fn certs(dir: &std::path::Path) -> Certs {
        let ca = LabCa::new(&dir.join("lab-ca"), "Postern interop lab CA");
        // An impostor: the lab CA's name with another key. Clients that choose their certificate
        // by the CertificateRequest's CA names (GnuTLS, OpenSSL with several) present it.
        let untrusted = LabCa::new(&dir.join("other-ca"), "Postern interop lab CA");
        Certs {
            trusted: ca.client("client-trusted", &["client.lab"]),
            untrusted: untrusted.client("client-untrusted", &["client.lab"]),
            ca,
        }
    }

    pub async fn start(dir: tempfile::TempDir, certs: Certs, mut needs: Needs) -> Lab {
        let (pki, control, worker) = super::support::control_and_worker(dir.path(), "127.0.0.1:0");
        let dns = super::support::dns::dns(needs.dns.clone()).await;
        let (sink, seen) = sink(0).await;
        let smtp = worker.other.clone();
        let lab_dir = dir.path().to_path_buf();
        needs.held.clear();
        let postfix = Postfix::start(
            &lab_dir.join("postfix"),
            needs.postfix_inject,
            &smtp,
            &needs.postfix_clients,
            &needs.postfix_servers,
            &needs.postfix_mailboxes,
            &needs.postfix_routes,
        )
        .await;
        let exim = Exim::start(
            &lab_dir.join("exim"),
            needs.exim_inject,
            &smtp,
            &needs.exim_clients,
            &needs.exim_servers,
            &needs.exim_mailboxes,
        )
        .await;
        let lab = Lab {
            certs,
            postfix,
            exim,
            seen,
            sink,
            control,
            worker,
            pki,
            dir,
        };
        let mut domains = vec![
            json!({"domain": ".in.test", "next_hop": format!("[127.0.0.1]:{}", super::postfix::port_of(&lab.sink))}),
        ];
        domains.extend(
            needs
                .relay
                .iter()
                .map(|(d, h)| json!({"domain": d, "next_hop": h})),
        );
        lab.control
            .rest(
                reqwest::Method::PUT,
                "/v1/relay",
                json!({"domains": domains, "networks": ["127.0.0.0/8"]}),
            )
            .await;
        lab.control
            .rest(
                reqwest::Method::PUT,
                "/v1/trust",
                json!({"ca_pems": [lab.certs.ca.cert_pem]}),
            )
            .await;
        lab.set(
            reqwest::Method::PUT,
            "/v1/settings",
            json!({"delivery": {"nameservers": [dns.to_string()]}}),
        )
        .await;
        lab
    }

    /// Starts another worker of the lab's control plane (its own certificate and spool),
    /// with further environment variables.
    pub async fn start_worker(&self, id: &str, envs: &[(&str, &str)]) -> Postern {
        self.pki.client(id, &[id]);
        let spool = self.dir.path().join(format!("spool-{id}"));
        Postern::worker_env(
            &spool,
            &self.pki,
            &self.control.other,
            id,
            id,
            "127.0.0.1:0",
            envs,
        )
    }

    /// Waits until worker `id` enforces the current policy version.
    pub async fn worker_applied(&self, id: &str) {
        let version = self
            .rest(reqwest::Method::GET, "/v1/policy", Value::Null)
            .await["version"]
            .clone();
        let applied = poll(Duration::from_secs(30), async || {
            let workers = self
                .rest(reqwest::Method::GET, "/v1/workers", Value::Null)
                .await;
            workers["items"]
                .as_array()?
                .iter()
                .any(|w| w["id"] == id && w["applied_version"] == version && w["connected"] == true)
                .then_some(())
        })
        .await;
        assert!(
            applied.is_some(),
            "worker {id} did not apply version {version}"
        );
    }

    /// Postern's SMTP address.
    pub fn smtp(&self) -> String {
        self.worker.other.clone()
    }

    pub async fn rest(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        self.control.rest(method, path, body).await
    }

    /// A policy change, then waits until the worker enforces it.
    pub async fn set(&self, method: reqwest::Method, path: &str, body: Value) {
        self.rest(method, path, body).await;
        self.control.wait_applied().await;
    }

    /// The tracking record of message `id`, waiting up to 30 s for it (null if it never came:
    /// the cell then fails, the suite goes on).
    pub async fn message(&self, id: &str) -> Value {
        let path = format!("/v1/messages/{id}");
        poll(Duration::from_secs(30), async || {
            let (status, body) = self
                .control
                .call(reqwest::Method::GET, &path, None, None)
                .await;
            (status == 200).then_some(body)
        })
        .await
        .unwrap_or(Value::Null)
    }

    /// Tracking records found by `query`, waiting up to 10 s for the first one.
    pub async fn messages(&self, query: &str) -> Vec<Value> {
        self.list(&format!("/v1/messages?{query}")).await
    }

    pub async fn connections(&self, query: &str) -> Vec<Value> {
        self.list(&format!("/v1/connections?{query}")).await
    }

    async fn list(&self, path: &str) -> Vec<Value> {
        poll(Duration::from_secs(10), async || {
            let body = self.rest(reqwest::Method::GET, path, Value::Null).await;
            let items = body["items"].as_array().cloned().unwrap_or_default();
            (!items.is_empty()).then_some(items)
        })
        .await
        .unwrap_or_default()
    }

    /// Postern's Received header on the message it relayed to the sink as `id`.
    pub async fn received_header(&self, id: &str) -> Option<String> {
        let needle = format!(" id {id}");
        poll(Duration::from_secs(30), async || {
            self.seen.lock().unwrap().iter().find_map(|(_, m)| {
                let first = unfold_first_header(m);
                first.contains(&needle).then_some(first)
            })
        })
        .await
    }

    /// Injects one message into an MTA over SMTP; its queue id there.
    pub async fn inject(&self, peer: Peer, from: &str, rcpt: &str, message: &str) -> String {
        let addr = match peer {
            Peer::Postfix => &self.postfix.inject,
            Peer::Exim => &self.exim.inject,
            Peer::Cli(_) => unreachable!("command-line peers are not queues"),
        };
        let reply = smtp_send(addr, from, &[rcpt], message.as_bytes(), false).await;
        assert!(
            reply.starts_with("250"),
            "{} refused the injection: {reply}",
            peer.name()
        );
        super::peers::queue_id(&reply)
    }

    /// How the message from `sender` arrived at an MTA acting as next hop, from its log.
    pub async fn arrival(&self, peer: Peer, sender: &str, timeout: Duration) -> Option<Arrival> {
        match peer {
            Peer::Postfix => self.postfix.arrival(sender, timeout).await,
            Peer::Exim => self.exim.arrival(sender, timeout).await,
            Peer::Cli(_) => None,
        }
    }

    pub async fn fate(&self, peer: Peer, id: &str, rcpt: &str, timeout: Duration) -> Option<Fate> {
        match peer {
            Peer::Postfix => self.postfix.fate(id, rcpt, timeout).await,
            Peer::Exim => self.exim.fate(id, rcpt, timeout).await,
            Peer::Cli(_) => None,
        }
    }

    /// The TLS version a sending MTA logged for the cell's transport (Postfix) or message (Exim).
    pub fn client_tls(&self, peer: Peer, name: &str, id: &str) -> Option<String> {
        let line = match peer {
            Peer::Postfix => self.postfix.client_tls(name),
            Peer::Exim => self.exim.client_tls(id),
            Peer::Cli(_) => None,
        };
        line.and_then(|l| tls_version(&l))
    }
}

/// A message's first header, unfolded, each run of white space made one space.
fn unfold_first_header(message: &str) -> String {
    let end = message.find("\r\n\r\n").unwrap_or(message.len());
    let mut lines = message[..end].split("\r\n");
    let mut header = lines.next().unwrap_or("").to_string();
    for l in lines.take_while(|l| l.starts_with([' ', '\t'])) {
        header.push_str(l);
    }
    header.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One plaintext SMTP transaction: dot-stuffs `message`, asks for SMTPUTF8 when `utf8`;
/// the reply to the final dot (or the first refusal).
pub async fn smtp_send(
    addr: &str,
    from: &str,
    rcpts: &[&str],
    message: &[u8],
    utf8: bool,
) -> String {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut io = BufReader::new(tcp);
    let step = Duration::from_secs(60);
    let greeting = read_reply(&mut io, step).await;
    if !greeting.starts_with("220") {
        return greeting;
    }
    let params = if utf8 {
        " BODY=8BITMIME SMTPUTF8"
    } else {
        " BODY=8BITMIME"
    };
    let mut commands = vec![
        "EHLO injector.lab\r\n".to_string(),
        format!("MAIL FROM:<{from}>{params}\r\n"),
    ];
    commands.extend(rcpts.iter().map(|r| format!("RCPT TO:<{r}>\r\n")));
    commands.push("DATA\r\n".into());
    for c in commands {
        io.get_mut().write_all(c.as_bytes()).await.unwrap();
        let reply = read_reply(&mut io, step).await;
        if !(reply.starts_with('2') || reply.starts_with('3')) {
            return reply;
        }
    }
    let mut data = Vec::with_capacity(message.len() + 1024);
    for line in message.split_inclusive(|b| *b == b'\n') {
        if line.starts_with(b".") {
            data.push(b'.');
        }
        data.extend_from_slice(line);
    }
    if !data.ends_with(b"\r\n") {
        data.extend_from_slice(b"\r\n");
    }
    data.extend_from_slice(b".\r\n");
    io.get_mut().write_all(&data).await.unwrap();
    let reply = read_reply(&mut io, step).await;
    let _ = io.get_mut().write_all(b"QUIT\r\n").await;
    reply
}

async fn read_reply(io: &mut BufReader<tokio::net::TcpStream>, step: Duration) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        match tokio::time::timeout(step, io.read_line(&mut line)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return all,
        }
        all.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return all.trim_end().to_string();
        }
    }
}
