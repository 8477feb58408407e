//! The example plugins of `examples/`, built by the build script, through the real proxy (routers)
//! or the real runtime (the JSON health evaluator): what each README promises.

use std::path::Path;

use farmgate::plugins::{HealthVerdict, ProbeResult};
use http::Request;

use crate::support::*;

/// A proxy whose plugin folder holds `plugin`, with `settings`, the rule bound to it, and one
/// farm per backend (named as the backend; the rule's own farm is the first).
async fn proxy_with(
    plugin: &str,
    settings: &str,
    backends: &[&Backend],
) -> (Proxy, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let name = plugin.replace('-', "_");
    std::fs::write(dir.path().join(format!("{name}.wasm")), guest(plugin)).unwrap();
    let farms: String = backends
        .iter()
        .map(|b| {
            format!(
                "[[farms]]\nname = \"{}\"\nmembers = [{{ name = \"{}\", host = \"127.0.0.1\", port = {} }}]\n",
                b.name,
                b.name,
                b.port()
            )
        })
        .collect();
    let config = format!(
        r#"
[access_log]
format = "off"
[plugins]
dir = {dir:?}
call_timeout = "2s"
[plugins.config.{name}]
{settings}
[[listeners]]
name = "web"
bind = "127.0.0.1:0"
[[rules]]
name = "site"
public_names = ["*"]
farm = "{first}"
router_plugins = ["{name}"]
{farms}"#,
        dir = dir.path().display().to_string(),
        first = backends[0].name,
    );
    let proxy = Proxy::start(&config).await;
    (proxy, dir)
}

async fn served(client: &mut Client, req: Request<BoxBody>) -> (u16, String, String) {
    let r = client.request(req).await;
    (
        r.status.as_u16(),
        r.header("x-backend").unwrap_or("").to_string(),
        r.text(),
    )
}

fn get_with(path: &str, headers: &[(&str, &str)]) -> Request<BoxBody> {
    let mut b = Request::get(path).header("host", "api.example.com");
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(empty()).unwrap()
}

#[tokio::test]
async fn versioned_api_routes_v1_v2_and_current() {
    let (www, v1, v2) = (
        Backend::start("www").await,
        Backend::start("api-v1").await,
        Backend::start("api-v2").await,
    );
    let (proxy, _dir) = proxy_with(
        "versioned-api",
        r#"settings = { versions = { v1 = "api-v1", v2 = "api-v2" }, current = "v2", strip_prefix = true }"#,
        &[&www, &v1, &v2],
    )
    .await;
    let mut client = Client::connect(proxy.addr).await;
    for (path, backend, member_path) in [
        ("/v1/orders?id=1", "api-v1", "/orders?id=1"),
        ("/v2/orders", "api-v2", "/orders"),
        ("/current/orders", "api-v2", "/orders"),
        ("/about", "www", "/about"),
    ] {
        let (status, by, _) = served(&mut client, get_with(path, &[])).await;
        assert_eq!((status, by.as_str()), (200, backend), "{path}");
        let seen = [&www, &v1, &v2]
            .into_iter()
            .find(|b| b.name == backend)
            .unwrap()
            .last_seen();
        assert_eq!(seen.uri, member_path, "{path}");
    }
}

#[tokio::test]
async fn canary_takes_its_share_of_cookie_identified_clients() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let (proxy, _dir) = proxy_with(
        "canary",
        r#"settings = { farm = "canary", percent = 20.0, cookie = "session", header = "x-canary" }"#,
        &[&stable, &canary],
    )
    .await;
    let mut client = Client::connect(proxy.addr).await;
    let (_, by, _) = served(&mut client, get_with("/", &[("x-canary", "always")])).await;
    assert_eq!(by, "canary");
    let (_, by, _) = served(&mut client, get_with("/", &[("x-canary", "never")])).await;
    assert_eq!(by, "stable");
    let (_, by, _) = served(&mut client, get_with("/", &[])).await;
    assert_eq!(by, "stable", "no cookie: the rule's farm");
    let mut on_canary = 0;
    for i in 0..500 {
        let cookie = format!("session=user-{i}");
        let (_, first, _) = served(&mut client, get_with("/", &[("cookie", &cookie)])).await;
        let (_, again, _) = served(&mut client, get_with("/", &[("cookie", &cookie)])).await;
        assert_eq!(first, again, "a client stays on its side");
        on_canary += usize::from(first == "canary");
    }
    // 20 % of 500 is 100; the hash spreads within a few standard deviations (about 9).
    assert!(
        (65..=135).contains(&on_canary),
        "{on_canary} of 500 on the canary"
    );
}

#[tokio::test]
async fn maintenance_page_with_exceptions() {
    let www = Backend::start("www").await;
    let (proxy, _dir) = proxy_with(
        "maintenance",
        r#"settings = { enabled = true, retry_after_seconds = 900, title = "Down <for> upgrade", message = "Back soon.", allow_paths = ["/health"] }"#,
        &[&www],
    )
    .await;
    let mut client = Client::connect(proxy.addr).await;
    let r = client.request(get_with("/shop", &[])).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("900"));
    assert!(
        r.text().contains("Down &lt;for&gt; upgrade"),
        "{}",
        r.text()
    );
    assert_eq!(www.requests(), 0);
    let (status, by, _) = served(&mut client, get_with("/health/live", &[])).await;
    assert_eq!((status, by.as_str()), (200, "www"));
}

#[tokio::test]
async fn tenant_header_picks_the_farm() {
    let (portal, contoso, fabrikam) = (
        Backend::start("portal").await,
        Backend::start("farm-contoso").await,
        Backend::start("farm-fabrikam").await,
    );
    let (proxy, _dir) = proxy_with(
        "tenant",
        r#"settings = { header = "x-tenant", unknown = "reject", farm_header = "x-tenant-farm", tenants = { contoso = "farm-contoso", fabrikam = "farm-fabrikam" } }"#,
        &[&portal, &contoso, &fabrikam],
    )
    .await;
    let mut client = Client::connect(proxy.addr).await;
    let (_, by, _) = served(&mut client, get_with("/", &[("x-tenant", "Contoso")])).await;
    assert_eq!(by, "farm-contoso");
    assert_eq!(
        contoso.last_seen().headers.get("x-tenant-farm").unwrap(),
        "farm-contoso"
    );
    let (_, by, _) = served(&mut client, get_with("/", &[("x-tenant", "fabrikam")])).await;
    assert_eq!(by, "farm-fabrikam");
    let (status, by, _) = served(&mut client, get_with("/", &[("x-tenant", "globex")])).await;
    assert_eq!((status, by.as_str()), (404, ""));
    let (_, by, _) = served(&mut client, get_with("/", &[])).await;
    assert_eq!(by, "portal");
}

#[tokio::test]
async fn json_health_reads_a_status_page() {
    let rt = farmgate::plugins::Runtime::new(farmgate::config::PluginSettings::default()).unwrap();
    let config = farmgate::config::PluginConfig {
        settings_json: r#"{"required_checks": ["db"]}"#.into(),
        ..Default::default()
    };
    let bytes = guest("json-health");
    let loader = rt.clone();
    let plugin = tokio::task::spawn_blocking(move || {
        loader.load_with(
            "json_health",
            Path::new("json_health.wasm"),
            &bytes,
            "h".into(),
            config,
        )
    })
    .await
    .unwrap()
    .unwrap();
    let probe = |body: &str| {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        std::sync::Arc::new(ProbeResult {
            farm: "api".into(),
            member: "api1".into(),
            url: "http://api1/status.htm".into(),
            status: Some(200),
            headers,
            body_prefix: body.as_bytes().to_vec(),
            latency_us: 1000,
            error: None,
        })
    };
    let healthy = rt
        .evaluate_health(
            &plugin,
            &probe(r#"{"status": "ok", "checks": {"db": "ok"}}"#),
        )
        .await
        .unwrap();
    assert!(matches!(healthy, HealthVerdict::Healthy), "{healthy:?}");
    let HealthVerdict::Unhealthy(why) = rt
        .evaluate_health(
            &plugin,
            &probe(r#"{"status": "ok", "checks": {"db": "down"}}"#),
        )
        .await
        .unwrap()
    else {
        panic!("a failed required check is unhealthy");
    };
    assert!(why.contains("db"), "{why}");
    let verdict = rt
        .evaluate_health(&plugin, &probe(r#"{"status": "ok", "checks": {"db""#))
        .await
        .unwrap();
    assert!(
        matches!(verdict, HealthVerdict::Unhealthy(_)),
        "{verdict:?}"
    );
}
