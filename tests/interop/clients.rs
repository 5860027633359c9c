//! The command-line peers: swaks (Net::SSLeay, i.e. OpenSSL), `openssl s_client`,
//! `gnutls-cli` and Python's `smtplib`/`ssl`. Each sends one message in one session and reports
//! the server's replies as it printed them, and the TLS version it negotiated.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::peers::{ClientTls, tls_version};
use super::pki::Files;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cli {
    Swaks,
    Openssl,
    Gnutls,
    Python,
}

impl Cli {
    pub fn name(self) -> &'static str {
        match self {
            Cli::Swaks => "swaks",
            Cli::Openssl => "openssl s_client",
            Cli::Gnutls => "gnutls-cli",
            Cli::Python => "Python smtplib",
        }
    }

    /// Whether it can send from a chosen address (gnutls-cli cannot bind).
    pub fn binds(self) -> bool {
        self != Cli::Gnutls
    }

    /// Whether it can speak SMTP without TLS (openssl and gnutls-cli always STARTTLS).
    pub fn plaintext(self) -> bool {
        matches!(self, Cli::Swaks | Cli::Python)
    }
}

pub struct Session<'a> {
    pub postern: &'a str,
    pub bind_ip: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub tls: ClientTls,
    pub cert: Option<&'a Files>,
}

/// What a command-line client printed.
#[derive(Debug, Default)]
pub struct Transcript {
    /// Server reply lines after the handshake (or all of them in plaintext), in order.
    pub replies: Vec<String>,
    pub tls: Option<String>,
    pub output: String,
}

impl Transcript {
    /// The `250 ... queued as` reply, or else the first 4xx/5xx reply after EHLO.
    pub fn verdict(&self) -> Option<&str> {
        self.replies
            .iter()
            .find(|r| r.contains("queued as"))
            .or_else(|| {
                self.replies
                    .iter()
                    .find(|r| r.starts_with('4') || r.starts_with('5'))
            })
            .map(String::as_str)
    }
}

const AES128: &str = "ECDHE-ECDSA-AES128-GCM-SHA256";

pub async fn send(cli: Cli, s: &Session<'_>, body: &str) -> Transcript {
    let (host, port) = s.postern.rsplit_once(':').unwrap();
    let commands = format!(
        "EHLO client.lab\r\nMAIL FROM:<{}>\r\nRCPT TO:<{}>\r\nDATA\r\n{body}.\r\nQUIT\r\n",
        s.from, s.to
    );
    let mut cmd = tokio::process::Command::new(match cli {
        Cli::Swaks => "swaks",
        Cli::Openssl => "openssl",
        Cli::Gnutls => "gnutls-cli",
        Cli::Python => "python3",
    });
    let mut feed = None;
    match cli {
        Cli::Swaks => {
            cmd.args([
                "--server",
                host,
                "--port",
                port,
                "--local-interface",
                s.bind_ip,
            ]);
            cmd.args(["--ehlo", "client.lab", "--from", s.from, "--to", s.to]);
            cmd.args(["--data", body, "--timeout", "20"]);
            match s.tls {
                ClientTls::Never => {}
                ClientTls::May => {
                    cmd.arg("--tls-optional-strict");
                }
                ClientTls::MayTls12 => {
                    cmd.args(["--tls-optional-strict", "--tls-protocol", "tlsv1_2"]);
                }
                ClientTls::RequireAes128 => {
                    cmd.args(["--tls", "--tls-protocol", "tlsv1_2", "--tls-cipher", AES128]);
                }
            }
            if let Some(f) = s.cert {
                cmd.args(["--tls-cert", &f.cert, "--tls-key", &f.key]);
            }
        }
        Cli::Openssl => {
            cmd.args([
                "s_client",
                "-starttls",
                "smtp",
                "-name",
                "client.lab",
                "-brief",
            ]);
            cmd.args(["-nocommands", "-connect", s.postern]);
            cmd.args(["-bind", &format!("{}:0", s.bind_ip)]);
            match s.tls {
                ClientTls::MayTls12 => {
                    cmd.arg("-tls1_2");
                }
                ClientTls::RequireAes128 => {
                    cmd.args(["-tls1_2", "-cipher", AES128]);
                }
                _ => {}
            }
            if let Some(f) = s.cert {
                cmd.args(["-cert", &f.cert, "-key", &f.key]);
            }
            feed = Some(commands);
        }
        Cli::Gnutls => {
            cmd.args(["--starttls-proto=smtp", "--insecure", "--port", port, host]);
            let priority = match s.tls {
                ClientTls::MayTls12 => "NORMAL:-VERS-ALL:+VERS-TLS1.2",
                ClientTls::RequireAes128 => {
                    "NORMAL:-VERS-ALL:+VERS-TLS1.2:-CIPHER-ALL:+AES-128-GCM"
                }
                _ => "NORMAL",
            };
            cmd.arg(format!("--priority={priority}"));
            if let Some(f) = s.cert {
                cmd.arg(format!("--x509certfile={}", f.cert));
                cmd.arg(format!("--x509keyfile={}", f.key));
            }
            feed = Some(commands);
        }
        Cli::Python => {
            let spec = serde_json::json!({
                "host": host, "port": port.parse::<u16>().unwrap(), "bind": s.bind_ip,
                "from": s.from, "to": s.to, "body": body,
                "tls": match s.tls {
                    ClientTls::Never => "never",
                    ClientTls::May => "may",
                    ClientTls::MayTls12 => "tls12",
                    ClientTls::RequireAes128 => "aes128",
                },
                "cert": s.cert.map(|f| &f.cert), "key": s.cert.map(|f| &f.key),
            });
            cmd.arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../tests/interop/smtp_client.py"
            ));
            cmd.arg(spec.to_string());
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{} runs: {e}", cli.name()));
    // openssl and gnutls-cli stop at the end of their input, so it stays open until the
    // server has closed the session (after QUIT or a 421).
    let mut stdin = child.stdin.take();
    match (&feed, stdin.as_mut()) {
        (Some(feed), Some(pipe)) => {
            let _ = pipe.write_all(feed.as_bytes()).await;
        }
        _ => stdin = None,
    }
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let read = async {
        let _ = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), read).await;
    drop(stdin);
    let _ = child.kill().await;
    let output = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&err)
    );
    Transcript {
        replies: replies(&output),
        tls: tls_line(&output).and_then(|l| tls_version(&l)),
        output,
    }
}

/// Reply lines, with swaks's direction markers (`<-`, `<~`, `<**`, `<~*`) taken off.
fn replies(output: &str) -> Vec<String> {
    output
        .lines()
        .map(|l| l.trim_start_matches(['<', '-', '~', '*']).trim_start())
        .filter(|l| {
            let b = l.as_bytes();
            b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit) && (b[3] == b' ' || b[3] == b'-')
        })
        .map(str::to_string)
        .collect()
}

/// The line where each tool says which protocol it negotiated.
fn tls_line(output: &str) -> Option<String> {
    output
        .lines()
        .find(|l| {
            l.contains("TLS started with cipher")
                || l.starts_with("Protocol version:")
                || l.contains("- Description: (TLS")
                || l.starts_with("TLS ")
        })
        .map(str::to_string)
}
