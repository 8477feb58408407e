//! Reads the contract version from the `package farmgate:plugin@X.Y.Z;` line of
//! `wit/farmgate.wit`, the one place it is written, and hands it to the crate as
//! `FARMGATE_CONTRACT_VERSION` (the value of `CONTRACT_VERSION`).

use std::path::{Path, PathBuf};

fn main() {
    let root =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let version = contract_version(&root.join("wit").join("farmgate.wit"));
    println!("cargo:rustc-env=FARMGATE_CONTRACT_VERSION={version}");
}

/// The version on the `package name@version;` line of the WIT file, which cargo is told to watch.
fn contract_version(wit: &Path) -> String {
    println!("cargo:rerun-if-changed={}", wit.display());
    let text = std::fs::read_to_string(wit)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", wit.display()));
    text.lines()
        .find_map(|line| {
            let (_, version) = line
                .trim()
                .strip_prefix("package ")?
                .strip_suffix(';')?
                .split_once('@')?;
            Some(version.trim().to_string()).filter(|v| !v.is_empty())
        })
        .unwrap_or_else(|| panic!("{} has no `package name@version;` line", wit.display()))
}
