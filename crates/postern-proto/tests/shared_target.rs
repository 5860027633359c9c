//! Two checkouts sharing one target directory (CARGO_TARGET_DIR, CI caches) both build
//! postern-proto. Cargo hashes workspace members by their path relative to the workspace, so the
//! second checkout reuses the first one's compiled build script: that script must find the protos
//! from the environment it runs in, not from where it was compiled (issue 10, point 7).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace's sources (everything cargo needs to load every manifest), without target/.
fn copy_workspace(from: &Path, to: &Path) {
    for entry in [
        "Cargo.toml",
        "Cargo.lock",
        "proto",
        "crates",
        "bench",
        "tests",
    ] {
        copy(&from.join(entry), &to.join(entry));
    }
}

fn copy(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_name() != "target" {
                copy(&e.path(), &to.join(e.file_name()));
            }
        }
    } else {
        std::fs::copy(from, to).unwrap();
    }
}

fn build(checkout: &Path, target: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--offline", "--quiet", "-p", "postern-proto"])
        .current_dir(checkout)
        .env("CARGO_TARGET_DIR", target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "building {} failed:\n{}",
        checkout.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn two_checkouts_sharing_a_target_directory_both_build() {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    // Kept between runs (under target/tmp) so only the first run compiles tonic and prost.
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("shared-target");
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    copy_workspace(&workspace, first.path());
    copy_workspace(&workspace, second.path());
    build(first.path(), &target);
    // The first checkout goes away, as a CI cache outlives the clone that filled it.
    drop(first);
    build(second.path(), &target);
}
