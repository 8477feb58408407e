//! Wasm plugins driven through the real proxy: routing and affinity decisions, hot reload of the
//! watched folder, and hostile plugins that must not take the proxy down.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use farmgate::plugins::Runtime;

use crate::support::*;
use crate::tls_support::Logs;

/// Puts a plugin into the folder the way authors are told to: write elsewhere, rename in.
/// Two farms: `main` (backend "a") for every path, `v2` (backend "b"); plugins from `dir`.
fn two_farm_config(a: &Backend, b: &Backend, dir: &Path, extra: &str) -> String {
    format!(
        r#"
[access_log]
format = "off"
[plugins]
dir = {dir:?}
failures_before_disable = 3
# Generous: these tests are about decisions, not deadlines, and CI machines are busy.
call_timeout = "2s"
{extra}
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

/// Waits until the watcher has finished a scan that started after this call.
async fn next_scan(rt: &Runtime, before: u64) {
    eventually("the plugin folder is rescanned", || rt.scans() > before).await;
}

async fn served_by(client: &mut Client, path: &str) -> String {
    let a = client.get("www.example.com", path).await;
    assert_eq!(a.status, 200, "{}", a.text());
    a.header("x-backend").unwrap_or("").to_string()
}

#[tokio::test]
async fn a_router_plugin_sends_v2_to_another_farm() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dir = tempfile::tempdir().unwrap();
    drop_plugin(dir.path(), "router", &guest("test-router-v2"));
    let config = two_farm_config(
        &a,
        &b,
        dir.path(),
        "[plugins.config.router]\nsettings = { farm = \"v2\", strip = true }",
    );
    let proxy = Proxy::start(&config).await;
    let mut client = Client::connect(proxy.addr).await;
    assert_eq!(served_by(&mut client, "/v2/orders?id=7").await, "b");
    let seen = b.last_seen();
    assert_eq!(
        seen.uri, "/orders?id=7",
        "the plugin's path rewrite reaches the member"
    );
    assert_eq!(seen.headers["x-routed-by"], "test-router-v2");
    assert_eq!(served_by(&mut client, "/orders").await, "a");
    let rt = runtime(&proxy);
    let plugin = rt.plugins().plugins[0].clone();
    assert_eq!(plugin.stats.calls.load(Ordering::Relaxed), 2);
    assert_eq!(plugin.stats.failures.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn an_affinity_plugin_picks_the_member_and_a_passing_plugin_changes_nothing() {
    let backends = [
        Backend::start("m1").await,
        Backend::start("m2").await,
        Backend::start("m3").await,
    ];
    let dir = tempfile::tempdir().unwrap();
    drop_plugin(dir.path(), "a-pass", &guest("test-pass"));
    drop_plugin(dir.path(), "b-fixed", &guest("test-fixed-member"));
    let refs: Vec<&Backend> = backends.iter().collect();
    let config = simple_config(&refs, "", "").replace(
        "[[listeners]]",
        &format!(
            "[plugins]\ndir = {:?}\ncall_timeout = \"2s\"\n[plugins.config.b-fixed]\nsettings = {{ member = 2 }}\n[[listeners]]",
            dir.path().display().to_string()
        ),
    );
    let proxy = Proxy::start(&config).await;
    let mut client = Client::connect(proxy.addr).await;
    for _ in 0..6 {
        assert_eq!(served_by(&mut client, "/").await, "m3");
    }
    // The folder's plugins are bound in file-name order: "a-pass" is asked first and passes.
    let rt = runtime(&proxy);
    let names: Vec<String> = rt
        .plugins()
        .plugins
        .iter()
        .map(|p| p.name.clone())
        .collect();
    assert_eq!(names, ["a-pass", "b-fixed"]);
    assert!(
        rt.plugins()
            .plugins
            .iter()
            .all(|p| p.stats.calls.load(Ordering::Relaxed) >= 6)
    );

    // With only the passing plugin, the built-in balancing spreads requests again.
    let before = rt.scans();
    std::fs::remove_file(dir.path().join("b-fixed.wasm")).unwrap();
    next_scan(&rt, before).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        seen.insert(served_by(&mut client, "/").await);
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
}

#[tokio::test]
async fn plugins_hot_reload_while_serving() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&two_farm_config(&a, &b, dir.path(), "")).await;
    let rt = runtime(&proxy);
    let mut client = Client::connect(proxy.addr).await;
    assert_eq!(served_by(&mut client, "/v2/x").await, "a");

    // Added: takes effect.
    drop_plugin(dir.path(), "router", &guest("test-router-v2"));
    let mut routed = false;
    for _ in 0..500 {
        if served_by(&mut client, "/v2/x").await == "b" {
            routed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(routed, "the dropped plugin never took effect");
    let first = rt.plugins().plugins[0].hash.clone();

    // Replaced by a new version (one that passes): the old decision stops.
    drop_plugin(dir.path(), "router", &guest("test-pass"));
    eventually("the new version is loaded", || {
        rt.plugins()
            .plugins
            .first()
            .is_some_and(|p| p.hash != first)
    })
    .await;
    assert_eq!(served_by(&mut client, "/v2/x").await, "a");
    let second = rt.plugins().plugins[0].hash.clone();

    // A corrupt file is refused; the previous version keeps serving.
    let before = rt.scans();
    drop_plugin(dir.path(), "router", b"\0asm this is not a component");
    next_scan(&rt, before).await;
    assert_eq!(rt.plugins().plugins[0].hash, second);
    let rejected = rt.rejected();
    assert!(
        rejected
            .iter()
            .any(|(file, why)| file.ends_with("router.wasm") && why.contains("does not compile")),
        "{rejected:?}"
    );
    assert_eq!(served_by(&mut client, "/v2/x").await, "a");

    // Deleted: unbound.
    drop_plugin(dir.path(), "router", &guest("test-router-v2"));
    eventually("router loaded again", || {
        rt.plugins()
            .plugins
            .first()
            .is_some_and(|p| p.hash == first)
    })
    .await;
    assert_eq!(served_by(&mut client, "/v2/x").await, "b");
    std::fs::remove_file(dir.path().join("router.wasm")).unwrap();
    eventually("plugin unloaded", || rt.plugins().plugins.is_empty()).await;
    assert_eq!(served_by(&mut client, "/v2/x").await, "a");
}

#[tokio::test]
async fn a_component_for_another_contract_version_is_refused_with_the_reason() {
    let a = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let component = |version: &str| {
        wat::parse_str(format!(
            r#"(component (instance $i) (export "farmgate:plugin/router@{version}" (instance $i)))"#
        ))
        .unwrap()
    };
    // A plugin built with the SDK before the request became a resource, and one from later.
    drop_plugin(dir.path(), "older", &component("0.2.0"));
    drop_plugin(dir.path(), "future", &component("0.4.0"));
    let none = wat::parse_str("(component)").unwrap();
    drop_plugin(dir.path(), "empty", &none);
    let proxy = Proxy::start(&two_farm_config(&a, &a, dir.path(), "")).await;
    let rt = runtime(&proxy);
    assert!(rt.plugins().plugins.is_empty());
    let rejected = rt.rejected();
    let why = |name: &str| {
        rejected
            .iter()
            .find(|(f, _)| f.ends_with(name))
            .map(|(_, w)| w.clone())
            .unwrap_or_default()
    };
    let speaks = format!(
        "speaks farmgate:plugin@{}",
        farmgate::plugins::CONTRACT_VERSION
    );
    assert!(
        why("older.wasm").contains("built against farmgate:plugin@0.2.0")
            && why("older.wasm").contains(&speaks),
        "{rejected:?}"
    );
    assert!(
        why("future.wasm").contains("built against farmgate:plugin@0.4.0")
            && why("future.wasm").contains(&speaks),
        "{rejected:?}"
    );
    assert!(
        why("empty.wasm").contains("exports no farmgate hook"),
        "{rejected:?}"
    );
}

#[tokio::test]
async fn hostile_plugins_are_contained_counted_and_disabled() {
    let a = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let hostile = guest("test-hostile");
    for mode in ["loop", "panic", "alloc", "closed"] {
        drop_plugin(dir.path(), &format!("h-{mode}"), &hostile);
    }
    let mut config = format!(
        r#"
[access_log]
format = "off"
[plugins]
dir = {dir:?}
failures_before_disable = 3
call_timeout = "20ms"
memory_limit_mb = 16
[plugins.config.h-loop]
settings = {{ mode = "loop" }}
[plugins.config.h-panic]
settings = {{ mode = "panic" }}
[plugins.config.h-alloc]
settings = {{ mode = "alloc" }}
[plugins.config.h-closed]
fail_closed = true
settings = {{ mode = "panic" }}
[[listeners]]
name = "web"
bind = "127.0.0.1:0"
[[farms]]
name = "main"
members = [{{ name = "a", host = "127.0.0.1", port = {port} }}]
affinity_plugins = []
[[farms]]
name = "out-of-range"
members = [{{ name = "a", host = "127.0.0.1", port = {port} }}]
affinity_plugins = ["h-loop"]
[[rules]]
name = "affinity"
public_names = ["affinity.test"]
farm = "out-of-range"
router_plugins = []
"#,
        dir = dir.path().display().to_string(),
        port = a.port(),
    );
    // One rule per hostile router.
    for mode in ["loop", "panic", "alloc", "closed"] {
        config.push_str(&format!(
            "[[rules]]\nname = \"{mode}\"\npublic_names = [\"{mode}.test\"]\nfarm = \"main\"\nrouter_plugins = [\"h-{mode}\"]\n"
        ));
    }
    let proxy = Proxy::start(&config).await;
    let rt = runtime(&proxy);
    assert_eq!(rt.plugins().plugins.len(), 4);
    let mut client = Client::connect(proxy.addr).await;

    // Fail-open: every request is still served by the member, through the fallback.
    for mode in ["loop", "panic", "alloc"] {
        let a = client.get(&format!("{mode}.test"), "/").await;
        assert_eq!(a.status, 200, "{mode}: {}", a.text());
    }
    // Fail-closed: 503.
    let closed = client.get("closed.test", "/").await;
    assert_eq!(closed.status, 503);
    assert!(closed.text().contains("policy"), "{}", closed.text());

    let plugin = |name: &str| {
        rt.plugins()
            .plugins
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .unwrap()
    };
    for name in ["h-loop", "h-panic", "h-alloc", "h-closed"] {
        assert_eq!(
            plugin(name).stats.failures.load(Ordering::Relaxed),
            1,
            "{name}"
        );
    }

    // An affinity decision naming a member the farm does not have is a failure too; the
    // built-in balancing serves the request.
    assert_eq!(client.get("affinity.test", "/").await.status, 200);
    assert_eq!(plugin("h-loop").stats.failures.load(Ordering::Relaxed), 2);

    // After `failures_before_disable` (3) failures in a row, a plugin is disabled for a while.
    for _ in 0..3 {
        assert_eq!(client.get("panic.test", "/").await.status, 200);
    }
    let p = plugin("h-panic");
    assert!(rt.disabled_for(&p).is_some(), "backoff did not engage");
    let calls = p.stats.calls.load(Ordering::Relaxed);
    assert_eq!(client.get("panic.test", "/").await.status, 200);
    assert_eq!(
        p.stats.calls.load(Ordering::Relaxed),
        calls,
        "a disabled plugin was called"
    );
}

#[tokio::test]
async fn replaced_versions_and_their_instances_are_freed() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    // farmgate creates the cache directory itself (mode 0700); it refuses one others could write.
    let cache = scratch.path().join("compiled");
    let config = two_farm_config(
        &a,
        &b,
        dir.path(),
        &format!("cache_dir = {:?}", cache.display().to_string()),
    );
    let proxy = Proxy::start(&config).await;
    let rt = runtime(&proxy);
    let mut client = Client::connect(proxy.addr).await;
    let versions = [guest("test-router-v2"), guest("test-pass")];
    const SWAPS: usize = 1000;
    for i in 0..SWAPS {
        let bytes = versions[i % 2].clone();
        let loader = Arc::clone(&rt);
        let plugin = tokio::task::spawn_blocking(move || {
            let hash = sha256_hex(&bytes);
            loader.load("router", Path::new("router.wasm"), &bytes, hash)
        })
        .await
        .unwrap()
        .unwrap();
        rt.install(farmgate::plugins::PluginSet {
            plugins: vec![plugin],
        });
        // Every version serves a request, so every version had an instance in this thread's cache.
        let expected = if i % 2 == 0 { "b" } else { "a" };
        assert_eq!(served_by(&mut client, "/v2/x").await, expected, "swap {i}");
    }
    // Two contents, compiled once each: every other load came from the code cache (beside the
    // built-in plugins' code, cached at start).
    let builtins = rt.builtins().len();
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 2 + builtins);
    // The current version, and at most one instance per thread that called it (of the router
    // and of the built-in balancer, which every request asks).
    assert_eq!(rt.live().versions(), 1 + builtins);
    let threads = 2; // the test's own thread and, at most, one blocking thread
    assert!(
        rt.live().instances() <= 2 * threads,
        "{} instances alive after {SWAPS} swaps",
        rt.live().instances()
    );
}

#[tokio::test]
async fn plugins_see_no_environment_unless_granted() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    // The proxy's own environment has PATH; the plugin sees it only when the config grants it.
    assert!(std::env::var_os("PATH").is_some());
    for (grant, expected) in [("", "a"), ("env = { PATH = \"v2\" }", "b")] {
        let dir = tempfile::tempdir().unwrap();
        drop_plugin(dir.path(), "router", &guest("test-router-v2"));
        let extra =
            format!("[plugins.config.router]\nsettings = {{ farm_from_env = \"PATH\" }}\n{grant}");
        let proxy = Proxy::start(&two_farm_config(&a, &b, dir.path(), &extra)).await;
        let mut client = Client::connect(proxy.addr).await;
        assert_eq!(
            served_by(&mut client, "/v2/x").await,
            expected,
            "grant: {grant:?}"
        );
    }
}

#[tokio::test]
async fn a_decision_naming_an_unknown_farm_is_a_counted_failure() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dir = tempfile::tempdir().unwrap();
    drop_plugin(dir.path(), "router", &guest("test-router-v2"));
    let extra = "[plugins.config.router]\nsettings = { farm = \"no-such-farm\" }";
    let proxy = Proxy::start(&two_farm_config(&a, &b, dir.path(), extra)).await;
    let mut client = Client::connect(proxy.addr).await;
    // Fail-open: the rule's own farm serves it.
    assert_eq!(served_by(&mut client, "/v2/x").await, "a");
    let plugin = runtime(&proxy).plugins().plugins[0].clone();
    assert_eq!(plugin.stats.failures.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_plugin_whose_every_decision_is_refused_is_disabled() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dir = tempfile::tempdir().unwrap();
    // An affinity plugin that names a member the farm does not have, every time: its calls
    // return, and the host refuses each decision.
    drop_plugin(dir.path(), "fixed", &guest("test-fixed-member"));
    let extra = "[plugins.config.fixed]\nsettings = { member = 99 }";
    let proxy = Proxy::start(&two_farm_config(&a, &b, dir.path(), extra)).await;
    let rt = runtime(&proxy);
    let plugin = rt.plugins().plugins[0].clone();
    let mut client = Client::connect(proxy.addr).await;
    // failures_before_disable = 3: three refused decisions in a row disable it.
    for _ in 0..3 {
        assert_eq!(served_by(&mut client, "/").await, "a");
    }
    assert_eq!(plugin.stats.failures.load(Ordering::Relaxed), 3);
    assert!(
        rt.disabled_for(&plugin).is_some(),
        "three refused decisions in a row did not disable the plugin"
    );
    let calls = plugin.stats.calls.load(Ordering::Relaxed);
    assert_eq!(served_by(&mut client, "/").await, "a");
    assert_eq!(
        plugin.stats.calls.load(Ordering::Relaxed),
        calls,
        "a disabled plugin was called"
    );
}

/// A config publishing `name.test` through the router plugin `name` from `dir`, with
/// `[plugins]` lines `plugins` and the plugin's own config lines `own`.
fn one_router_config(a: &Backend, dir: &Path, name: &str, plugins: &str, own: &str) -> String {
    format!(
        r#"
[access_log]
format = "off"
[plugins]
dir = {dir:?}
{plugins}
[plugins.config.{name}]
{own}
[[listeners]]
name = "web"
bind = "127.0.0.1:0"
[[farms]]
name = "main"
members = [{{ name = "a", host = "127.0.0.1", port = {port} }}]
affinity_plugins = []
[[rules]]
name = "site"
public_names = ["*"]
farm = "main"
router_plugins = ["{name}"]
"#,
        dir = dir.display().to_string(),
        port = a.port(),
    )
}

#[tokio::test]
async fn the_memory_cap_stops_a_plugin_long_before_its_deadline() {
    let a = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    drop_plugin(dir.path(), "h-alloc", &guest("test-hostile"));
    // The longest deadline the config allows: only the cap can stop the allocation in time
    // for the request to be served within the test's patience.
    let config = one_router_config(
        &a,
        dir.path(),
        "h-alloc",
        "call_timeout = \"10s\"\nmemory_limit_mb = 16",
        "settings = { mode = \"alloc\" }",
    );
    let (logs, _guard) = Logs::capture();
    let proxy = Proxy::start(&config).await;
    let rt = runtime(&proxy);
    let mut client = Client::connect(proxy.addr).await;
    // Fail-open: the member serves the request.
    assert_eq!(served_by(&mut client, "/").await, "a");
    let plugin = rt.plugins().plugins[0].clone();
    let text = logs.text();
    assert_eq!(plugin.stats.failures.load(Ordering::Relaxed), 1, "{text}");
    let failed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("plugin call failed") && l.contains("plugin=h-alloc"))
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    // Stopped by the cap: at the first growth past 16 MiB, within the 1 MiB the plugin asks
    // for at a time (without the cap, wasm's own 4 GiB limit or the deadline would stop it).
    assert!(
        failed[0].contains("memory limit (16 MB) reached"),
        "not stopped by the memory cap: {}",
        failed[0]
    );
    let asked: f64 = failed[0]
        .split_once("(it asked for ")
        .and_then(|(_, rest)| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no size asked for: {}", failed[0]));
    assert!(
        asked > 16.0 && asked <= 17.0,
        "stopped growing to {asked} MB"
    );
}

/// The component `bytes` with a custom section named `tag` appended: the same code, another
/// file content (so another version to the plugin folder).
fn retagged(bytes: &[u8], tag: &str) -> Vec<u8> {
    let name_len = u8::try_from(tag.len()).unwrap();
    let size = u8::try_from(tag.len() + 1).unwrap();
    assert!(size < 0x80, "one-byte LEB128 sizes only");
    let mut out = bytes.to_vec();
    out.extend_from_slice(&[0, size, name_len]);
    out.extend_from_slice(tag.as_bytes());
    out
}

#[tokio::test]
async fn backoff_doubles_with_each_disable_and_a_new_file_resets_it() {
    let a = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let hostile = guest("test-hostile");
    drop_plugin(dir.path(), "h-panic", &hostile);
    let config = one_router_config(
        &a,
        dir.path(),
        "h-panic",
        "failures_before_disable = 1\ncall_timeout = \"2s\"",
        "settings = { mode = \"panic\" }",
    );
    let proxy = Proxy::start(&config).await;
    let rt = runtime(&proxy);
    let mut client = Client::connect(proxy.addr).await;
    let current = || rt.plugins().plugins[0].clone();
    // Each failure disables the plugin for twice as long as the one before: 1 s, 2 s, 4 s.
    for expected in [1, 2, 4] {
        let p = current();
        eventually("the plugin is enabled again", || {
            rt.disabled_for(&p).is_none()
        })
        .await;
        assert_eq!(served_by(&mut client, "/").await, "a");
        assert!(
            rt.disabled_for(&p).is_some(),
            "not disabled after a failure"
        );
        assert_eq!(p.stats.backoff(), Duration::from_secs(expected));
    }
    // While disabled it is not called.
    let p = current();
    let calls = p.stats.calls.load(Ordering::Relaxed);
    assert_eq!(served_by(&mut client, "/").await, "a");
    assert_eq!(p.stats.calls.load(Ordering::Relaxed), calls);

    // A new file: a new version, enabled at once, whose first disable is 1 s again.
    let before = rt.scans();
    drop_plugin(dir.path(), "h-panic", &retagged(&hostile, "v2"));
    next_scan(&rt, before).await;
    eventually("the new version is installed", || {
        !Arc::ptr_eq(&current(), &p)
    })
    .await;
    let fresh = current();
    assert!(
        rt.disabled_for(&fresh).is_none(),
        "a new version starts enabled"
    );
    assert_eq!(served_by(&mut client, "/").await, "a");
    assert_eq!(fresh.stats.calls.load(Ordering::Relaxed), 1);
    assert_eq!(fresh.stats.backoff(), Duration::from_secs(1));
}

#[tokio::test]
async fn plugins_reach_files_and_the_network_only_when_granted() {
    use tokio::io::AsyncWriteExt;
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let granted = tempfile::tempdir().unwrap();
    let secret = granted.path().join("secret.txt");
    std::fs::write(&secret, "the secret").unwrap();
    // A server that greets every connection with one line.
    let greeter = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let greeter_addr = greeter.local_addr().unwrap();
    let greeting = tokio::spawn(async move {
        while let Ok((mut s, _)) = greeter.accept().await {
            let _ = s.write_all(b"hello from the network\n").await;
        }
    });
    let granted_dir = granted.path().display().to_string();
    for (grant, read, connect) in [
        ("", None, None),
        (
            &*format!("read_only_dirs = [{granted_dir:?}]"),
            Some("the secret"),
            None,
        ),
        ("network = true", None, Some("hello from the network")),
    ] {
        let dir = tempfile::tempdir().unwrap();
        drop_plugin(dir.path(), "sandbox", &guest("test-sandbox"));
        let extra = format!(
            "[plugins.config.sandbox]\nsettings = {{ file = {:?}, addr = \"{greeter_addr}\" }}\n{grant}",
            secret.display().to_string()
        );
        let proxy = Proxy::start(&two_farm_config(&a, &b, dir.path(), &extra)).await;
        let mut client = Client::connect(proxy.addr).await;
        for (path, expected) in [("/read", read), ("/connect", connect)] {
            let r = client.get("www.example.com", path).await;
            match expected {
                Some(text) => assert_eq!(
                    (r.status.as_u16(), r.text().as_str()),
                    (200, text),
                    "grant {grant:?}: {path}"
                ),
                None => assert_eq!(r.status, 403, "grant {grant:?}: {path}: {}", r.text()),
            }
        }
    }
    greeting.abort();
}

#[tokio::test]
async fn compiled_code_is_loaded_only_from_a_private_cache_of_farmgates_own_files() {
    use std::os::unix::fs::PermissionsExt;
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let scratch = tempfile::tempdir().unwrap();
    let set_mode = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    // The cache of a proxy running test-pass: its compiled code, and the name farmgate gives a
    // compiled file (source hash, then a tag of the engine).
    let pass = guest("test-pass");
    let learn = scratch.path().join("learn");
    let plugins = tempfile::tempdir().unwrap();
    drop_plugin(plugins.path(), "router", &pass);
    let extra = format!("cache_dir = {:?}", learn.display().to_string());
    drop(Proxy::start(&two_farm_config(&a, &b, plugins.path(), &extra)).await);
    let pass_hash = sha256_hex(&pass);
    let compiled = std::fs::read_dir(&learn)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(&pass_hash))
        .expect("test-pass's compiled code in the cache")
        .path();
    let engine_tag = compiled
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches(&pass_hash)
        .to_string();
    let impostor = std::fs::read(&compiled).unwrap();

    // The router (test-router-v2 sends /v2/ to farm v2, member b) is loaded where the cache
    // holds test-pass's code under the router's name (test-pass passes: member a). The code is
    // used only when the folder and file are private and the file is owned like the folder.
    let router = guest("test-router-v2");
    let slot = format!("{}{engine_tag}", sha256_hex(&router));
    let running_as_root = std::fs::metadata(scratch.path())
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap();
    let mut cases = vec![
        ("a private folder and file", 0o700, 0o600, false, "a"),
        ("a folder others can read", 0o755, 0o600, false, "b"),
        ("a file others can write", 0o700, 0o622, false, "b"),
    ];
    if running_as_root {
        cases.push(("a file of another owner", 0o700, 0o600, true, "b"));
    }
    for (i, (case, dir_mode, file_mode, foreign, expected)) in cases.into_iter().enumerate() {
        let cache = scratch.path().join(format!("cache-{i}"));
        std::fs::create_dir(&cache).unwrap();
        let planted = cache.join(&slot);
        std::fs::write(&planted, &impostor).unwrap();
        set_mode(&planted, file_mode);
        if foreign {
            std::os::unix::fs::chown(&planted, Some(4242), Some(4242)).unwrap();
        }
        set_mode(&cache, dir_mode);
        let plugins = tempfile::tempdir().unwrap();
        drop_plugin(plugins.path(), "router", &router);
        let extra = format!("cache_dir = {:?}", cache.display().to_string());
        let proxy = Proxy::start(&two_farm_config(&a, &b, plugins.path(), &extra)).await;
        let mut client = Client::connect(proxy.addr).await;
        assert_eq!(served_by(&mut client, "/v2/x").await, expected, "{case}");
    }
}
