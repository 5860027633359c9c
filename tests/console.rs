//! The web console (issue 14): its committed build is what its sources and the OpenAPI
//! document make, and it works end to end in a real browser (Debian's Chromium, driven by
//! Playwright from `console/e2e/console.mjs`) against `postern dev`, with mail sent by swaks
//! to a next hop that takes one recipient and defers another.
//!
//! Needs Node.js with `npm ci` run in `console/`, Debian's `chromium` and `swaks`: skipped with
//! the reason otherwise, except under CI (`.ci/run` installs them), which must run it.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::Method;
use serde_json::{Value, json};
use support::Postern;
use support::relay::sink_with;

const CHROMIUM: &str = "/usr/bin/chromium";

fn console_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../console")
}

/// Why the browser tests cannot run here, if they cannot.
fn missing() -> Option<String> {
    let on_path = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !on_path("node") {
        return Some("Node.js is not installed".into());
    }
    if !console_dir().join("node_modules/playwright-core").is_dir() {
        return Some("console/node_modules is missing: run `npm ci` in console/".into());
    }
    if !Path::new(CHROMIUM).exists() {
        return Some(format!("{CHROMIUM} is missing: apt-get install chromium"));
    }
    if !on_path("swaks") {
        return Some("swaks is not installed: apt-get install swaks".into());
    }
    None
}

fn skip_unless_ready() -> bool {
    if let Some(reason) = missing() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{reason} (CI must run this test)"
        );
        eprintln!("skipped: {reason}");
        return true;
    }
    false
}

/// `console/dist` and the generated API types are what `npm run build` makes from the sources
/// and `openapi/postern.json`; the console type-checks against the document.
#[test]
fn the_committed_console_build_is_current() {
    if skip_unless_ready() {
        return;
    }
    let out = Command::new("node")
        .args(["build.mjs", "--check"])
        .current_dir(console_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_chromium_against_postern_dev() {
    if skip_unless_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("postern-data");
    let p = Postern::dev(&data, "mx.console.test");

    // The next hop offers STARTTLS, so a message can be encrypted on both legs; it takes
    // bob@ and answers later@ with 450, which keeps that message deferred in the queue.
    let ca = postern_tls::pki::Ca::new("console test CA").unwrap();
    let hop = ca.server(&["localhost"]).unwrap();
    let (hop_addr, seen, _) = sink_with(0, Some((hop.cert_pem, hop.key_pem))).await;
    let port = hop_addr.rsplit(':').next().unwrap();
    p.rest(
        Method::PUT,
        "/v1/relay",
        json!({"domains": [{"domain": "partner.test", "next_hop": format!("[127.0.0.1]:{port}")}],
               "networks": ["127.0.0.0/8", "::1/128"]}),
    )
    .await;
    p.wait_applied().await;
    let viewer = p
        .rest(
            Method::POST,
            "/v1/tokens",
            json!({"role": "viewer", "comment": "console test"}),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let workers = p.rest(Method::GET, "/v1/workers", Value::Null).await;
    let smtp = workers["items"][0]["smtp_addr"]
        .as_str()
        .unwrap()
        .to_string();

    let screenshots = std::env::var("CONSOLE_SCREENSHOTS").map_or_else(
        |_| Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots"),
        PathBuf::from,
    );
    let base = p.base.clone();
    let public = p.public.clone().expect("postern dev has a public listener");
    let admin = p.admin_token();
    let script = console_dir().join("e2e/console.mjs");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .env("POSTERN_URL", base)
            .env("POSTERN_PUBLIC_URL", public)
            .env("POSTERN_ADMIN_TOKEN", admin)
            .env("POSTERN_VIEWER_TOKEN", viewer)
            .env("POSTERN_SMTP", smtp)
            .env("PARTNER_DOMAIN", "partner.test")
            .env("SCREENSHOTS", &screenshots)
            .env("CHROMIUM", CHROMIUM)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{said}");
    if !out.status.success() {
        // What the server saw, to tell a console fault from a mail one.
        for path in ["/v1/queue", "/v1/messages?limit=10"] {
            let got = p.rest(Method::GET, path, Value::Null).await;
            eprintln!("{path}: {got:#}");
        }
        eprintln!("postern dev said:\n{}", p.log.lock().unwrap().join("\n"));
        panic!("the browser test failed:\n{said}");
    }

    // What the browser did, seen from the server's side.
    let rules = p
        .rest(Method::GET, "/v1/policy/inbound/rules", Value::Null)
        .await;
    let levels: Vec<(&str, &str)> = rules["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["match"].as_str().unwrap(), r["level"].as_str().unwrap()))
        .collect();
    assert!(levels.contains(&("plain.example", "none")), "{levels:?}");
    assert!(
        levels.contains(&("secure.example", "encrypt")),
        "{levels:?}"
    );
    let queue = p.rest(Method::GET, "/v1/queue", Value::Null).await;
    assert_eq!(
        queue["items"],
        json!([]),
        "the deferred message was deleted"
    );
    let delivered = seen.lock().unwrap().len();
    assert_eq!(
        delivered, 2,
        "the plaintext and the STARTTLS message reached the next hop"
    );
    let audit = p.rest(Method::GET, "/v1/audit", Value::Null).await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for done in ["/retry", "DELETE /v1/queue/"] {
        assert!(
            actions.iter().any(|a| a.contains(done)),
            "the queue actions are audited: {actions:?}"
        );
    }
}
