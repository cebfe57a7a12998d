//! Builds the stand-in Agones SDK sidecar's gRPC server code for tests/tests/agones.rs
//! from the SDK's published proto files: those the `agones` crate (the SDK the engine
//! uses) ships in its own source, found through `cargo metadata`, so the test and the
//! engine speak the same version of the protocol and no proto file is copied here.

use std::{path::PathBuf, process::Command};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let proto = agones_proto_dir();
    let file = |p: &str| proto.join(p);
    tonic_build::configure()
        .build_client(false)
        .build_server(true)
        .compile_protos(
            &[file("sdk/sdk.proto"), file("sdk/beta/beta.proto")],
            &[
                file("googleapis"),
                file("grpc-gateway"),
                file("sdk/beta"),
                file("sdk"),
            ],
        )
        .unwrap_or_else(|e| {
            panic!(
                "compiling the Agones SDK proto in {} (needs protoc: apt-get install \
                 protobuf-compiler, as scripts/setup.sh does): {e}",
                proto.display()
            )
        });
}

/// `proto/` of the `agones` crate in this workspace's dependency graph.
fn agones_proto_dir() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut metadata = Command::new(cargo);
    metadata.args(["metadata", "--format-version", "1", "--locked", "--offline"]);
    // Only the packages this build can use: without the filter, cargo wants the manifest
    // of every package for every platform in the lock file, and offline on a fresh
    // machine it has downloaded only this platform's (a clean CI run failed on
    // `android_system_properties`, a dependency of chrono on Android).
    if let Ok(target) = std::env::var("TARGET") {
        metadata.args(["--filter-platform", &target]);
    }
    let out = metadata
        .current_dir(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()))
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("cargo metadata printed JSON");
    let manifest = meta["packages"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "agones"))
        .and_then(|p| p["manifest_path"].as_str())
        .expect("the agones crate is in the dependency graph (xrudp depends on it)");
    let dir = PathBuf::from(manifest)
        .parent()
        .expect("a manifest path has a parent")
        .join("proto");
    println!("cargo:rerun-if-changed={}", dir.display());
    dir
}
