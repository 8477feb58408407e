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

include!("contract_version.rs");
