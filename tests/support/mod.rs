//! Helpers for end-to-end tests: run the real `postern` binary and talk to it over real sockets.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

pub mod dns;
pub mod hops;
pub mod https;
pub mod relay;

pub const BIN: &str = env!("CARGO_BIN_EXE_postern");

/// Certificates for a control plane and its workers, written as PEM files.
pub struct Pki {
    pub dir: PathBuf,
    ca: postern_tls::pki::Ca,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let ca = postern_tls::pki::Ca::new("test CA").unwrap();
        std::fs::write(dir.join("ca.pem"), &ca.cert_pem).unwrap();
        let control = ca.server(&["localhost", "127.0.0.1"]).unwrap();
        std::fs::write(dir.join("control.pem"), &control.cert_pem).unwrap();
        std::fs::write(dir.join("control.key"), &control.key_pem).unwrap();
        Pki {
            dir: dir.to_path_buf(),
            ca,
        }
    }

    /// The files `postern pki init` made in `dir` (the same names as `new`'s).
    pub fn made_by_postern(dir: &Path) -> Pki {
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        Pki {
            dir: dir.to_path_buf(),
            ca: postern_tls::pki::Ca::load(&read("ca.pem"), &read("ca.key")).unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }

    /// Issues `<file>.pem` and `<file>.key`: a server certificate for these names (the key
    /// first, as a renewal tool writes them).
    pub fn server(&self, file: &str, names: &[&str]) {
        let c = self.ca.server(names).unwrap();
        std::fs::write(self.dir.join(format!("{file}.key")), c.key_pem).unwrap();
        std::fs::write(self.dir.join(format!("{file}.pem")), c.cert_pem).unwrap();
    }

    /// Issues `<name>.pem` and `<name>.key`: a client certificate for these names.
    pub fn client(&self, file: &str, names: &[&str]) {
        let c = self.ca.client(names).unwrap();
        std::fs::write(self.dir.join(format!("{file}.pem")), c.cert_pem).unwrap();
        std::fs::write(self.dir.join(format!("{file}.key")), c.key_pem).unwrap();
    }
}

/// A running `postern` process; killed when dropped.
pub struct Postern {
    pub child: Child,
    /// `http://addr` of the REST API (control) or of /healthz etc. (worker).
    pub base: String,
    /// The gRPC address (control) or the SMTP address (worker).
    pub other: String,
    pub data_dir: PathBuf,
    /// The CA of the REST API's certificate, when it serves HTTPS.
    pub ca_pem: Option<String>,
    /// `http://addr` (dev) or `https://addr` (control) of the public listener, if any.
    pub public: Option<String>,
    /// Every line the process has logged so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Postern {
    /// Starts `postern control` on free loopback ports, with certificates from `pki`.
    pub fn control(data_dir: &Path, pki: &Pki) -> Postern {
        Postern::control_on(data_dir, pki, "127.0.0.1:0")
    }

    pub fn control_on(data_dir: &Path, pki: &Pki, grpc: &str) -> Postern {
        Postern::control_with(data_dir, pki, grpc, None)
    }

    /// `postern control` with tracking in the PostgreSQL database `database_url` if given
    /// (through POSTERN_DATABASE_URL, as operators pass a password), else in SQLite.
    pub fn control_with(
        data_dir: &Path,
        pki: &Pki,
        grpc: &str,
        database_url: Option<&str>,
    ) -> Postern {
        let args = [
            "control",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--http-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            grpc,
            "--public-listen",
            "127.0.0.1:0",
            "--tls-cert",
            &pki.path("control.pem"),
            "--tls-key",
            &pki.path("control.key"),
            "--client-ca",
            &pki.path("ca.pem"),
        ];
        let env: Vec<(&str, &str)> = database_url
            .map(|url| ("POSTERN_DATABASE_URL", url))
            .into_iter()
            .collect();
        let mut p = Postern::start_env(&args, data_dir, "grpc=", &env);
        // `postern control` serves its REST API over HTTPS with the gRPC certificate.
        p.base = p.base.replacen("http://", "https://", 1);
        p.public = p
            .public
            .take()
            .map(|b| b.replacen("http://", "https://", 1));
        p.ca_pem = Some(std::fs::read_to_string(pki.dir.join("ca.pem")).unwrap());
        p
    }

    /// Starts `postern dev` on free loopback ports (REST over plain HTTP) with `hostname`.
    pub fn dev(data_dir: &Path, hostname: &str) -> Postern {
        let args = [
            "dev",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--http-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--public-listen",
            "127.0.0.1:0",
            "--smtp-listen",
            "127.0.0.1:0",
            "--worker-http-listen",
            "127.0.0.1:0",
            "--hostname",
            hostname,
        ];
        Postern::start(&args, data_dir, "grpc=")
    }

    /// A client for the REST API (trusting its CA when it serves HTTPS).
    pub fn client(&self) -> reqwest::Client {
        postern_tls::install_crypto_provider();
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(300));
        if let Some(pem) = &self.ca_pem {
            builder = builder
                .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap());
        }
        builder.build().unwrap()
    }

    /// A REST call to this control plane as the admin; panics unless it succeeds.
    pub async fn rest(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let r = self
            .client()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.admin_token())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap_or(serde_json::Value::Null)
    }

    /// A REST call with `token` (the admin's when `None`): the status and the JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let token = token.map_or_else(|| self.admin_token(), str::to_string);
        let mut request = self
            .client()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let r = request.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Waits until a connected worker of this control plane enforces the current version.
    pub async fn wait_applied(&self) {
        let version = self
            .rest(reqwest::Method::GET, "/v1/policy", serde_json::Value::Null)
            .await["version"]
            .clone();
        eventually(
            "a worker to apply the policy",
            Duration::from_secs(30),
            || async {
                let workers = self
                    .rest(reqwest::Method::GET, "/v1/workers", serde_json::Value::Null)
                    .await;
                workers["items"]
                    .as_array()?
                    .iter()
                    .any(|w| w["applied_version"] == version && w["connected"] == true)
                    .then_some(())
            },
        )
        .await;
    }

    /// Starts `postern worker` with the client certificate `<cert>.pem` from `pki`.
    pub fn worker(spool: &Path, pki: &Pki, control_grpc: &str, id: &str, cert: &str) -> Postern {
        Postern::worker_env(spool, pki, control_grpc, id, cert, "127.0.0.1:0", &[])
    }

    /// `worker` with its SMTP listener on `smtp_listen` and further environment variables.
    pub fn worker_env(
        spool: &Path,
        pki: &Pki,
        control_grpc: &str,
        id: &str,
        cert: &str,
        smtp_listen: &str,
        envs: &[(&str, &str)],
    ) -> Postern {
        let url = format!("https://{control_grpc}");
        let args = [
            "worker",
            "--control",
            &url,
            "--worker-id",
            id,
            "--smtp-listen",
            smtp_listen,
            "--http-listen",
            "127.0.0.1:0",
            "--spool-dir",
            spool.to_str().unwrap(),
            "--tls-cert",
            &pki.path("control.pem"),
            "--tls-key",
            &pki.path("control.key"),
            "--control-ca",
            &pki.path("ca.pem"),
            "--client-cert",
            &pki.path(&format!("{cert}.pem")),
            "--client-key",
            &pki.path(&format!("{cert}.key")),
            "--hostname",
            "mx.test",
        ];
        Postern::start_env(&args, spool, "smtp=", envs)
    }

    /// Starts `postern` and waits for the line reporting its addresses (`http=`/`addr=` and
    /// the `other` key).
    pub fn start(args: &[&str], data_dir: &Path, other: &str) -> Postern {
        Postern::start_env(args, data_dir, other, &[])
    }

    /// `start` with further environment variables.
    pub fn start_env(
        args: &[&str],
        data_dir: &Path,
        other: &str,
        envs: &[(&str, &str)],
    ) -> Postern {
        let mut command = Command::new(BIN);
        command.args(args).envs(envs.iter().copied());
        Postern::start_command(command, data_dir, other)
    }

    /// `postern` in network namespace `netns` (`ip netns exec`, which execs it: signals reach
    /// it as usual).
    pub fn start_netns(netns: &str, args: &[&str], data_dir: &Path, other: &str) -> Postern {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", netns, BIN]).args(args);
        Postern::start_command(command, data_dir, other)
    }

    /// Runs `command` (a `postern` invocation) and waits for its addresses.
    fn start_command(mut command: Command, data_dir: &Path, other: &str) -> Postern {
        // The tests' own HTTPS clients need the process's rustls provider too.
        postern_tls::install_crypto_provider();
        let mut child = command
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("postern starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let other_key = other.to_string();
        let echo = std::env::var_os("POSTERN_TEST_LOG").is_some();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let kept = log.clone();
        std::thread::spawn(move || {
            let field = |line: &str, key: &str| {
                line.split(key)
                    .nth(1)
                    .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
            };
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("[postern] {line}");
                }
                kept.lock().unwrap().push(line.clone());
                let http = field(&line, " addr=").or_else(|| field(&line, " http="));
                if let (Some(http), Some(other)) = (http, field(&line, &other_key)) {
                    let public = field(&line, " public=").filter(|p| p != "none");
                    let _ = tx.send((http, other, public));
                }
            }
        });
        let (http, other, public) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("postern reports its addresses");
        Postern {
            child,
            base: format!("http://{http}"),
            other,
            data_dir: data_dir.to_path_buf(),
            ca_pem: None,
            public: public.map(|p| format!("http://{p}")),
            log,
        }
    }

    /// How many logged lines contain `needle`.
    pub fn logged(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin-token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// SIGTERM, then the exit status; panics if the process has not exited within 30 s.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "postern did not exit within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(mut self) {
        self.kill_now();
    }

    /// SIGKILL, keeping the handle (for a restarted process to replace).
    pub fn kill_now(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Postern {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A control plane and one worker `w` (SMTP on `smtp_listen`) under `dir`: certificates in
/// `tls/`, the control plane's data in `control/`, the worker's spool in `spool/`.
pub fn control_and_worker(dir: &Path, smtp_listen: &str) -> (Pki, Postern, Postern) {
    control_and_worker_env(dir, smtp_listen, &[])
}

/// `control_and_worker` with further environment variables for the worker.
pub fn control_and_worker_env(
    dir: &Path,
    smtp_listen: &str,
    envs: &[(&str, &str)],
) -> (Pki, Postern, Postern) {
    let pki = Pki::new(&dir.join("tls"));
    pki.client("w", &["w"]);
    let control = Postern::control(&dir.join("control"), &pki);
    let spool = dir.join("spool");
    let worker = Postern::worker_env(&spool, &pki, &control.other, "w", "w", smtp_listen, envs);
    (pki, control, worker)
}

/// Runs `postern` expecting it to exit at once; returns (exit code, stderr).
pub fn run_to_exit(args: &[&str], envs: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let out = child.wait_with_output().unwrap();
    assert!(Instant::now() < deadline);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether the test runs as root (its effective user id, from /proc).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// A deterministic generator for test randomness; the seed is printed so a failure replays.
pub struct Rng(u64);

impl Rng {
    pub fn from_env() -> Rng {
        let seed = std::env::var("POSTERN_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("random seed: {seed} (set POSTERN_TEST_SEED={seed} to replay)");
        Rng(seed | 1)
    }

    /// xorshift64*.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads the SMTP greeting (the first line) of a server.
pub async fn smtp_greeting(addr: &str) -> String {
    use tokio::io::AsyncBufReadExt;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut lines = tokio::io::BufReader::new(stream).lines();
    tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap_or_default()
}

/// The queued messages of a worker's spool as a restart would find them, each as it is spooled:
/// an envelope line, then the message.
pub fn queued_messages(spool: &Path) -> Vec<String> {
    let mut messages: Vec<String> = postern_worker::spool::Spool::messages(spool)
        .unwrap_or_default()
        .into_iter()
        .map(|(envelope, body)| {
            serde_json::to_string(&envelope).unwrap() + "\n" + &String::from_utf8_lossy(&body)
        })
        .collect();
    messages.sort();
    messages
}

/// A small tmpfs mounted over a directory (root only), unmounted when dropped however the test
/// ends. Without root it says why and gives `None`, except under CI, which runs as root and
/// must run the test.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        let why = match out {
            Ok(out) if out.status.success() => return Some(Tmpfs(dir.to_path_buf())),
            Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
            Err(e) => format!("cannot run mount: {e}"),
        };
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and must mount a tmpfs: {why}"
        );
        eprintln!("SKIPPED: cannot mount a small tmpfs (needs root): {why}");
        None
    }

    /// Fills the file system to the last byte.
    pub fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.join("filler")).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        while f.write_all(&[0u8]).is_ok() {}
        let _ = f.sync_all();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
