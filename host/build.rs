//! Builds the wasm guests in `plugins/` (the built-in and test plugins) and `examples/` (two cargo
//! workspaces of their own) for `wasm32-wasip2`, once per build, into OUT_DIR with their own
//! target directory, and tells the crate where they are: `FARMGATE_GUEST_DIR` names the directory
//! holding `<crate_name>.wasm` for each guest. The built-ins are embedded from there.
//!
//! It also reads the contract version from the `package farmgate:plugin@X.Y.Z;` line of
//! `sdk/wit/farmgate.wit`, the one place it is written, and hands it to the crate as
//! `FARMGATE_CONTRACT_VERSION` (the value of `plugins::CONTRACT_VERSION`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let root =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_dir = out.join("guests");
    let guest_dir = target_dir.join("wasm32-wasip2").join("release");
    println!("cargo:rustc-env=FARMGATE_GUEST_DIR={}", guest_dir.display());
    println!("cargo:rerun-if-changed=host/build.rs");
    let version = contract_version(&root.join("sdk").join("wit").join("farmgate.wit"));
    println!("cargo:rustc-env=FARMGATE_CONTRACT_VERSION={version}");
    watch(&root.join("sdk"));
    std::fs::create_dir_all(&guest_dir).expect("create guest dir");
    // The built-in and test plugins, then the examples: two workspaces, one target directory,
    // so the SDK and its dependencies are compiled once for both.
    for workspace in ["plugins", "examples"] {
        let dir = root.join(workspace);
        let manifest = dir.join("Cargo.toml");
        if !manifest.exists() {
            continue;
        }
        watch(&dir);
        build_guests(&manifest, &target_dir, workspace);
    }
}

// `contract_version`, shared with the SDK's build script.
include!("../sdk/contract_version.rs");

/// Builds one guest workspace for wasm32-wasip2 in release.
fn build_guests(manifest: &Path, target_dir: &Path, what: &str) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--manifest-path",
    ])
    .arg(manifest)
    .arg("--target-dir")
    .arg(target_dir);
    // The outer build's settings are for the host target, not for the guests.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo to build the wasm guests");
    if !status.success() {
        panic!(
            "building the wasm guests in {what}/ failed. If the error above says the \
             wasm32-wasip2 target is missing, run `.ci/setup` (it runs `rustup target add wasm32-wasip2`)."
        );
    }
}

/// Reruns the build script when anything under `dir` changes, except build output.
fn watch(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if p.is_dir() {
            watch(&p);
        } else {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
}
