//! A client generated from the committed `openapi/postern.json` by a real generator
//! (openapi-python-client, installed by .ci/run) creates, lists and deletes a rule against a
//! running control plane.

mod support;

use std::path::Path;
use std::process::Command;

use support::{Pki, Postern};

#[test]
fn python_client_generated_from_the_committed_document_works() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = tempfile::tempdir().unwrap();
    let package = out.path().join("client");
    let generated = Command::new("openapi-python-client")
        .arg("generate")
        .arg("--path")
        .arg(root.join("openapi/postern.json"))
        .arg("--output-path")
        .arg(&package)
        .arg("--overwrite")
        .output()
        .expect("openapi-python-client is installed (.ci/run installs it: pip install openapi-python-client)");
    let log = String::from_utf8_lossy(&generated.stdout).to_string()
        + &String::from_utf8_lossy(&generated.stderr);
    assert!(generated.status.success(), "generation failed: {log}");
    assert!(
        !log.contains("Warning"),
        "the generator warned about the document: {log}"
    );

    let data = tempfile::tempdir().unwrap();
    let pki = Pki::new(&data.path().join("tls"));
    let postern = Postern::control(data.path(), &pki);
    let run = Command::new("python3")
        .arg(root.join("tests/python/client_roundtrip.py"))
        .arg(&postern.base)
        .arg(postern.admin_token())
        .arg(pki.dir.join("ca.pem"))
        .env("PYTHONPATH", &package)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}
