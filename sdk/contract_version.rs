// The contract version read from the WIT file at build time. Included by two build scripts,
// the SDK's (`sdk/build.rs`) and the host's (`host/build.rs`), so both read the version the
// same way from the one place it is written.

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
