//! Several hosts on one machine (issue 13 point 2), in network namespaces joined by veth pairs
//! and two bridges: a mail network (10.77.0.0/24: HAProxy, three workers on port 25, two
//! clients, and this test's next hop) and a control network (10.78.0.0/24: the control plane
//! and the workers' second interfaces). HAProxy from Debian sends PROXY v2 and checks each
//! worker's `/readyz`; clients are swaks from their own namespaces. Shown here: an IP rule
//! applies to the real client behind HAProxy; draining a worker with `postern drain` (as a
//! Kubernetes preStop does) and stopping it under traffic loses nothing and the load moves;
//! cutting one worker's control link (the link: its veth goes down) keeps its mail flowing
//! under the last policy, and once the link is back it follows the newest version and its
//! events arrive exactly once. Needs root, iproute2,
//! HAProxy and swaks: skipped with the reason otherwise, except under CI, which must run it.
//! The timings are printed (`--nocapture`).

mod support;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::relay::{NO_DNS, sink_on};
use support::{Pki, Postern, eventually};

const CTL: &str = "10.78.0.10";
const LB: &str = "10.77.0.20";
const SINK: &str = "10.77.0.1:2525";
const WORKERS: [(&str, &str, &str); 3] = [
    ("w1", "10.77.0.11", "10.78.0.11"),
    ("w2", "10.77.0.12", "10.78.0.12"),
    ("w3", "10.77.0.13", "10.78.0.13"),
];
const CLIENTS: [(&str, &str); 2] = [("c1", "10.77.0.31"), ("c2", "10.77.0.32")];

/// Why the test cannot run here, if it cannot.
fn missing() -> Option<String> {
    if !support::is_root() {
        return Some("needs root (network namespaces)".into());
    }
    for tool in ["ip", "haproxy", "swaks"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("{tool} is missing (bash tests/interop/install.sh)"));
        }
    }
    None
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip(args: &[&str]) {
    run("ip", args);
}

/// The namespaces and root-side links; all removed on drop (also when the test fails).
struct Net;

const HUB: &str = "pn-hub";

impl Net {
    fn clean() {
        for ns in ["hub", "ctl", "w1", "w2", "w3", "lb", "c1", "c2"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &format!("pn-{ns}")])
                .stderr(Stdio::null())
                .status();
        }
        for link in ["pn-rm", "pn-rc"] {
            let _ = Command::new("ip")
                .args(["link", "del", link])
                .stderr(Stdio::null())
                .status();
        }
    }

    fn build() -> Net {
        Net::clean();
        let net = Net;
        net.namespace(HUB);
        for bridge in ["brm", "brc"] {
            ip(&["-n", HUB, "link", "add", bridge, "type", "bridge"]);
            ip(&["-n", HUB, "link", "set", bridge, "up"]);
        }
        // This test's own side: the next hop on the mail network, the REST API over the
        // control network.
        net.link(None, "pn-rm", "brm", "10.77.0.1");
        net.link(None, "pn-rc", "brc", "10.78.0.1");
        net.host("pn-ctl", &[("brc", CTL)]);
        for (id, mail, control) in WORKERS {
            net.host(&format!("pn-{id}"), &[("brm", mail), ("brc", control)]);
        }
        net.host("pn-lb", &[("brm", LB)]);
        for (id, addr) in CLIENTS {
            net.host(&format!("pn-{id}"), &[("brm", addr)]);
        }
        net
    }

    fn namespace(&self, ns: &str) {
        ip(&["netns", "add", ns]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }

    fn host(&self, ns: &str, links: &[(&str, &str)]) {
        self.namespace(ns);
        for (bridge, addr) in links {
            // The hub's end is named after the host and network (`w1-brm`), the host's eth0/1.
            let hub_end = format!("{}-{bridge}", ns.trim_start_matches("pn-"));
            self.link(Some(ns), &hub_end, bridge, addr);
        }
    }

    /// A veth from `ns` (None: this test's namespace) to `bridge` in the hub, `addr`/24 on
    /// the host's end.
    fn link(&self, ns: Option<&str>, hub_end: &str, bridge: &str, addr: &str) {
        let host_end = format!("{hub_end}-h");
        ip(&[
            "link", "add", hub_end, "type", "veth", "peer", "name", &host_end,
        ]);
        ip(&["link", "set", hub_end, "netns", HUB]);
        ip(&["-n", HUB, "link", "set", hub_end, "master", bridge]);
        ip(&["-n", HUB, "link", "set", hub_end, "up"]);
        let cidr = format!("{addr}/24");
        match ns {
            Some(ns) => {
                ip(&["link", "set", &host_end, "netns", ns]);
                ip(&["-n", ns, "addr", "add", &cidr, "dev", &host_end]);
                ip(&["-n", ns, "link", "set", &host_end, "up"]);
            }
            None => {
                // This side keeps the hub's name: the root namespace may have an `x-h`.
                ip(&["link", "set", &host_end, "name", &format!("{hub_end}x")]);
                ip(&["addr", "add", &cidr, "dev", &format!("{hub_end}x")]);
                ip(&["link", "set", &format!("{hub_end}x"), "up"]);
            }
        }
    }

    /// Takes the hub's end of worker `id`'s control link down (`up`: back up).
    fn control_link(&self, id: &str, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["-n", HUB, "link", "set", &format!("{id}-brc"), state]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        Net::clean();
    }
}

struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn haproxy(dir: &std::path::Path) -> Haproxy {
    // Round robin over the workers, PROXY v2 to each; a worker whose /readyz fails (drained,
    // no policy) is out within a second, and a refused connection is retried on another.
    let mut config = format!(
        "global\n  maxconn 512\n\
         defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n\
         \x20 retries 3\n  option redispatch\n\
         frontend smtp\n  bind {LB}:25\n  default_backend workers\n\
         backend workers\n  balance roundrobin\n  option httpchk GET /readyz\n\
         \x20 default-server send-proxy-v2 check port 9090 inter 300ms fall 1 rise 2\n"
    );
    for (id, mail, _) in WORKERS {
        config.push_str(&format!("  server {id} {mail}:25\n"));
    }
    let file = dir.join("haproxy.cfg");
    std::fs::write(&file, config).unwrap();
    let file = file.to_str().unwrap();
    run("haproxy", &["-c", "-f", file]);
    Haproxy(
        Command::new("ip")
            .args(["netns", "exec", "pn-lb", "haproxy", "-db", "-f", file])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// swaks from client `ns` through HAProxy: the queue id when the message was queued, or
/// the whole transcript when it was not.
fn send(ns: &str, from: &str, subject: &str, tls: bool) -> Result<String, String> {
    let header = format!("Subject: {subject}");
    let server = format!("{LB}:25");
    let mut args = vec![
        "netns",
        "exec",
        ns,
        "swaks",
        "--server",
        &server,
        "--from",
        from,
        "--to",
        "bob@partner.example",
        "--helo",
        "client.example",
        "--header",
        &header,
        "--timeout",
        "20",
    ];
    if tls {
        args.push("--tls");
    }
    let out = Command::new("ip").args(&args).output().unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    match transcript.split("250 2.0.0 Ok: queued as ").nth(1) {
        Some(rest) => Ok(rest.split_whitespace().next().unwrap_or("").to_string()),
        None => Err(transcript),
    }
}

async fn metric(worker_mail_addr: &str, series: &str) -> Option<f64> {
    let page = reqwest::get(format!("http://{worker_mail_addr}:9090/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Messages sent by a background task, alternating clients, until stopped: subject -> queue id
/// of each one queued.
struct Load {
    stop: Arc<AtomicBool>,
    accepted: Arc<Mutex<HashMap<String, String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(tag: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let (s, a) = (stop.clone(), accepted.clone());
        let task = tokio::task::spawn_blocking(move || {
            let mut n = 0;
            while !s.load(Ordering::SeqCst) {
                let (ns, from, tls) = if n % 2 == 0 {
                    ("pn-c1", "alice@sender.example", false)
                } else {
                    ("pn-c2", "carol@sender.example", true)
                };
                let subject = format!("{tag}-{n}");
                if let Ok(id) = send(ns, from, &subject, tls) {
                    a.lock().unwrap().insert(subject, id);
                }
                n += 1;
            }
        });
        let task = tokio::spawn(async move {
            let _ = task.await;
        });
        Load {
            stop,
            accepted,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }

    async fn stop(self) -> HashMap<String, String> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        Arc::try_unwrap(self.accepted)
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

/// How many messages the sink holds with exactly this subject.
fn delivered(seen: &support::relay::Seen, subject: &str) -> usize {
    let line = format!("Subject: {subject}\r\n");
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(_, m)| m.contains(&line))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_behind_haproxy_in_network_namespaces() {
    if let Some(reason) = missing() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{reason} (CI must run this test)"
        );
        eprintln!("skipped: {reason}");
        return;
    }
    let net = Net::build();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("tls"));
    pki.server("ctl", &[CTL]);
    pki.server("smtp", &["mx.test"]);
    for (id, _, _) in WORKERS {
        pki.client(&format!("worker-{id}"), &[id]);
    }
    let (_, seen) = sink_on(SINK).await;

    let control_dir = dir.path().join("control");
    std::fs::create_dir_all(&control_dir).unwrap();
    let mut control = Postern::start_netns(
        "pn-ctl",
        &[
            "control",
            "--data-dir",
            control_dir.to_str().unwrap(),
            "--http-listen",
            &format!("{CTL}:8443"),
            "--grpc-listen",
            &format!("{CTL}:50051"),
            "--tls-cert",
            &pki.path("ctl.pem"),
            "--tls-key",
            &pki.path("ctl.key"),
            "--client-ca",
            &pki.path("ca.pem"),
        ],
        &control_dir,
        "grpc=",
    );
    control.base = control.base.replacen("http://", "https://", 1);
    control.ca_pem = Some(std::fs::read_to_string(pki.path("ca.pem")).unwrap());
    let relay = json!({
        "domains": [{"domain": "partner.example", "next_hop": format!("[10.77.0.1]:2525")}],
        "networks": [],
    });
    control.rest(reqwest::Method::PUT, "/v1/relay", relay).await;
    let settings = json!({"delivery": {"nameservers": [NO_DNS]}});
    control
        .rest(reqwest::Method::PUT, "/v1/settings", settings)
        .await;
    // The rule for the second client's address: it must use TLS.
    let rule = json!({"match": "10.77.0.32", "level": "encrypt"});
    control
        .rest(reqwest::Method::POST, "/v1/policy/inbound/rules", rule)
        .await;
    let mut workers: HashMap<&str, Postern> = HashMap::new();
    for (id, mail, _) in WORKERS {
        workers.insert(id, start_worker(&pki, dir.path(), id, mail));
    }
    let version = current_version(&control).await;
    for (id, mail, _) in WORKERS {
        let series = "postern_worker_policy_version";
        eventually(
            &format!("{id} to apply version {version}"),
            Duration::from_secs(30),
            || async { (metric(mail, series).await? == version as f64).then_some(()) },
        )
        .await;
    }
    let _haproxy = haproxy(dir.path());
    eventually("HAProxy to listen", Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(format!("{LB}:25"))
            .await
            .ok()
            .map(|_| ())
    })
    .await;

    // 1. The IP rule applies to the real client behind HAProxy.
    let c1 = tokio::task::spawn_blocking(|| send("pn-c1", "a@sender.example", "rule-c1", false));
    let c1 = c1
        .await
        .unwrap()
        .expect("the first client relays in plaintext");
    let refused =
        tokio::task::spawn_blocking(|| send("pn-c2", "c@sender.example", "rule-c2-plain", false));
    let refused = refused
        .await
        .unwrap()
        .expect_err("the second client must use TLS");
    assert!(refused.contains("530 5.7.0"), "{refused}");
    let c2 = tokio::task::spawn_blocking(|| send("pn-c2", "c@sender.example", "rule-c2-tls", true));
    c2.await
        .unwrap()
        .expect("the second client relays over TLS");
    let record = eventually(
        "the first client's message in tracking",
        Duration::from_secs(30),
        || async {
            let m = control
                .call(
                    reqwest::Method::GET,
                    &format!("/v1/messages/{c1}"),
                    None,
                    None,
                )
                .await;
            (m.0 == 200).then_some(m.1)
        },
    )
    .await;
    assert_eq!(record["source"]["ip"], "10.77.0.31", "{record}");

    // 2. Drain and stop w3 under traffic: nothing acknowledged is lost, the load moves.
    let load = Load::start("drain");
    for (id, mail, _) in WORKERS {
        eventually(
            &format!("{id} to take some of the load"),
            Duration::from_secs(60),
            || async {
                (metric(mail, "postern_worker_messages_received_total").await? >= 2.0).then_some(())
            },
        )
        .await;
    }
    // Only a process on the worker's own host may drain it.
    let (w1_mail, w3_mail) = (WORKERS[0].1, WORKERS[2].1);
    let refused = reqwest::Client::new()
        .post(format!("http://{w1_mail}:9090/drain"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    // As a Kubernetes preStop does it: `postern drain` on w3's host, waiting for its queue.
    let drain_started = Instant::now();
    let drain = Command::new("ip")
        .args([
            "netns",
            "exec",
            "pn-w3",
            support::BIN,
            "drain",
            "--timeout",
            "60",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually(
        "w3 to report not ready",
        Duration::from_secs(30),
        || async {
            let r = reqwest::get(format!("http://{w3_mail}:9090/readyz"))
                .await
                .ok()?;
            (r.status() == 503).then_some(())
        },
    )
    .await;
    let unready = drain_started.elapsed();
    let drained = tokio::task::spawn_blocking(move || drain.wait_with_output().unwrap());
    let drained = drained.await.unwrap();
    let said = String::from_utf8_lossy(&drained.stderr);
    assert!(drained.status.success(), "postern drain: {said}");
    assert!(said.contains("drained: queue empty"), "{said}");
    let emptied = drain_started.elapsed();
    let w3_received = metric(w3_mail, "postern_worker_messages_received_total")
        .await
        .unwrap();
    let stop_started = Instant::now();
    let status = workers.remove("w3").unwrap().terminate();
    assert!(status.success(), "w3 exited {status}");
    let stopped = stop_started.elapsed();
    let after_stop = load.accepted();
    eventually(
        "ten more messages with w3 gone",
        Duration::from_secs(120),
        || async { (load.accepted() >= after_stop + 10).then_some(()) },
    )
    .await;
    let accepted = load.stop().await;
    for subject in accepted.keys() {
        eventually(
            &format!("{subject} at the next hop"),
            Duration::from_secs(60),
            || async { (delivered(&seen, subject) >= 1).then_some(()) },
        )
        .await;
        assert_eq!(
            delivered(&seen, subject),
            1,
            "{subject} delivered more than once"
        );
    }
    let moved = WORKERS[..2]
        .iter()
        .map(|(_, mail, _)| mail)
        .collect::<Vec<_>>();
    let mut on_others = 0.0;
    for mail in moved {
        on_others += metric(mail, "postern_worker_messages_received_total")
            .await
            .unwrap();
    }
    eprintln!(
        "netns drain: {} messages queued under load, none lost; w3 took {w3_received} before \
         `postern drain`; not ready {unready:?} after it started, which returned (queue empty) \
         after {emptied:?}, stopped {stopped:?} after SIGTERM; w1+w2 took {on_others}",
        accepted.len()
    );

    // 3. Cut w1's control link: mail keeps flowing under the last policy; after the link
    // returns, w1 follows the newest version and its events arrive exactly once.
    let cut_at = Instant::now();
    net.control_link("w1", false);
    let before = current_version(&control).await;
    let rule = json!({"match": "late.example", "level": "may"});
    control
        .rest(reqwest::Method::POST, "/v1/policy/inbound/rules", rule)
        .await;
    let newest = current_version(&control).await;
    assert!(newest > before);
    eventually(
        "w2 to apply the newest version",
        Duration::from_secs(30),
        || async {
            (metric(WORKERS[1].1, "postern_worker_policy_version").await? == newest as f64)
                .then_some(())
        },
    )
    .await;
    // Long enough for both ends to give the stream up (HTTP/2 keepalive), so that the
    // worker must reconnect and resend what the old stream may or may not have delivered.
    eventually(
        "the control plane to see w1 gone",
        Duration::from_secs(90),
        || async {
            let list = control
                .rest(reqwest::Method::GET, "/v1/workers", Value::Null)
                .await;
            let w1 = list["items"]
                .as_array()?
                .iter()
                .find(|w| w["id"] == "w1")?
                .clone();
            (w1["connected"] == false).then_some(())
        },
    )
    .await;
    let noticed = cut_at.elapsed();
    let w1_before = metric(w1_mail, "postern_worker_messages_received_total")
        .await
        .unwrap();
    let load = Load::start("partition");
    eventually(
        "w1 to take mail while cut off",
        Duration::from_secs(120),
        || async {
            (metric(w1_mail, "postern_worker_messages_received_total").await? >= w1_before + 3.0)
                .then_some(())
        },
    )
    .await;
    let partition = load.stop().await;
    assert_eq!(
        metric(w1_mail, "postern_worker_policy_version").await,
        Some(before as f64),
        "w1 keeps the last policy it had"
    );
    for subject in partition.keys() {
        eventually(
            &format!("{subject} at the next hop"),
            Duration::from_secs(60),
            || async { (delivered(&seen, subject) >= 1).then_some(()) },
        )
        .await;
    }
    let cut_for = cut_at.elapsed();
    let restored_at = Instant::now();
    net.control_link("w1", true);
    eventually(
        "w1 to follow the newest version",
        Duration::from_secs(120),
        || async {
            (metric(w1_mail, "postern_worker_policy_version").await? == newest as f64).then_some(())
        },
    )
    .await;
    let followed = restored_at.elapsed();
    eventually(
        "w1's outbox to be acknowledged",
        Duration::from_secs(120),
        || async {
            (metric(w1_mail, "postern_worker_outbox_lag_seconds").await? == 0.0).then_some(())
        },
    )
    .await;
    let uploaded = restored_at.elapsed();
    let mut from_w1 = 0;
    for (subject, id) in &partition {
        let (code, m) = control
            .call(
                reqwest::Method::GET,
                &format!("/v1/messages/{id}"),
                None,
                None,
            )
            .await;
        assert_eq!(code, 200, "{subject}: {m}");
        let kinds: Vec<&str> = m["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["kind"].as_str())
            .collect();
        let once = |kind| kinds.iter().filter(|k| **k == kind).count();
        assert_eq!(once("received"), 1, "{subject}: {m}");
        assert_eq!(once("delivered"), 1, "{subject}: {m}");
        from_w1 += usize::from(m["worker"] == "w1");
    }
    assert!(from_w1 >= 3, "w1's messages are tracked");
    eprintln!(
        "netns partition: w1's control link down {cut_for:?} (the control plane saw w1 gone \
         after {noticed:?}) while {} messages went through \
         ({from_w1} via w1, on version {before} while {newest} was current); after the link \
         returned: newest version applied in {followed:?}, outbox acknowledged in \
         {uploaded:?}; every event once",
        partition.len()
    );
    drop(workers);
    drop(control);
}

fn start_worker(pki: &Pki, dir: &std::path::Path, id: &str, mail: &str) -> Postern {
    let spool = dir.join(format!("spool-{id}"));
    std::fs::create_dir_all(&spool).unwrap();
    // HTTP on every address, as in a pod: metrics for this test, drain from loopback.
    let (smtp, http) = (format!("{mail}:25"), "0.0.0.0:9090".to_string());
    Postern::start_netns(
        &format!("pn-{id}"),
        &[
            "worker",
            "--control",
            &format!("https://{CTL}:50051"),
            "--worker-id",
            id,
            "--smtp-listen",
            &smtp,
            "--http-listen",
            &http,
            "--spool-dir",
            spool.to_str().unwrap(),
            "--tls-cert",
            &pki.path("smtp.pem"),
            "--tls-key",
            &pki.path("smtp.key"),
            "--control-ca",
            &pki.path("ca.pem"),
            "--client-cert",
            &pki.path(&format!("worker-{id}.pem")),
            "--client-key",
            &pki.path(&format!("worker-{id}.key")),
            "--hostname",
            "mx.test",
            "--smtp-proxy-protocol-from",
            &format!("{LB}/32"),
        ],
        &spool,
        "smtp=",
    )
}

async fn current_version(control: &Postern) -> u64 {
    control
        .rest(reqwest::Method::GET, "/v1/policy", Value::Null)
        .await["version"]
        .as_u64()
        .unwrap()
}
