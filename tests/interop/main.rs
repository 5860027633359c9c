//! The interop lab (issue 10): Postern between real MTAs from Debian's packages (Postfix with
//! OpenSSL, Exim with GnuTLS) and real command-line clients (swaks, openssl s_client,
//! gnutls-cli, Python's smtplib), as clients and as next hops. Each MTA starts once for the
//! whole suite, configured for every case up front; the cases then run against them and the
//! results become the Markdown matrix of the book (`docs/src/interop.md`; `UPDATE_INTEROP_MATRIX=1`
//! rewrites it; a
//! run that differs from the book fails, like a stale OpenAPI document).
//!
//! Since issue 13 it also puts HAProxy (PROXY protocol v1 and v2) in front of a worker; since
//! issue 15 it delivers to the MTAs as MX hosts under published MTA-STS policies.
//!
//! Needs root (the MTAs drop privileges to their own users) and the packages `.ci/run`
//! installs; without them the suite says why and is skipped, except under CI, where it fails.

#[path = "../support/mod.rs"]
mod support;

mod clients;
mod dsn;
mod exim;
mod haproxy;
mod inbound;
mod integrity;
mod lab;
mod mail;
mod matrix;
mod outbound;
mod peers;
mod pki;
mod postfix;
mod proxy;
mod reuse;
mod sts;

use std::process::Command;

fn missing_prerequisites() -> Vec<String> {
    let mut missing = Vec::new();
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    if String::from_utf8_lossy(&uid).trim() != "0" {
        missing.push("root (Postfix and Exim start as root and drop to their own users)".into());
    }
    for tool in [
        "postfix",
        "swaks",
        "openssl",
        "gnutls-cli",
        "python3",
        "haproxy",
    ] {
        let found = Command::new("sh")
            .args([
                "-c",
                &format!("command -v {tool} || test -x /usr/sbin/{tool}"),
            ])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            missing.push(format!("{tool} (tests/interop/install.sh installs it)"));
        }
    }
    let dkimpy = Command::new("python3").args(["-c", "import dkim"]).output();
    if !dkimpy.is_ok_and(|o| o.status.success()) {
        missing.push("Python's dkimpy (tests/interop/install.sh installs it)".into());
    }
    if !exim::binary().exists() {
        missing.push(format!(
            "Exim at {} (tests/interop/install.sh unpacks exim4-daemon-light there)",
            exim::binary().display()
        ));
    }
    missing
}

const MATRIX_PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/src/interop.md");
const BEGIN: &str = "<!-- interop matrix: begin (written by tests/interop) -->\n";
const END: &str = "<!-- interop matrix: end -->";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_lab() {
    let missing = missing_prerequisites();
    if !missing.is_empty() {
        let reason = format!("interop lab skipped, missing: {}", missing.join("; "));
        assert!(
            std::env::var_os("CI").is_none(),
            "{reason} (CI must run the lab)"
        );
        // Written past libtest's capture, so a plain `cargo test` shows why.
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "{reason}");
        return;
    }
    // INTEROP_KEEP=1 keeps the lab's directory (configurations, MTA logs, Maildirs) to read.
    let keep = std::env::var_os("INTEROP_KEEP").is_some();
    let dir = tempfile::Builder::new()
        .prefix("postern-interop")
        .disable_cleanup(keep)
        .tempdir()
        .unwrap();
    eprintln!("[interop] lab directory {}", dir.path().display());
    // The MTAs' users read their configuration and certificates below it.
    peers::run(Command::new("chmod").args(["755", &dir.path().display().to_string()]));
    let certs = lab::Lab::certs(dir.path());
    let mut needs = lab::Needs::new();
    inbound::needs(&certs, &mut needs);
    outbound::needs(&certs, &mut needs);
    reuse::needs(&certs, &mut needs);
    integrity::needs(&mut needs);
    let mx_hosts = sts::needs(&mut needs);
    let lab = lab::Lab::start(dir, certs, needs).await;

    let mut m = matrix::Matrix::default();
    // INTEROP_SECTIONS=outbound,... runs some sections only (and leaves the book alone).
    let only = std::env::var("INTEROP_SECTIONS").ok();
    let wanted = |s: &str| only.as_deref().is_none_or(|o| o.split(',').any(|x| x == s));
    if wanted("inbound") {
        inbound::run(&lab, &mut m).await;
    }
    if wanted("outbound") {
        outbound::run(&lab, &mut m).await;
        reuse::run(&lab, &mut m).await;
    }
    if wanted("mta-sts") {
        sts::run(&lab, &mut m, &mx_hosts).await;
    }
    if wanted("integrity") {
        integrity::run(&lab, &mut m).await;
        dsn::run(&lab, &mut m).await;
    }
    if wanted("proxy") {
        proxy::run(&lab, &mut m).await;
    }

    let table = m.markdown();
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("interop-matrix.md");
    std::fs::write(&out, &table).unwrap();
    eprintln!("interop matrix written to {}", out.display());
    eprintln!(
        "[interop] {} cells passed, {} failed",
        m.passed,
        m.failures.len()
    );
    assert!(
        m.failures.is_empty(),
        "{} of {} cells failed:\n{}",
        m.failures.len(),
        m.failures.len() + m.passed,
        m.failures.join("\n")
    );
    if only.is_some() {
        return;
    }
    let readme = std::fs::read_to_string(MATRIX_PAGE).unwrap();
    let (head, rest) = readme
        .split_once(BEGIN)
        .expect("the book's interop page has the matrix markers");
    let (current, tail) = rest.split_once(END).expect("the book's matrix ends");
    if current != table {
        if std::env::var_os("UPDATE_INTEROP_MATRIX").is_some() {
            std::fs::write(MATRIX_PAGE, format!("{head}{BEGIN}{table}{END}{tail}")).unwrap();
        } else {
            panic!(
                "the book's interop matrix (docs/src/interop.md) is stale: run UPDATE_INTEROP_MATRIX=1 cargo test --test interop (as root)"
            );
        }
    }
}
