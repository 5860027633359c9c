//! `postern ctl` against a real `postern control` over HTTPS with its private CA (issue 14
//! point 4): rules added, listed, edited, replaced and removed, the API's warnings and
//! problems printed, explain, versions and rollback, tokens and roles, and the exit codes
//! scripts rely on (0 done, 1 refused, 2 usage, 3 unreachable); completions and the man page.

mod support;

use std::process::{Command, Stdio};

use serde_json::Value;
use support::{BIN, Pki, Postern};

struct Ctl {
    url: String,
    ca: String,
    token_file: String,
}

struct Ran {
    code: i32,
    out: String,
    err: String,
}

impl Ctl {
    fn run(&self, args: &[&str]) -> Ran {
        self.run_env(args, &[("POSTERN_TOKEN_FILE", &self.token_file)])
    }

    fn run_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Ran {
        let out = Command::new(BIN)
            .arg("ctl")
            .args(args)
            .env("POSTERN_URL", &self.url)
            .env("POSTERN_CA", &self.ca)
            .env_remove("POSTERN_TOKEN")
            .env_remove("POSTERN_TOKEN_FILE")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Ran {
            code: out.status.code().unwrap_or(-1),
            out: String::from_utf8_lossy(&out.stdout).into_owned(),
            err: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// A command that must succeed, its JSON output.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let r = self.run(&all);
        assert_eq!(r.code, 0, "{args:?}: {}", r.err);
        serde_json::from_str(&r.out).unwrap_or(Value::Null)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postern_ctl_drives_the_api_with_exit_codes_scripts_can_use() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("tls"));
    let control = Postern::control(&dir.path().join("control"), &pki);
    let ctl = Ctl {
        url: control.base.clone(),
        ca: pki.path("ca.pem"),
        token_file: dir
            .path()
            .join("control/admin-token")
            .to_str()
            .unwrap()
            .into(),
    };

    // Add: the API's warning comes back with the rule.
    let added = ctl.json(&[
        "rules",
        "add",
        "--direction",
        "inbound",
        "--match",
        "bank.example",
        "--level",
        "none",
    ]);
    let id = added["id"].as_str().unwrap().to_string();
    assert!(!added["warnings"].as_array().unwrap().is_empty(), "{added}");
    let table = ctl.run(&["rules", "list", "--direction", "inbound"]);
    assert_eq!(table.code, 0, "{}", table.err);
    let mut lines = table.out.lines();
    assert!(lines.next().unwrap().starts_with("ID "), "{}", table.out);
    let row = lines.next().unwrap();
    assert!(
        row.starts_with(&id) && row.contains("bank.example") && row.contains("none"),
        "{row}"
    );

    // Edit changes only what is given.
    let edited = ctl.json(&[
        "rules",
        "edit",
        "--direction",
        "inbound",
        &id,
        "--level",
        "encrypt",
    ]);
    assert_eq!(edited["level"], "encrypt");
    assert_eq!(edited["match"], "bank.example");

    // A refused request: exit 1, the problem with the field it names.
    let bad = ctl.run(&[
        "rules",
        "add",
        "--direction",
        "inbound",
        "--match",
        "not a domain",
        "--level",
        "may",
    ]);
    assert_eq!(bad.code, 1, "{}", bad.err);
    assert!(
        bad.err.contains("422") && bad.err.contains("/match"),
        "{}",
        bad.err
    );

    // Explain: the verdict for a plaintext sender of the now-encrypt domain.
    let verdict = ctl.json(&[
        "explain",
        "inbound",
        "--client-ip",
        "192.0.2.7",
        "--sender",
        "a@bank.example",
    ]);
    assert_eq!(verdict["mail_from"]["code"], 530, "{verdict}");

    // Replace from a file, in one version; then roll back to before it.
    let before = ctl.json(&["versions"])["current"].as_u64().unwrap();
    let file = dir.path().join("rules.json");
    std::fs::write(
        &file,
        r#"[{"match": "a.example", "level": "encrypt"}, {"match": "10.0.0.0/8", "level": "may"}]"#,
    )
    .unwrap();
    ctl.json(&[
        "rules",
        "replace",
        "--direction",
        "inbound",
        file.to_str().unwrap(),
    ]);
    let versions = ctl.json(&["versions"]);
    assert_eq!(
        versions["current"].as_u64(),
        Some(before + 1),
        "one version"
    );
    let listed = ctl.json(&["rules", "list", "--direction", "inbound"]);
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    ctl.json(&["rollback", &before.to_string()]);
    let listed = ctl.json(&["rules", "list", "--direction", "inbound"]);
    assert_eq!(listed["items"][0]["match"], "bank.example", "{listed}");
    let rm = ctl.run(&["rules", "rm", "--direction", "inbound", &id]);
    assert_eq!(rm.code, 0, "{}", rm.err);

    // Roles: a viewer token reads and is refused writes (exit 1, 403).
    let token = ctl.json(&["tokens", "create", "--role", "viewer"]);
    let secret = token["token"].as_str().unwrap();
    let viewer = [("POSTERN_TOKEN", secret)];
    let me = ctl.run_env(&["whoami"], &viewer);
    assert_eq!(me.code, 0, "{}", me.err);
    assert!(
        me.out.contains("role: viewer") && me.out.contains(token["id"].as_str().unwrap()),
        "{}",
        me.out
    );
    assert_eq!(
        ctl.run_env(&["rules", "list", "--direction", "outbound"], &viewer)
            .code,
        0
    );
    let refused = ctl.run_env(
        &[
            "rules",
            "add",
            "--direction",
            "outbound",
            "--match",
            "x.example",
            "--level",
            "may",
        ],
        &viewer,
    );
    assert_eq!(refused.code, 1, "{}", refused.err);
    assert!(refused.err.contains("403"), "{}", refused.err);
    let audit = ctl.run(&["audit"]);
    assert!(
        audit.out.contains("POST /v1/policy/inbound/rules"),
        "{}",
        audit.out
    );

    // Usage and reachability.
    let no_token = ctl.run_env(&["rules", "list", "--direction", "inbound"], &[]);
    assert_eq!(no_token.code, 2, "{}", no_token.err);
    let gone = ctl.run_env(
        &[
            "rules",
            "list",
            "--direction",
            "inbound",
            "--url",
            "https://127.0.0.1:9",
        ],
        &viewer,
    );
    assert_eq!(gone.code, 3, "{}", gone.err);

    // A Postfix TLS policy table into the outbound rules: a dry run changes nothing, then one
    // version; each line without an equivalent is reported.
    let table = dir.path().join("tls_policy");
    std::fs::write(
        &table,
        "# from main.cf's smtp_tls_policy_maps\nexample.com verify ciphers=high\n\
         .example.net encrypt\n  protocols=!SSLv3\n[relay.example]:587 encrypt\n\
         dane.example dane\n",
    )
    .unwrap();
    let table = table.to_str().unwrap();
    let dry = ctl.run(&["import", "postfix-tls-policy", table, "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.err);
    assert!(dry.out.contains("+ example.com verify/high"), "{}", dry.out);
    assert!(
        dry.err
            .contains("line 5: [relay.example]:587: a next-hop key"),
        "{}",
        dry.err
    );
    assert!(
        dry.err.contains("line 6: dane.example dane: mapped to may"),
        "{}",
        dry.err
    );
    let outbound = ctl.json(&["rules", "list", "--direction", "outbound"]);
    assert_eq!(
        outbound["items"].as_array().unwrap().len(),
        0,
        "a dry run changes nothing"
    );
    let v = ctl.json(&["versions"])["current"].as_u64().unwrap();
    let done = ctl.run(&["import", "postfix-tls-policy", table]);
    assert_eq!(done.code, 0, "{}", done.err);
    assert_eq!(ctl.json(&["versions"])["current"].as_u64(), Some(v + 1));
    let outbound = ctl.json(&["rules", "list", "--direction", "outbound"]);
    let matches: Vec<&str> = outbound["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["match"].as_str().unwrap())
        .collect();
    assert_eq!(matches, ["example.com", ".example.net", "dane.example"]);

    // A CSV export of 200,000 inbound rules, in one version.
    let csv = dir.path().join("rules.csv");
    let mut text = String::from("match,level,cipher_strength,enabled,comment\n");
    for i in 0..200_000u32 {
        let [_, b, c, d] = i.to_be_bytes();
        text.push_str(&format!("10.{b}.{c}.{d}/32,encrypt,,true,host {i}\n"));
    }
    std::fs::write(&csv, text).unwrap();
    let started = std::time::Instant::now();
    let csv = csv.to_str().unwrap();
    let imported = ctl.run(&["rules", "import", "--direction", "inbound", csv]);
    assert_eq!(imported.code, 0, "{}", imported.err);
    assert!(
        imported.out.starts_with("200000 rules in place"),
        "{}",
        imported.out
    );
    eprintln!("200,000-line CSV import: {:?}", started.elapsed());
    let page = ctl.json(&["rules", "list", "--direction", "inbound", "--limit", "1"]);
    assert_eq!(page["items"][0]["match"], "10.0.0.0/32", "{page}");

    // Completions and the man page come from the same definitions.
    let completions = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&completions.stdout).contains("ctl"));
    let man = Command::new(BIN).arg("man").output().unwrap();
    assert!(String::from_utf8_lossy(&man.stdout).contains(".TH postern"));
}

/// The token is never sent in plain text to a host that is not loopback, unless asked.
#[test]
fn the_token_does_not_travel_over_plain_http_to_another_host() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "secret").unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(BIN)
            .args(["ctl", "--url", "http://192.0.2.1:8080", "whoami"])
            .args(extra)
            .env("POSTERN_TOKEN_FILE", &token)
            .env_remove("POSTERN_URL")
            .env_remove("POSTERN_CA")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("refusing to send the token in plain text"),
        "{err}"
    );
    let (_, err) = run(&["--insecure-http"]);
    assert!(!err.contains("refusing to send the token"), "{err}");
}
