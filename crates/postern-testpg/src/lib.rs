//! A real PostgreSQL for tests (docs/src/development.md): Debian's server
//! (`/usr/lib/postgresql/<version>/bin`), initialised in a temporary directory and listening on
//! a port of its own on loopback, as the `postgres` user when the tests run as root (the server
//! refuses to run as root). A test binary starts one server (`shared`) and gives each test a
//! database of its own; a test that stops the server starts its own (`Server::start`).
//!
//! A watchdog shell stops the server and removes its directory when the test process exits,
//! however it exits. Without the server binaries the tests that need them are skipped with
//! their reason, except in CI (`CI` set), where that is a failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The superuser the tests connect as (trust authentication on loopback).
pub const USER: &str = "postern";

pub struct Server {
    bin: PathBuf,
    data: PathBuf,
    /// Removed by the watchdog, not by drop (the server may still be writing to it).
    _root: PathBuf,
    pub port: u16,
    child: Option<Child>,
    run_as_postgres: bool,
}

/// The directory of the newest installed server, if any.
fn server_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Why PostgreSQL tests cannot run here, if they cannot (a failure in CI).
pub fn unavailable() -> Option<String> {
    let why = if server_bin().is_none() {
        "PostgreSQL's server is not installed (apt-get install postgresql; .ci/run does)"
    } else {
        return None;
    };
    if std::env::var_os("CI").is_some() {
        panic!("{why}: CI must run the PostgreSQL tests");
    }
    Some(why.to_string())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Server {
    /// Initialises and starts a server of its own; `None` (with the reason printed) where
    /// PostgreSQL is not installed outside CI.
    pub fn start() -> Option<Server> {
        if let Some(why) = unavailable() {
            eprintln!("skipped: {why}");
            return None;
        }
        let bin = server_bin().expect("checked");
        let run_as_postgres = is_root();
        let root = tempfile::Builder::new()
            .prefix("postern-pg")
            .tempdir()
            .expect("a temporary directory")
            .keep();
        let data = root.join("data");
        if run_as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&root)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown {} to postgres", root.display());
        }
        let mut server = Server {
            bin,
            data,
            _root: root,
            port: free_port(),
            child: None,
            run_as_postgres,
        };
        let init = server
            .command("initdb")
            .args(["-A", "trust", "-U", USER, "--no-sync", "-E", "UTF8", "-D"])
            .arg(&server.data)
            .stdout(Stdio::null())
            .output()
            .expect("initdb runs");
        assert!(
            init.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        server.run();
        Some(server)
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// Starts the server on its data directory and waits until it answers.
    fn run(&mut self) {
        self.run_once();
        assert!(
            self.wait_ready(Duration::from_secs(60)),
            "PostgreSQL did not answer on port {}",
            self.port
        );
    }

    fn run_once(&mut self) {
        let postgres = self.bin.join("postgres");
        let root = self._root.display().to_string();
        // The watchdog: the server stops (and its directory goes) once this process is gone
        // (looked for in /proc: as the postgres user, it may not signal a root process).
        let script = format!(
            "{pg} -D {data} -p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c max_connections=200 -c shared_buffers=64MB & pg=$!; \
             while [ -d /proc/{me} ] && kill -0 $pg 2>/dev/null; do sleep 1; done; \
             kill -INT $pg 2>/dev/null; wait $pg; [ -d /proc/{me} ] || rm -rf {root}",
            pg = postgres.display(),
            data = self.data.display(),
            port = self.port,
            me = std::process::id(),
        );
        let mut c = if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh", "-c", &script]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &script]);
            c
        };
        let child = c
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres starts");
        self.child = Some(child);
    }

    /// Starts the server again after `kill`: a new postmaster may find the old one's shared
    /// memory still held by its dying backends for a moment, and then exits; it is tried again.
    pub fn restart(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.run_once();
            if self.wait_ready(Duration::from_secs(10)) {
                return;
            }
            assert!(Instant::now() < deadline, "PostgreSQL did not start again");
            self.kill();
        }
    }

    /// Whether the server answers within `within`, or its process is gone.
    fn wait_ready(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if postgres::Client::connect(&self.url("postgres"), postgres::NoTls).is_ok() {
                return true;
            }
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| c.try_wait().ok().flatten().is_some());
            if exited || Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The URL of `database`.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{USER}@127.0.0.1:{}/{database}?connect_timeout=5",
            self.port
        )
    }

    /// A new empty database; its URL.
    pub fn database(&self) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut c =
            postgres::Client::connect(&self.url("postgres"), postgres::NoTls).expect("connect");
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        self.url(&name)
    }

    /// The postmaster's process id.
    fn pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Kills the server with SIGKILL (a crash: no checkpoint, no goodbye to clients) and waits
    /// until it is gone.
    pub fn kill(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        // Its backends outlive the postmaster briefly; the next start waits for the port.
        let _ = std::fs::remove_file(self.data.join("postmaster.pid"));
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }
}

/// The server shared by a test binary's tests (started on first use), or `None` where
/// PostgreSQL is not installed outside CI.
pub fn shared() -> Option<&'static Server> {
    static SERVER: OnceLock<Option<Server>> = OnceLock::new();
    SERVER.get_or_init(Server::start).as_ref()
}

/// A fresh database on the shared server.
pub fn database() -> Option<String> {
    shared().map(Server::database)
}
