//! A relaying worker and a scripted next hop, for the outbound and queue tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::{Pki, Postern};

/// Tests never use the system resolver: delivery's nameserver is a closed port.
pub const NO_DNS: &str = "127.0.0.1:9";

/// What the sink saw: (recipients, message) per accepted message.
pub type Seen = Arc<Mutex<Vec<(Vec<String>, String)>>>;

/// Transactions (MAIL to the final reply) open at a sink now, and the most at once. Counted
/// from MAIL rather than from accept, because a client may open its next connection as soon as
/// it has sent QUIT, before the sink has read it (Postfix does not wait for the QUIT reply).
pub struct Open {
    pub now: std::sync::atomic::AtomicUsize,
    pub most: std::sync::atomic::AtomicUsize,
    /// Connections accepted (the next hop's own count of sessions).
    pub sessions: std::sync::atomic::AtomicUsize,
    /// Every RCPT TO address, in order.
    pub rcpts: Mutex<Vec<String>>,
    /// A message with a `hold...` recipient waits for a permit here before its final reply.
    pub gate: tokio::sync::Semaphore,
}

impl Default for Open {
    fn default() -> Self {
        Open {
            now: Default::default(),
            most: Default::default(),
            sessions: Default::default(),
            rcpts: Default::default(),
            gate: tokio::sync::Semaphore::new(0),
        }
    }
}

impl Open {
    /// How many times `address` was given in RCPT TO.
    pub fn rcpt_count(&self, address: &str) -> usize {
        self.rcpts
            .lock()
            .unwrap()
            .iter()
            .filter(|r| *r == address)
            .count()
    }

    pub fn sessions(&self) -> usize {
        self.sessions.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A plaintext SMTP sink: refuses recipients whose local part starts with `bad` (550) and
/// defers those starting with `later` (450), answers the first `tempfail` messages' final dot
/// with 451, accepts the rest.
pub async fn sink(tempfail: usize) -> (String, Seen) {
    let (addr, seen, _) = sink_counting(tempfail).await;
    (addr, seen)
}

/// `sink`, also counting its concurrent transactions.
pub async fn sink_counting(tempfail: usize) -> (String, Seen, Arc<Open>) {
    sink_with(tempfail, None).await
}

/// `sink` listening on `addr`, offering STARTTLS with `tls` (certificate and key, PEM).
pub async fn tls_sink_on(addr: &str, tls: (String, String)) -> (String, Seen) {
    let (addr, seen, _) = sink_at(addr, 0, Some(tls)).await;
    (addr, seen)
}

/// `sink` listening on `addr`.
pub async fn sink_on(addr: &str) -> (String, Seen) {
    let (addr, seen, _) = sink_at(addr, 0, None).await;
    (addr, seen)
}

/// `sink`, offering STARTTLS with `tls` (a certificate and key, PEM) when given.
pub async fn sink_with(
    tempfail: usize,
    tls: Option<(String, String)>,
) -> (String, Seen, Arc<Open>) {
    sink_at("127.0.0.1:0", tempfail, tls).await
}

async fn sink_at(
    addr: &str,
    tempfail: usize,
    tls: Option<(String, String)>,
) -> (String, Seen, Arc<Open>) {
    postern_tls::install_crypto_provider();
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let sink = Arc::new(Sink {
        seen: Seen::default(),
        failures: Mutex::new(tempfail),
        open: Arc::default(),
        tls: tls.map(|(cert, key)| {
            let config = postern_tls::server_config(&cert, &key).unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        }),
    });
    let (seen, open) = (sink.seen.clone(), sink.open.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let sink = sink.clone();
            sink.open
                .sessions
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut lines = BufReader::new(tcp);
                let _ = lines.get_mut().write_all(b"220 sink.test ESMTP\r\n").await;
                if sink.session(&mut lines, false).await == Next::StartTls {
                    // Whatever the client sent after STARTTLS is dropped with the buffer.
                    let tcp = lines.into_inner();
                    let acceptor = sink.tls.clone().unwrap();
                    if let Ok(stream) = acceptor.accept(tcp).await {
                        sink.session(&mut BufReader::new(stream), true).await;
                    }
                }
            });
        }
    });
    (addr, seen, open)
}

struct Sink {
    seen: Seen,
    failures: Mutex<usize>,
    open: Arc<Open>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

#[derive(PartialEq)]
enum Next {
    Done,
    StartTls,
}

/// A transaction open at the sink, for `Open`.
struct Transaction(Arc<Open>);

impl Transaction {
    fn start(open: &Arc<Open>) -> Transaction {
        use std::sync::atomic::Ordering::SeqCst;
        let now = open.now.fetch_add(1, SeqCst) + 1;
        open.most.fetch_max(now, SeqCst);
        Transaction(open.clone())
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Sink {
    async fn session<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: &mut BufReader<S>,
        in_tls: bool,
    ) -> Next {
        let mut transaction: Option<Transaction> = None;
        let mut rcpts = Vec::new();
        loop {
            let mut line = String::new();
            if io.read_line(&mut line).await.unwrap_or(0) == 0 {
                return Next::Done;
            }
            let upper = line.to_ascii_uppercase();
            let reply = if upper.starts_with("EHLO") {
                if self.tls.is_some() && !in_tls {
                    "250-sink.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n".to_string()
                } else {
                    "250-sink.test\r\n250 8BITMIME\r\n".to_string()
                }
            } else if upper.starts_with("STARTTLS") && self.tls.is_some() && !in_tls {
                let _ = io
                    .get_mut()
                    .write_all(b"220 2.0.0 Ready to start TLS\r\n")
                    .await;
                let _ = io.get_mut().flush().await;
                return Next::StartTls;
            } else if upper.starts_with("MAIL") {
                rcpts.clear();
                drop(transaction.replace(Transaction::start(&self.open)));
                "250 2.1.0 Ok\r\n".into()
            } else if upper.starts_with("RCPT") {
                let to = line
                    .split('<')
                    .nth(1)
                    .unwrap_or("")
                    .split('>')
                    .next()
                    .unwrap_or("")
                    .to_string();
                self.open.rcpts.lock().unwrap().push(to.clone());
                if to.starts_with("bad") {
                    format!("550 5.1.1 <{to}>: Recipient address rejected: User unknown\r\n")
                } else if to.starts_with("later") {
                    format!("450 4.2.0 <{to}>: Recipient address rejected: try later\r\n")
                } else {
                    rcpts.push(to);
                    "250 2.1.5 Ok\r\n".into()
                }
            } else if upper.starts_with("DATA") {
                let _ = io.get_mut().write_all(b"354 go ahead\r\n").await;
                let _ = io.get_mut().flush().await;
                let mut data = Vec::new();
                while !data.ends_with(b"\r\n.\r\n") {
                    let mut b = [0u8; 1];
                    if io.read(&mut b).await.unwrap_or(0) == 0 {
                        return Next::Done;
                    }
                    data.push(b[0]);
                }
                // A little slow, so that concurrent deliveries overlap here.
                tokio::time::sleep(Duration::from_millis(30)).await;
                if rcpts.iter().any(|r| r.starts_with("hold")) {
                    self.open.gate.acquire().await.unwrap().forget();
                }
                // Ends before the reply: the client may move on once it has it.
                drop(transaction.take());
                let mut f = self.failures.lock().unwrap();
                if *f > 0 {
                    *f -= 1;
                    "451 4.3.0 try again later\r\n".into()
                } else {
                    self.seen
                        .lock()
                        .unwrap()
                        .push((rcpts.clone(), String::from_utf8_lossy(&data).into_owned()));
                    "250 2.0.0 Ok: queued as SINK\r\n".into()
                }
            } else if upper.starts_with("QUIT") {
                let _ = io.get_mut().write_all(b"221 2.0.0 Bye\r\n").await;
                let _ = io.get_mut().flush().await;
                return Next::Done;
            } else {
                "250 2.0.0 Ok\r\n".into()
            };
            if io.get_mut().write_all(reply.as_bytes()).await.is_err() {
                return Next::Done;
            }
            let _ = io.get_mut().flush().await;
        }
    }
}

pub struct Relay {
    pub control: Postern,
    pub worker: Postern,
    pub pki: Pki,
    pub dir: tempfile::TempDir,
}

impl Relay {
    /// A worker relaying `partner.example` to `sink` (`127.0.0.1:port`).
    pub async fn start(sink: &str, settings: Value) -> Relay {
        Relay::start_with(
            &[("partner.example", sink)],
            settings,
            tempfile::tempdir().unwrap(),
            &[],
        )
        .await
    }

    /// A worker under `dir` (its spool in `dir/spool`) with `envs`, relaying each
    /// (domain, `127.0.0.1:port`) of `routes`; loopback clients may relay anywhere.
    pub async fn start_with(
        routes: &[(&str, &str)],
        settings: Value,
        dir: tempfile::TempDir,
        envs: &[(&str, &str)],
    ) -> Relay {
        let (pki, control, worker) = super::control_and_worker_env(dir.path(), "127.0.0.1:0", envs);
        let r = Relay {
            control,
            worker,
            pki,
            dir,
        };
        let domains: Vec<Value> = routes
            .iter()
            .map(|(domain, addr)| {
                let port = addr.rsplit(':').next().unwrap();
                json!({"domain": domain, "next_hop": format!("[127.0.0.1]:{port}")})
            })
            .collect();
        let relay = json!({"domains": domains, "networks": ["127.0.0.0/8"]});
        r.rest(reqwest::Method::PUT, "/v1/relay", relay).await;
        r.rest(reqwest::Method::PUT, "/v1/settings", settings).await;
        r.control.wait_applied().await;
        r
    }

    pub async fn rest(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        self.control.rest(method, path, body).await
    }

    pub async fn send(&self, rcpts: &[&str]) -> String {
        let message = "Subject: relayed\r\nMessage-ID: <m1@sender.example>\r\n\r\n..dotted\r\n";
        send_raw(&self.worker.other, "alice@sender.example", rcpts, message).await
    }

    /// `GET /v1/queue`: the queued messages as the API lists them.
    pub async fn listing(&self) -> Vec<Value> {
        self.rest(reqwest::Method::GET, "/v1/queue", Value::Null)
            .await["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The last reply recorded for `recipient` in the queue listing, once there is one.
    pub async fn last_reply(&self, recipient: &str) -> Option<String> {
        self.listing().await.iter().find_map(|m| {
            m["recipients"].as_array()?.iter().find_map(|r| {
                (r["address"] == recipient)
                    .then(|| r["last_reply"].as_str().map(str::to_string))
                    .flatten()
            })
        })
    }

    /// The queued messages: (envelope, message).
    pub fn queue(&self) -> Vec<(Value, String)> {
        super::queued_messages(&self.worker.data_dir)
            .into_iter()
            .map(|f| {
                let (env, msg) = f.split_once('\n').unwrap();
                (serde_json::from_str(env).unwrap(), msg.to_string())
            })
            .collect()
    }
}

/// Sends one message over a raw socket (pipelining nothing, in plaintext); `message` is
/// already dot-stuffed. Panics unless it is queued; its queue id.
pub async fn send_raw(smtp: &str, from: &str, rcpts: &[&str], message: &str) -> String {
    let mut io = BufReader::new(tokio::net::TcpStream::connect(smtp).await.unwrap());
    let mut commands = vec![
        "EHLO client.example\r\n".to_string(),
        format!("MAIL FROM:<{from}>\r\n"),
    ];
    commands.extend(rcpts.iter().map(|r| format!("RCPT TO:<{r}>\r\n")));
    commands.push("DATA\r\n".into());
    commands.push(format!("{message}.\r\n"));
    let mut reply = read_reply(&mut io).await;
    for command in commands {
        io.get_mut().write_all(command.as_bytes()).await.unwrap();
        reply = read_reply(&mut io).await;
    }
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    reply.trim_end().rsplit(' ').next().unwrap().to_string()
}

/// One reply, every line of it.
async fn read_reply<S: AsyncRead + Unpin>(io: &mut BufReader<S>) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        io.read_line(&mut line).await.unwrap();
        all.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return all;
        }
    }
}
