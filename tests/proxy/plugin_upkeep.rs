//! Keeping plugins in order through the real proxy: new settings after refused ones, a reload
//! that compiles nothing it has compiled already and says which plugins refused their settings,
//! failures counted per hook, a plugin's log lines rate-limited, and failure reasons a person
//! can act on.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use farmgate::plugins::{Plugin, Runtime};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::support::*;

/// Farms `main` (backend a) and `v2` (backend b), the folder's `router` plugin with `settings`,
/// and an admin listener.
fn router_config(a: &Backend, b: &Backend, dir: &Path, settings: &str) -> String {
    format!(
        r#"
[access_log]
format = "off"
[admin]
bind = "127.0.0.1:0"
[plugins]
dir = {dir:?}
call_timeout = "2s"
[plugins.config.router]
settings = {settings}
[[listeners]]
name = "web"
bind = "127.0.0.1:0"
[[rules]]
name = "site"
public_names = ["*"]
farm = "main"
[[farms]]
name = "main"
members = [{{ name = "a", host = "127.0.0.1", port = {pa} }}]
[[farms]]
name = "v2"
members = [{{ name = "b", host = "127.0.0.1", port = {pb} }}]
"#,
        dir = dir.display().to_string(),
        pa = a.port(),
        pb = b.port(),
    )
}

fn runtime(proxy: &Proxy) -> Arc<Runtime> {
    proxy.running().proxy.plugins.clone()
}

fn plugin(rt: &Runtime, name: &str) -> Arc<Plugin> {
    rt.plugins()
        .plugins
        .iter()
        .find(|p| p.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("plugin {name} is loaded"))
}

/// The path member b saw for `/v2/x` sent through the proxy.
async fn b_sees(client: &mut Client, b: &Backend) -> String {
    let a = client.get("www.example.com", "/v2/x").await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("x-backend"), Some("b"));
    b.last_seen().uri
}

async fn admin_call(proxy: &Proxy, method: &str, path: &str) -> (u16, Value) {
    let addr = proxy.running().admin.expect("the admin listener is on");
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "admin")
        .body(Full::new(Bytes::new()).map_err(|e| match e {}).boxed())
        .unwrap();
    let a = Client::connect(addr).await.request(req).await;
    let text = a.text();
    let v = serde_json::from_slice(&a.body).unwrap_or(Value::String(text));
    (a.status.as_u16(), v)
}

#[tokio::test]
async fn settings_changed_after_refused_ones_take_effect_and_the_reload_says_what_was_refused() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    drop_plugin(&plugins, "router", &guest("test-router-v2"));
    let config = |settings: &str| router_config(&a, &b, &plugins, settings);
    let (proxy, path) = start_on_file(dir.path(), &config("{ farm = \"v2\" }")).await;
    let mut client = Client::connect(proxy.addr).await;
    assert_eq!(b_sees(&mut client, &b).await, "/v2/x");

    // Refused settings: the reload is applied, the answer names the plugin and why, and the
    // running version keeps its settings.
    write_config(&path, &config("{ farm = \"v2\", strip = \"yes\" }"));
    let (status, answer) = admin_call(&proxy, "POST", "/api/reload").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["complete"], false, "{answer}");
    let refused = &answer["plugins"]["refused"][0];
    assert_eq!(refused["plugin"], "router", "{answer}");
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|r| r.contains("refused its settings") && r.contains("strip")),
        "{answer}"
    );
    assert!(
        answer["reloaded"]
            .as_str()
            .is_some_and(|r| r.contains("plugin router refused")),
        "{answer}"
    );
    assert_eq!(b_sees(&mut client, &b).await, "/v2/x");
    // The operator's view: the version running, where it is bound, the settings in effect, and
    // the refused file with its reason.
    let (status, plugins) = admin_call(&proxy, "GET", "/api/plugins").await;
    assert_eq!(status, 200, "{plugins}");
    let router = &plugins["plugins"][0];
    assert_eq!(router["name"], "router", "{plugins}");
    assert_eq!(router["settings"]["farm"], "v2", "{plugins}");
    assert!(router["settings"].get("strip").is_none(), "{plugins}");
    assert!(router["loaded_at_unix_ms"].as_u64().is_some_and(|t| t > 0));
    assert_eq!(
        router["bound"],
        serde_json::json!([{ "rule": "site", "hook": "router", "place": 1 }]),
        "{plugins}"
    );
    assert_eq!(router["failures_by_hook"]["router"], 0, "{plugins}");
    assert_eq!(plugins["rejected"][0]["plugin"], "router", "{plugins}");
    assert!(
        plugins["rejected"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("strip")),
        "{plugins}"
    );

    // Other settings for the same bytes are another try, and take effect.
    write_config(&path, &config("{ farm = \"v2\", strip = true }"));
    let (status, answer) = admin_call(&proxy, "POST", "/api/reload").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["complete"], true, "{answer}");
    assert_eq!(answer["plugins"]["applied"][0]["plugin"], "router");
    assert_eq!(b_sees(&mut client, &b).await, "/x");
    let rt = runtime(&proxy);
    assert!(rt.rejected().is_empty(), "{:?}", rt.rejected());
    let (_, plugins) = admin_call(&proxy, "GET", "/api/plugins").await;
    assert_eq!(plugins["rejected"], serde_json::json!([]), "{plugins}");
    assert_eq!(
        plugins["plugins"][0]["settings"]["strip"], true,
        "{plugins}"
    );
}

#[tokio::test]
async fn a_settings_reload_compiles_nothing_already_compiled() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    drop_plugin(&plugins, "router", &guest("test-router-v2"));
    let config = |settings: &str| router_config(&a, &b, &plugins, settings);
    let (proxy, path) = start_on_file(dir.path(), &config("{ farm = \"v2\" }")).await;
    let rt = runtime(&proxy);
    let mut client = Client::connect(proxy.addr).await;
    assert_eq!(b_sees(&mut client, &b).await, "/v2/x");
    let compiled = rt.compiles();
    let before = plugin(&rt, "router");

    // New settings for the plugin, and for the built-ins (the rule gains a rewrite).
    let next = config("{ farm = \"v2\", strip = true }").replace(
        "farm = \"main\"\n",
        "farm = \"main\"\n[[rules.rewrite]]\npath = '^/old/(.*)$'\naction = \"redirect\"\nurl = \"/new/{R:1}\"\n",
    );
    write_config(&path, &next);
    proxy.running().reloader.reload().await.expect("reloads");
    let after = plugin(&rt, "router");
    assert!(
        !Arc::ptr_eq(&before, &after),
        "the new settings made a new version"
    );
    assert_eq!(after.hash, before.hash);
    assert_eq!(b_sees(&mut client, &b).await, "/x");
    // The settings took effect without waiting for a compiler: the code loaded already was
    // reused, the plugin's and the built-ins'.
    assert_eq!(
        rt.compiles(),
        compiled,
        "a settings change compiled code again"
    );
}

/// A proxy whose `h` plugin (test-hostile) routes in `mode` and whose affinity hook always names
/// a member the farm does not have.
async fn hostile_proxy(a: &Backend, dir: &Path, mode: &str, extra: &str, farm: &str) -> Proxy {
    drop_plugin(dir, "h", &guest("test-hostile"));
    Proxy::start(&format!(
        r#"
[access_log]
format = "off"
[admin]
bind = "127.0.0.1:0"
[plugins]
dir = {dir:?}
failures_before_disable = 3
call_timeout = "2s"
{extra}
[plugins.config.h]
settings = {{ mode = "{mode}" }}
[[listeners]]
name = "web"
bind = "127.0.0.1:0"
[[rules]]
name = "site"
public_names = ["*"]
farm = "main"
[[farms]]
name = "main"
members = [{{ name = "a", host = "127.0.0.1", port = {port} }}]
{farm}
"#,
        dir = dir.display().to_string(),
        port = a.port(),
    ))
    .await
}

#[tokio::test]
async fn a_hook_that_keeps_failing_disables_the_plugin_while_another_hook_passes() {
    let a = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = hostile_proxy(&a, dir.path(), "ok", "", "").await;
    let rt = runtime(&proxy);
    let h = plugin(&rt, "h");
    let mut client = Client::connect(proxy.addr).await;
    // Each request: the router passes, then the affinity hook's decision is refused.
    for _ in 0..3 {
        assert_eq!(client.get("www.example.com", "/").await.status, 200);
    }
    assert_eq!(h.stats.failures_by_hook[1].load(Ordering::Relaxed), 3);
    assert_eq!(h.stats.failures_by_hook[0].load(Ordering::Relaxed), 0);
    assert!(
        rt.disabled_for(&h).is_some(),
        "three affinity failures in a row did not disable the plugin"
    );
    let calls = h.stats.calls.load(Ordering::Relaxed);
    assert_eq!(client.get("www.example.com", "/").await.status, 200);
    assert_eq!(
        h.stats.calls.load(Ordering::Relaxed),
        calls,
        "a disabled plugin was called"
    );
}

#[tokio::test]
async fn a_plugins_log_lines_are_rate_limited_and_counted_in_metrics() {
    let a = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = hostile_proxy(&a, dir.path(), "chatty", "", "").await;
    let rt = runtime(&proxy);
    let h = plugin(&rt, "h");
    let mut client = Client::connect(proxy.addr).await;
    // One call writes 100 lines; whatever second boundary it spans, at most two seconds' budget
    // of them are written.
    assert_eq!(client.get("www.example.com", "/").await.status, 200);
    let limit = u64::from(farmgate::plugins::LOG_LINES_PER_SECOND);
    let suppressed = h.log.suppressed.load(Ordering::Relaxed);
    assert!(
        suppressed >= 100 - 2 * limit,
        "{suppressed} lines suppressed"
    );
    let metrics = admin_call(&proxy, "GET", "/metrics").await.1;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("farmgate_plugin_log_lines_suppressed_total{")
                && l.contains("plugin=\"h\"")
        })
        .unwrap_or_else(|| panic!("no suppressed-lines counter for h in\n{metrics}"));
    let counted: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(counted >= suppressed, "{line}");
    // The plugin writes nothing more: the summary line still comes when the second is over.
    eventually("a summary line of every suppressed line", || {
        h.log.summarised.load(Ordering::Relaxed) == h.log.suppressed.load(Ordering::Relaxed)
    })
    .await;
}

#[tokio::test]
async fn a_failed_call_says_which_memory_limit_and_which_of_the_plugins_functions() {
    let a = Backend::start("a").await;
    for (mode, expected) in [
        ("alloc", &["memory limit (16 MB) reached"][..]),
        (
            "panic",
            &[
                "panicked: hostile plugin panics on /",
                "test_hostile::Hostile",
                "route",
            ],
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        // Only the router is asked, so its failure is the latest.
        let proxy = hostile_proxy(
            &a,
            dir.path(),
            mode,
            "memory_limit_mb = 16",
            "affinity_plugins = []",
        )
        .await;
        let h = plugin(&runtime(&proxy), "h");
        let mut client = Client::connect(proxy.addr).await;
        assert_eq!(client.get("www.example.com", "/").await.status, 200);
        let (hook, reason) = h.stats.last_failure().expect("the call failed");
        assert_eq!(hook, "router", "{reason}");
        for e in expected {
            assert!(reason.contains(e), "{mode}: {reason:?} lacks {e:?}");
        }
        assert!(!reason.contains("<unknown>"), "{mode}: {reason}");
        assert!(!reason.contains('\n'), "{mode}: one line, not {reason:?}");
    }
}

#[test]
fn check_loads_the_plugin_folder_and_reports_plugin_names_and_settings_with_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins.d");
    std::fs::create_dir(&plugins).unwrap();
    drop_plugin(&plugins, "router", &guest("test-router-v2"));
    let good = r#"[plugins]
dir = "plugins.d"
[plugins.config.router]
settings = { farm = "v2" }
[[listeners]]
name = "web"
bind = "127.0.0.1:0"
[[rules]]
name = "site"
public_names = ["*"]
farm = "v2"
router_plugins = ["router"]
[[farms]]
name = "v2"
members = [{ host = "127.0.0.1", port = 9 }]
"#;
    let check = |text: &str| {
        let path = dir.path().join("farmgate.toml");
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_farmgate"))
            .args(["check", path.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = check(good);
    assert!(
        ok && out.contains("plugin router: router") && out.contains("config OK"),
        "{out}"
    );

    let bad = good
        .replace(
            "router_plugins = [\"router\"]",
            "router_plugins = [\"routr\"]",
        )
        .replace("farm = \"v2\" }", "farm = \"v2\", strip = \"yes\" }")
        + "[plugins.config.apiversoin]\nsettings = {}\n";
    let (ok, out) = check(&bad);
    assert!(!ok, "{out}");
    assert!(!out.contains("config OK"), "{out}");
    let line_of = |needle: &str| bad.lines().position(|l| l.contains(needle)).unwrap() + 1;
    for (line, words) in [
        (
            line_of("[plugins.config.router]"),
            "plugins.config.router: plugin router",
        ),
        (
            line_of("routr"),
            "rules[0].router_plugins: no plugin \"routr\"",
        ),
        (
            line_of("apiversoin"),
            "plugins.config.apiversoin: settings for plugin \"apiversoin\"",
        ),
    ] {
        assert!(
            out.contains(&format!("farmgate.toml:{line}:")) && out.contains(words),
            "line {line}, {words:?} in\n{out}"
        );
    }
    assert!(out.contains("strip"), "{out}");
}

#[test]
fn plugin_test_shows_a_text_body_as_text_and_plugin_build_passes_cargo_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("maintenance.wasm");
    std::fs::write(&wasm, guest("maintenance")).unwrap();
    let input = dir.path().join("input.json");
    std::fs::write(
        &input,
        r#"{ "hook": "router", "settings": { "title": "Back soon" }, "request": { "path": "/" } }"#,
    )
    .unwrap();
    let farmgate = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_farmgate"))
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, out) = farmgate(&[
        "plugin",
        "test",
        wasm.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("status: 503") && out.contains("body (text): \"") && out.contains("Back soon"),
        "{out}"
    );

    // What follows `--` reaches cargo: a feature the crate lacks is cargo's complaint.
    let krate = dir.path().join("krate");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::write(
        krate.join("Cargo.toml"),
        "[package]\nname = \"krate\"\nversion = \"0.1.0\"\nedition = \"2021\"\n[lib]\ncrate-type = [\"cdylib\"]\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(krate.join("src/lib.rs"), "").unwrap();
    let (ok, out) = farmgate(&[
        "plugin",
        "build",
        krate.to_str().unwrap(),
        "--",
        "--features",
        "no-such-feature",
    ]);
    assert!(!ok, "{out}");
    assert!(out.contains("no-such-feature"), "{out}");
}
