//! Build script of the benchmarks: generates the tonic side of the comparison harness, and
//! records the facts the harness prints about how it was built.
//!
//! `proto/bench.proto` is parsed in pure Rust by protox into a `FileDescriptorSet`, which
//! tonic-prost-build turns into code: no `protoc` is needed, or ever run.

use std::path::Path;
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/bench.proto");
    println!("cargo:rerun-if-changed=../Cargo.lock");

    let descriptors = protox::compile(["proto/bench.proto"], ["proto"])?;
    // `bytes` fields as `bytes::Bytes`, as in the rpc-core side's hand-written messages, so
    // both decode the payload the same way (a slice of the read buffer, no copy). Everything
    // else is tonic-prost-build's default.
    tonic_prost_build::configure().bytes(".").compile_fds(descriptors)?;

    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let rustc_version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|version| version.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=COMPARE_RUSTC_VERSION={rustc_version}");

    // The exact versions of the stacks compared, from the workspace's lock file.
    let lock = std::fs::read_to_string(Path::new("..").join("Cargo.lock")).unwrap_or_default();
    for (krate, var) in [("tonic", "COMPARE_TONIC_VERSION"), ("tarpc", "COMPARE_TARPC_VERSION")] {
        let version = locked_version(&lock, krate).unwrap_or("unknown");
        println!("cargo:rustc-env={var}={version}");
    }
    Ok(())
}

/// The version of `krate` in a `Cargo.lock` (the first, if several are locked).
fn locked_version<'a>(lock: &'a str, krate: &str) -> Option<&'a str> {
    let name = format!("name = \"{krate}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == name {
            let version = lines.next()?.trim().strip_prefix("version = \"")?;
            return version.strip_suffix('"');
        }
    }
    None
}
