//! `farmgate plugin new | build | test` outside the repository's own crates: the scaffolded
//! crate builds, its unit test passes, and the built artifact answers `plugin test`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn farmgate(args: &[&str], dir: &Path, target: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_farmgate"))
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .output()
        .expect("run farmgate")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn scaffolded_plugins_build_test_and_run() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Kept between runs so the SDK and wit-bindgen compile once.
    let target: PathBuf = repo.join("target").join("scaffold-test");
    let work = tempfile::tempdir().unwrap();
    let sdk = repo.join("sdk");
    let sdk = sdk.to_str().unwrap();

    for (name, hook, expect) in [
        ("my-router", "router", "farm: Some(\n            \"api\""),
        ("my-affinity", "affinity", "id: 1"),
        (
            "my-links",
            "link-translation",
            "to: \"https://www.example.com\"",
        ),
        ("my-health", "health-evaluation", "\"status 503\""),
    ] {
        let out = farmgate(
            &["plugin", "new", name, "--hook", hook, "--sdk", sdk],
            work.path(),
            &target,
        );
        assert!(out.status.success(), "plugin new: {}", text(&out));
        let krate = work.path().join(name);
        for file in ["Cargo.toml", "src/lib.rs", "README.md", "input.json"] {
            assert!(krate.join(file).exists(), "{file} missing");
        }

        let test = Command::new(env!("CARGO"))
            .args(["test", "--quiet"])
            .current_dir(&krate)
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .unwrap();
        assert!(
            test.status.success(),
            "cargo test of the new crate: {}",
            text(&test)
        );

        let built = farmgate(&["plugin", "build"], &krate, &target);
        assert!(built.status.success(), "plugin build: {}", text(&built));
        let wasm = String::from_utf8_lossy(&built.stdout).trim().to_string();
        assert!(
            wasm.ends_with(&format!("{}.wasm", name.replace('-', "_"))),
            "{wasm}"
        );

        let ran = farmgate(
            &["plugin", "test", &wasm, "--input", "input.json"],
            &krate,
            &target,
        );
        assert!(ran.status.success(), "plugin test: {}", text(&ran));
        let printed = text(&ran);
        assert!(printed.contains(expect), "{printed}");
    }

    // Errors users can act on.
    let out = farmgate(
        &[
            "plugin",
            "new",
            "my-router",
            "--hook",
            "router",
            "--sdk",
            sdk,
        ],
        work.path(),
        &target,
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("already exists"), "{}", text(&out));
    let out = farmgate(
        &[
            "plugin",
            "test",
            "/nonexistent.wasm",
            "--input",
            "input.json",
        ],
        &work.path().join("my-router"),
        &target,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("cannot read /nonexistent.wasm"),
        "{}",
        text(&out)
    );
}
