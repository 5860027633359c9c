//! The public listener (issue 23, points 1 and 2): only the protocol endpoints, over HTTP/1.1
//! and HTTP/2 (curl negotiating h2 by ALPN, Python's h2 by prior knowledge), with limits of its
//! own that a flood cannot carry over to the admin API.

mod support;

use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::relay::Relay;
use support::{Postern, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const POLICY: &str = "version: STSv1\r\nmode: enforce\r\nmx: mx.ours.test\r\nmax_age: 86400\r\n";

async fn publish(control: &Postern) {
    let mut relay = control.rest(Method::GET, "/v1/relay", Value::Null).await;
    relay["domains"] = json!([{"domain": "ours.test", "next_hop": "[127.0.0.1]:9"}]);
    control.rest(Method::PUT, "/v1/relay", relay).await;
    let mut settings = control.rest(Method::GET, "/v1/settings", Value::Null).await;
    settings["published_mta_sts"] =
        json!({"mode": "enforce", "mx": ["mx.ours.test"], "max_age": 86400});
    control.rest(Method::PUT, "/v1/settings", settings).await;
}

/// `curl` (OpenSSL, nghttp2) fetching `url` from `connect` (`host:port`), `-k` since the test
/// certificate names the control plane, not mta-sts.ours.test: "<http version> <status>".
fn curl(args: &[&str], url: &str, connect: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .args(["--connect-to", &format!("::{connect}")])
        .args(args)
        .arg(url)
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_is_served_over_http2_and_http1_for_any_spelling_of_its_host() {
    let (hop, _) = support::relay::sink(0).await;
    let relay = Relay::start(&hop, json!({})).await;
    publish(&relay.control).await;
    let public = relay.control.public.clone().expect("a public listener");
    let connect = &public["https://".len()..];
    let url = |host: &str| format!("https://{host}/.well-known/mta-sts.txt");
    for host in [
        "mta-sts.ours.test",
        "MTA-STS.Ours.Test",
        "mta-sts.ours.test.",
    ] {
        assert_eq!(curl(&["--http2"], &url(host), connect), "2 200", "{host}");
        assert_eq!(
            curl(&["--http1.1"], &url(host), connect),
            "1.1 200",
            "{host}"
        );
    }
    assert_eq!(
        curl(&["--http2"], &url("mta-sts.other.test"), connect),
        "2 404"
    );
    // The body, as a sender reads it.
    let body = Command::new("curl")
        .args(["-sk", "--http2", "--connect-to", &format!("::{connect}")])
        .arg(url("mta-sts.ours.test"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&body.stdout), POLICY);

    // The admin listener serves neither protocol endpoint any more.
    let admin = &relay.control.base[..];
    let (status, _) = relay
        .control
        .call(Method::GET, "/.well-known/mta-sts.txt", None, None)
        .await;
    assert_eq!(status, 404, "{admin}");
    let (status, _) = relay
        .control
        .call(Method::POST, "/tlsrpt", None, Some(json!({})))
        .await;
    assert_eq!(status, 404);
    // And the public listener serves nothing of the admin API.
    let http = relay.control.client();
    let r = http
        .get(format!("{public}/v1/settings"))
        .bearer_auth(relay.control.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

fn report(org: &str) -> Vec<u8> {
    json!({
        "organization-name": org,
        "date-range": {"start-datetime": "2026-12-06T00:00:00Z", "end-datetime": "2026-12-06T23:59:59Z"},
        "contact-info": "tls@big.example",
        "report-id": format!("{org}-1"),
        "policies": [{
            "policy": {"policy-type": "no-policy-found", "policy-domain": "ours.test"},
            "summary": {"total-successful-session-count": 7, "total-failure-session-count": 0},
        }],
    })
    .to_string()
    .into_bytes()
}

/// A plain TCP connection to `addr` from the loopback address `from`.
async fn connect_from(
    from: std::net::Ipv4Addr,
    addr: std::net::SocketAddr,
) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((from, 0).into()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Whether the server closes `tcp` without a byte (within a generous deadline).
async fn closed_unanswered(tcp: &mut tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 256];
    matches!(
        tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_listener_has_limits_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Postern::dev(dir.path(), "gw.test");
    publish(&dev).await;
    let public = dev.public.clone().expect("a public listener");
    let addr: std::net::SocketAddr = public["http://".len()..].parse().unwrap();
    let http = reqwest::Client::new();

    // Per source, a burst of reports, then 429 with Retry-After.
    let mut statuses = Vec::new();
    for i in 0..12 {
        let r = http
            .post(format!("{public}/tlsrpt"))
            .header("Content-Type", "application/tlsrpt+json")
            .body(report(&format!("Org {i}")))
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            let retry: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=60).contains(&retry), "{retry}");
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(&statuses[..10], [204; 10], "{statuses:?}");
    assert_eq!(&statuses[10..], [429, 429], "{statuses:?}");

    // Python's h2 opens 100 streams at once on one connection: the server allows 8 and
    // refuses the rest, and then still serves a new connection's GET over HTTP/2.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/tools/h2_flood.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([
                script,
                "127.0.0.1",
                &addr.port().to_string(),
                "mta-sts.ours.test",
                "100",
            ])
            .output()
            .expect("python3 runs (CI installs h2)")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let flood: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(flood["max_concurrent_streams"], 8, "{flood}");
    assert!(flood["reset"].as_u64().unwrap() >= 92, "{flood}");
    assert_eq!(flood["get_status"], 200, "{flood}");

    // A body trickled a byte a second, inside every idle timer, is cut off by the request's
    // deadline (408): the client never holds its slot for ever.
    // (From its own address: 127.0.0.1 has used its reports.)
    let mut slow = connect_from(std::net::Ipv4Addr::new(127, 0, 2, 1), addr).await;
    slow.write_all(
        b"POST /tlsrpt HTTP/1.1\r\nHost: x\r\nContent-Type: application/tlsrpt+json\r\nContent-Length: 100000\r\n\r\n",
    )
    .await
    .unwrap();
    let trickle = tokio::spawn(async move {
        let mut got = Vec::new();
        for _ in 0..120 {
            if slow.write_all(b" ").await.is_err() {
                break;
            }
            let mut buf = [0u8; 512];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_secs(1), slow.read(&mut buf)).await
            {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    });

    // Eight connections per source: the ninth is closed unanswered.
    let source = std::net::Ipv4Addr::new(127, 0, 1, 1);
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(connect_from(source, addr).await);
    }
    let mut ninth = connect_from(source, addr).await;
    assert!(
        closed_unanswered(&mut ninth).await,
        "the ninth connection was served"
    );

    // The whole listener full (512 silent connections from 64 sources): the admin API, the
    // console and the probe answer as before.
    for s in 2..=64u8 {
        for _ in 0..8 {
            held.push(connect_from(std::net::Ipv4Addr::new(127, 0, 1, s), addr).await);
        }
    }
    let admin = dev.client();
    for path in ["/healthz", "/readyz", "/console/"] {
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            admin.get(format!("{}{path}", dev.base)).send(),
        )
        .await
        .unwrap_or_else(|_| panic!("{path} waited behind the public listener"))
        .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let (status, _) = dev.call(Method::GET, "/v1/settings", None, None).await;
    assert_eq!(status, 200);
    drop(held);

    let answer = trickle.await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "a trickled body got {answer:?}"
    );
    // Once the flood is gone, reports are taken again (from another source's bucket).
    eventually(
        "the public listener to serve again",
        Duration::from_secs(30),
        || async {
            let r = reqwest::Client::new()
                .get(format!("{public}/.well-known/mta-sts.txt"))
                .header("Host", "mta-sts.ours.test")
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
}

/// A client of the public listener from the loopback address `from` (each its own rate bucket).
fn client_from(from: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(from))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn received_reports_are_bounded_kept_under_our_ids_and_paged() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Postern::dev(dir.path(), "gw.test");
    publish(&dev).await;
    let public = dev.public.clone().expect("a public listener");
    let post = |from: [u8; 4], media: &'static str, body: Vec<u8>| {
        let url = format!("{public}/tlsrpt");
        async move {
            client_from(from)
                .post(url)
                .header("Content-Type", media)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // 4 KB of gzip that is a 3.9 MB report: refused, nothing kept.
    let mut bomb: Value = serde_json::from_slice(&report("Bomb")).unwrap();
    bomb["contact-info"] = json!("x".repeat(3_900_000));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, bomb.to_string().as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    assert!(gz.len() < 8 * 1024, "{}", gz.len());
    assert_eq!(
        post([127, 0, 3, 1], "application/tlsrpt+gzip", gz).await,
        413
    );

    // A report, then one forged under the same organisation and report-id: both are kept,
    // each under its own id; the first is not overwritten.
    assert_eq!(
        post(
            [127, 0, 3, 2],
            "application/tlsrpt+json",
            report("Big Mail")
        )
        .await,
        204
    );
    let mut forged: Value = serde_json::from_slice(&report("Big Mail")).unwrap();
    forged["policies"][0]["summary"]["total-successful-session-count"] = json!(0);
    assert_eq!(
        post(
            [127, 0, 3, 3],
            "application/tlsrpt+json",
            forged.to_string().into_bytes()
        )
        .await,
        204
    );
    let list = dev
        .rest(
            Method::GET,
            "/v1/reports/tls/received?organization=Big%20Mail",
            Value::Null,
        )
        .await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{list:#}");
    assert_ne!(items[0]["id"], items[1]["id"]);
    assert_eq!(
        items[1]["successful_sessions"], 7,
        "the first report is as it came: {list:#}"
    );
    assert_eq!(items[0]["successful_sessions"], 0);

    // A byte budget: once spent, 503 and nothing more is kept.
    let mut settings = dev.rest(Method::GET, "/v1/settings", Value::Null).await;
    settings["reports"]["received_max_bytes"] = json!(6_000);
    dev.rest(Method::PUT, "/v1/settings", settings).await;
    let mut statuses = Vec::new();
    for i in 0..10u8 {
        let body = report(&format!("Org {i}"));
        statuses.push(post([127, 0, 4, i + 1], "application/tlsrpt+json", body).await);
    }
    assert!(
        statuses.contains(&204) && statuses.ends_with(&[503]),
        "{statuses:?}"
    );
    let kept = 2 + statuses.iter().filter(|s| **s == 204).count();

    // Paged, newest first, each once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/reports/tls/received?limit=2&cursor={c}"),
            None => "/v1/reports/tls/received?limit=2".into(),
        };
        let page = dev.rest(Method::GET, &path, Value::Null).await;
        for r in page["items"].as_array().unwrap() {
            seen.push(r["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), kept, "{seen:?}");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(seen, sorted, "newest first");
    let (status, _) = dev
        .call(
            Method::GET,
            "/v1/reports/tls/received?cursor=nonsense",
            None,
            None,
        )
        .await;
    assert_eq!(status, 400);
}
