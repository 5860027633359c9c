//! The book (docs/) against the code: the CLI reference page is generated from the binary's
//! own clap help (`UPDATE_BOOK=1 cargo test -p postern --test book` rewrites it; a stale page
//! fails, like a stale OpenAPI document), and every REST route of the OpenAPI document, every
//! metric of deploy/metrics.txt and every `postern ctl` subcommand has an entry in the book.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_postern");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn help(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .arg("--help")
        // clap shows an option's environment value: none may leak into the page.
        .env_clear()
        .env("COLUMNS", "100")
        .output()
        .expect("the binary runs");
    assert!(out.status.success(), "{args:?} --help: {out:?}");
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// The subcommands a help text lists (clap's `Commands:` section), `help` left out.
fn subcommands(help: &str) -> Vec<String> {
    let Some((_, rest)) = help.split_once("Commands:\n") else {
        return Vec::new();
    };
    rest.lines()
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// Every command's help, depth first: (the command line, its help).
fn commands(prefix: Vec<String>, out: &mut Vec<(String, String)>) {
    let args: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let text = help(&args);
    let subs = subcommands(&text);
    out.push((
        std::iter::once("postern")
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" "),
        text,
    ));
    for sub in subs {
        let mut next = prefix.clone();
        next.push(sub);
        commands(next, out);
    }
}

fn cli_page() -> String {
    let mut all = Vec::new();
    commands(Vec::new(), &mut all);
    let mut page = String::from(
        "# Command-line reference\n\nEvery command of the `postern` binary with its options, as \
         `--help` prints them (generated: `UPDATE_BOOK=1 cargo test -p postern --test book`). \
         Every flag also reads `POSTERN_<FLAG>` from the environment.\n",
    );
    for (line, text) in all {
        page.push_str(&format!(
            "\n## `{line}`\n\n```text\n{}\n```\n",
            text.trim_end()
        ));
    }
    page
}

fn book() -> String {
    let mut all = String::new();
    for entry in std::fs::read_dir(root().join("docs/src")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            all.push_str(&std::fs::read_to_string(path).unwrap());
        }
    }
    all
}

#[test]
fn the_cli_reference_is_generated_from_the_binary() {
    let page = cli_page();
    let path = root().join("docs/src/cli.md");
    if std::env::var_os("UPDATE_BOOK").is_some() {
        std::fs::write(&path, &page).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == page,
        "docs/src/cli.md is stale: run UPDATE_BOOK=1 cargo test -p postern --test book"
    );
}

#[test]
fn every_route_metric_and_ctl_subcommand_has_an_entry() {
    let book = book();
    let openapi: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("openapi/postern.json")).unwrap(),
    )
    .unwrap();
    let mut missing: Vec<String> = openapi["paths"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|p| !book.contains(p.as_str()))
        .map(|p| format!("route {p}"))
        .collect();
    let metrics = std::fs::read_to_string(root().join("deploy/metrics.txt")).unwrap();
    missing.extend(
        metrics
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|m| !m.starts_with('#') && !book.contains(m))
            .map(|m| format!("metric {m}")),
    );
    let ctl = std::fs::read_to_string(root().join("docs/src/ctl.md")).unwrap();
    missing.extend(
        subcommands(&help(&["ctl"]))
            .into_iter()
            .filter(|s| !ctl.contains(&format!("ctl {s}")) && !ctl.contains(&format!("`{s}`")))
            .map(|s| format!("ctl subcommand {s} (docs/src/ctl.md)")),
    );
    assert!(missing.is_empty(), "no entry in the book for: {missing:#?}");
}
