//! HAProxy from Debian in front of a Postern worker, as the L4 load balancer of a deployment:
//! one frontend sending PROXY protocol version 2 and one sending version 1, started once.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Haproxy {
    child: Child,
    /// `127.0.0.1:port` of the frontend that sends version 2 headers.
    pub v2: String,
    /// ... and version 1.
    pub v1: String,
}

impl Haproxy {
    /// Starts HAProxy forwarding both frontends to `backend` (`127.0.0.1:port`).
    pub async fn start(dir: &Path, backend: &str) -> Haproxy {
        std::fs::create_dir_all(dir).unwrap();
        let port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (v2, v1) = (
            format!("127.0.0.1:{}", port()),
            format!("127.0.0.1:{}", port()),
        );
        let config = format!(
            "global\n  maxconn 256\n\
             defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
             frontend smtp_v2\n  bind {v2}\n  default_backend postern_v2\n\
             backend postern_v2\n  server w {backend} send-proxy-v2\n\
             frontend smtp_v1\n  bind {v1}\n  default_backend postern_v1\n\
             backend postern_v1\n  server w {backend} send-proxy\n"
        );
        let file = dir.join("haproxy.cfg");
        std::fs::write(&file, config).unwrap();
        super::peers::run(Command::new("haproxy").args(["-c", "-f"]).arg(&file));
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy starts");
        for addr in [&v2, &v1] {
            super::peers::poll(Duration::from_secs(10), async || {
                tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
            })
            .await
            .unwrap_or_else(|| panic!("HAProxy listens on {addr}"));
        }
        Haproxy { child, v2, v1 }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
