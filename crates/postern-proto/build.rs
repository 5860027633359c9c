//! Compiles proto/ with protox (pure Rust), so building needs no protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: `env!` would fix the path when this script is compiled, and a target
    // directory shared by two checkouts would then build the second from the first's protos.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = ["postern/v1/policy.proto", "postern/v1/tracking.proto"];
    let descriptors = protox::compile(files, [&root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    for f in files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    Ok(())
}
