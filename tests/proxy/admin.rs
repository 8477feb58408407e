//! The admin listener through a real client: status JSON, member operations (drain, resume,
//! remove, weight, add) with their effect on the next requests, the bearer token off loopback,
//! `/live` and `/ready`, and `/metrics` read by a Prometheus text parser.

use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::support::*;

fn admin_config(backends: &[&Backend], farm_extra: &str, admin: &str) -> String {
    simple_config(backends, "", "").replace(
        "[[farms]]\nname = \"farm\"",
        &format!("[[farms]]\nname = \"farm\"\n{farm_extra}"),
    ) + &format!("[admin]\ntoken_env = \"{UNSET_ENV}\"\n{admin}\n")
}

struct AdminClient {
    addr: SocketAddr,
    token: Option<String>,
}

impl AdminClient {
    fn of(proxy: &Proxy) -> AdminClient {
        AdminClient {
            addr: proxy.running().admin.expect("the admin listener is on"),
            token: None,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<&str>) -> Answer {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "admin");
        if let Some(t) = &self.token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let body = match body {
            Some(text) => Full::new(Bytes::from(text.to_string()))
                .map_err(|e| match e {})
                .boxed(),
            None => empty(),
        };
        Client::connect(self.addr)
            .await
            .request(b.body(body).unwrap())
            .await
    }

    async fn json(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let a = self.call(method, path, body).await;
        let v = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
        (a.status.as_u16(), v)
    }
}

fn member<'a>(farm: &'a Value, name: &str) -> &'a Value {
    farm["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == name))
        .unwrap_or_else(|| panic!("member {name} in {farm}"))
}

#[tokio::test]
async fn status_json_covers_farms_rules_plugins_and_pool() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = Proxy::start(&admin_config(&[&a, &b], "", "bind = \"127.0.0.1:0\"")).await;
    let admin = AdminClient::of(&proxy);
    let mut client = Client::connect(proxy.addr).await;
    spread(&mut client, 4, "/").await;
    let (status, farms) = admin.json("GET", "/api/farms", None).await;
    assert_eq!(status, 200);
    let farm = &farms["farms"][0];
    assert_eq!(farm["name"], "farm");
    let a_json = member(farm, "a");
    assert_eq!(a_json["state"], "active");
    assert_eq!(a_json["requests"], 2);
    assert_eq!(a_json["in_flight"], 0);
    assert!(a_json["bytes"].as_u64().unwrap() > 0);
    let (_, rules) = admin.json("GET", "/api/rules", None).await;
    assert_eq!(rules["rules"][0]["farm"], "farm");
    let (_, plugins) = admin.json("GET", "/api/plugins", None).await;
    let builtins: Vec<&str> = plugins["builtins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(builtins.contains(&"builtin-balance"), "{plugins}");
    let balance = plugins["builtins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "builtin-balance")
        .unwrap();
    assert!(balance["calls"].as_u64().unwrap() >= 4);
    let (_, pool) = admin.json("GET", "/api/pool", None).await;
    let opened: u64 = pool["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["opened"].as_u64().unwrap())
        .sum();
    assert_eq!(opened, 2, "{pool}");
    let (status, _) = admin.json("GET", "/api/farms/nope", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn drain_resume_remove_and_weight_take_effect_on_the_next_request() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = Proxy::start(&admin_config(
        &[&a, &b],
        "balance = \"round-robin\"",
        "bind = \"127.0.0.1:0\"",
    ))
    .await;
    let admin = AdminClient::of(&proxy);
    let mut client = Client::connect(proxy.addr).await;

    let (status, m) = admin
        .json("POST", "/api/farms/farm/members/b/drain", None)
        .await;
    assert_eq!((status, m["state"].as_str()), (200, Some("draining")));
    assert_eq!(spread(&mut client, 6, "/").await.get("b"), None);
    let (status, m) = admin
        .json("POST", "/api/farms/farm/members/b/resume", None)
        .await;
    assert_eq!((status, m["state"].as_str()), (200, Some("active")));
    assert_eq!(spread(&mut client, 6, "/").await.get("b"), Some(&3));

    // Weight 3:1 under round robin.
    let (status, m) = admin
        .json(
            "POST",
            "/api/farms/farm/members/a/weight",
            Some(r#"{"weight": 3}"#),
        )
        .await;
    assert_eq!((status, m["weight"].as_u64()), (200, Some(3)));
    let counts = spread(&mut client, 8, "/").await;
    assert_eq!((counts.get("a"), counts.get("b")), (Some(&6), Some(&2)));
    let (status, _) = admin
        .json(
            "POST",
            "/api/farms/farm/members/a/weight",
            Some(r#"{"weight": 0}"#),
        )
        .await;
    assert_eq!(status, 400);

    // Remove: refused until drained (or forced).
    let (status, e) = admin
        .json("POST", "/api/farms/farm/members/b/remove", None)
        .await;
    assert_eq!(status, 409);
    assert!(
        e["error"].as_str().unwrap().contains("drain it first"),
        "{e}"
    );
    admin
        .json("POST", "/api/farms/farm/members/b/drain", None)
        .await;
    let (status, m) = admin
        .json("POST", "/api/farms/farm/members/b/remove", None)
        .await;
    assert_eq!((status, m["state"].as_str()), (200, Some("removed")));
    assert_eq!(spread(&mut client, 4, "/").await.get("a"), Some(&4));
    let (status, _) = admin
        .json("POST", "/api/farms/farm/members/b/resume", None)
        .await;
    assert_eq!(status, 409, "a removed member is added again, not resumed");
    let (status, m) = admin
        .json("POST", "/api/farms/farm/members/a/remove?force=true", None)
        .await;
    assert_eq!((status, m["state"].as_str()), (200, Some("removed")));
    let r = client.get("www.example.com", "/").await;
    assert_eq!(r.status, 503);
}

#[tokio::test]
async fn added_members_take_requests_and_are_verified() {
    let (a, c) = (Backend::start("a").await, Backend::start("c").await);
    let proxy = Proxy::start(&admin_config(
        &[&a],
        "health = { check = \"http\", url = \"http://*/health\", interval = \"50ms\" }",
        "bind = \"127.0.0.1:0\"",
    ))
    .await;
    let admin = AdminClient::of(&proxy);
    let body = format!(
        r#"{{"name": "c", "host": "127.0.0.1", "port": {}}}"#,
        c.port()
    );
    let (status, m) = admin
        .json("POST", "/api/farms/farm/members", Some(&body))
        .await;
    assert_eq!((status, m["state"].as_str()), (201, Some("active")), "{m}");
    let (status, e) = admin
        .json("POST", "/api/farms/farm/members", Some(&body))
        .await;
    assert_eq!(status, 409, "{e}");
    let mut client = Client::connect(proxy.addr).await;
    assert_eq!(spread(&mut client, 6, "/").await.get("c"), Some(&3));
    // The new member has a verifier of its own.
    c.set_healthy(false);
    eventually("c goes out of service", || {
        proxy.farm("farm").member("c").unwrap().state() == farmgate::farm::MemberState::OutOfService
    })
    .await;
    let (status, _) = admin
        .json(
            "POST",
            "/api/farms/farm/members",
            Some(r#"{"host": "no such host!"}"#),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn off_loopback_the_admin_api_needs_its_token() {
    let a = Backend::start("a").await;
    let err = farmgate::Config::parse(
        &admin_config(&[&a], "", "bind = \"0.0.0.0:0\""),
        "test.toml",
    )
    .expect_err("an admin listener off loopback without a token is refused");
    assert_eq!(err.key, "admin.bind");
    assert!(err.message.contains("needs a bearer token"), "{err}");

    let proxy = Proxy::start(&admin_config(
        &[&a],
        "",
        "bind = \"0.0.0.0:0\"\ntoken = \"correct horse battery staple\"",
    ))
    .await;
    let mut admin = AdminClient::of(&proxy);
    admin.addr = SocketAddr::from(([127, 0, 0, 1], admin.addr.port()));
    for path in ["/api/farms", "/metrics"] {
        let r = admin.call("GET", path, None).await;
        assert_eq!(r.status, 401, "{path}");
        assert!(r.header("www-authenticate").is_some());
    }
    let r = admin
        .call("POST", "/api/farms/farm/members/a/drain", None)
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        proxy.farm("farm").member("a").unwrap().state(),
        farmgate::farm::MemberState::Active
    );
    for path in ["/live", "/ready"] {
        assert_eq!(admin.call("GET", path, None).await.status, 200, "{path}");
    }
    admin.token = Some("wrong horse battery staple".into());
    assert_eq!(admin.call("GET", "/api/farms", None).await.status, 401);
    admin.token = Some("correct horse battery staple".into());
    assert_eq!(admin.call("GET", "/api/farms", None).await.status, 200);
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = Proxy::start(&admin_config(&[&a, &b], "", "bind = \"127.0.0.1:0\"")).await;
    let admin = AdminClient::of(&proxy);
    let mut client = Client::connect(proxy.addr).await;
    spread(&mut client, 6, "/").await;
    proxy
        .farm("farm")
        .member("b")
        .unwrap()
        .set_state(farmgate::farm::MemberState::Draining);
    let r = admin.call("GET", "/metrics", None).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text();
    let lines: Vec<std::io::Result<String>> = text.lines().map(|l| Ok(l.to_string())).collect();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter()).expect("parses");
    // Every sample line became a sample (the parser skips lines it cannot read).
    let sample_lines = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count();
    assert_eq!(scrape.samples.len(), sample_lines);
    let value = |metric: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("{metric} {labels:?} in\n{text}"))
    };
    assert_eq!(
        value(
            "farmgate_member_requests_total",
            &[("farm", "farm"), ("member", "a")]
        ),
        3.0
    );
    // The built-in balance plugin chose every member; the host never chose in its place.
    assert_eq!(
        value("farmgate_farm_fallback_choices_total", &[("farm", "farm")]),
        0.0
    );
    assert!(matches!(
        scrape
            .samples
            .iter()
            .find(|s| s.metric == "farmgate_member_requests_total")
            .unwrap()
            .value,
        prometheus_parse::Value::Counter(_)
    ));
    assert_eq!(
        value(
            "farmgate_member_state",
            &[("member", "b"), ("state", "draining")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "farmgate_member_state",
            &[("member", "b"), ("state", "active")]
        ),
        0.0
    );
    assert_eq!(value("farmgate_farm_panic", &[("farm", "farm")]), 0.0);
    assert!(
        value(
            "farmgate_plugin_calls_total",
            &[("plugin", "builtin-balance")]
        ) >= 6.0
    );
    assert_eq!(value("farmgate_pool_connections_opened_total", &[]), 1.0);
    assert!(scrape.docs.contains_key("farmgate_member_in_flight"));
}

#[tokio::test]
async fn the_dashboard_page_is_self_contained() {
    let a = Backend::start("a").await;
    let proxy = Proxy::start(&admin_config(&[&a], "", "bind = \"127.0.0.1:0\"")).await;
    let r = AdminClient::of(&proxy)
        .call("GET", "/dashboard", None)
        .await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let page = r.text();
    assert!(page.contains("/api/farms"));
    // No external assets: nothing is loaded from another origin.
    for needle in ["src=\"http", "href=\"http", "@import", "//cdn"] {
        assert!(!page.contains(needle), "{needle}");
    }
}

/// The value of one sample of a Prometheus text exposition, by metric name and labels.
fn sample(text: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("parses");
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[tokio::test]
async fn live_traffic_failures_and_refused_connections_count_as_member_failures() {
    let a = Backend::start("a").await;
    let closed = closed_port().await;
    let config = admin_config(
        &[&a],
        // No verifier: nothing but requests judges c, so requests keep reaching it.
        "health = { check = \"none\", live_max_failures = 3, live_failure_statuses = \"500-599\", live_failover_period = \"1m\" }",
        "bind = \"127.0.0.1:0\"",
    )
    .replace(
        "members = [",
        &format!("members = [{{ name = \"c\", host = \"127.0.0.1\", port = {closed} }}, "),
    );
    let proxy = Proxy::start(&config).await;
    let admin = AdminClient::of(&proxy);
    let mut client = Client::connect(proxy.addr).await;
    // c refuses every connection, so each of these ends on a, which answers 500.
    for _ in 0..3 {
        let r = client.get("www.example.com", "/status?code=500").await;
        assert_eq!(r.status, 500);
    }
    let r = client.get("www.example.com", "/").await;
    assert_eq!(r.status, 503, "a is out and c refuses: {}", r.text());

    let (status, farm) = admin.json("GET", "/api/farms/farm", None).await;
    assert_eq!(status, 200);
    let a_json = member(&farm, "a");
    assert_eq!(a_json["state"], "out-of-service", "{a_json}");
    assert!(
        a_json["reason"]
            .as_str()
            .unwrap()
            .contains("3 failures of live traffic"),
        "{a_json}"
    );
    assert_eq!(a_json["failures"], 3, "{a_json}");
    assert_eq!(a_json["failures_by_kind"]["status"], 3, "{a_json}");
    assert_eq!(a_json["failures_by_kind"]["connect"], 0, "{a_json}");
    let c_json = member(&farm, "c");
    let c_refused = c_json["failures_by_kind"]["connect"].as_u64().unwrap_or(0);
    assert!(c_refused >= 1, "{c_json}");
    assert_eq!(c_json["failures"], c_refused, "{c_json}");
    assert_eq!(c_json["failures_by_kind"]["status"], 0, "{c_json}");

    let text = admin.call("GET", "/metrics", None).await.text();
    let of = |metric: &str, labels: &[(&str, &str)]| {
        sample(&text, metric, labels).unwrap_or_else(|| panic!("{metric} {labels:?} in\n{text}"))
    };
    assert_eq!(
        of("farmgate_member_failures_total", &[("member", "a")]),
        3.0
    );
    assert_eq!(
        of("farmgate_member_failures_total", &[("member", "c")]),
        c_refused as f64
    );
    assert_eq!(
        of(
            "farmgate_member_failures_by_kind_total",
            &[("member", "a"), ("kind", "status")]
        ),
        3.0
    );
    assert_eq!(
        of(
            "farmgate_member_failures_by_kind_total",
            &[("member", "c"), ("kind", "connect")]
        ),
        c_refused as f64
    );
}

#[tokio::test]
async fn farm_json_names_the_balance_in_use() {
    let a = Backend::start("a").await;
    let cases = [
        ("farm", "", "least-current-request"),
        ("by-ip", "affinity = \"client-ip\"", "least-current-request"),
        ("by-cookie", "affinity = \"cookie\"", "round-robin"),
        (
            "chosen",
            "balance = \"random\"\naffinity = \"cookie\"",
            "random",
        ),
    ];
    let mut config = simple_config(&[&a], "", "");
    for (name, extra, _) in &cases[1..] {
        config.push_str(&format!(
            "[[farms]]\nname = \"{name}\"\nmembers = [{{ name = \"a\", host = \"127.0.0.1\", port = {} }}]\n{extra}\n",
            a.port()
        ));
    }
    config.push_str(&format!(
        "[admin]\nbind = \"127.0.0.1:0\"\ntoken_env = \"{UNSET_ENV}\"\n"
    ));
    let proxy = Proxy::start(&config).await;
    let admin = AdminClient::of(&proxy);
    let (status, farms) = admin.json("GET", "/api/farms", None).await;
    assert_eq!(status, 200);
    for (name, extra, want) in cases {
        let (status, farm) = admin.json("GET", &format!("/api/farms/{name}"), None).await;
        assert_eq!(status, 200);
        assert_eq!(farm["balance"], want, "{extra:?}: {farm}");
        let listed = farms["farms"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["name"] == name))
            .unwrap_or_else(|| panic!("{name} in {farms}"));
        assert_eq!(listed["balance"], want, "{extra:?}: {listed}");
    }
}
