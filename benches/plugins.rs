//! Criterion benches of the plugin runtime: time added per hook call (router with a realistic
//! 15-header request, affinity with 8 members), member choice by the built-in balance plugin per
//! algorithm with 8 and 64 members, cached instances against a new instance per call, and the
//! cost of loading (compile + pre-instantiate + smoke test) a plugin.
//!
//! Each timed call is the whole of what the request path does for it: the request's facts made
//! from its head (once per request, as the proxy does), the farm's live state taken from a real
//! farm's members, the call, and the decision lifted back. Calls are timed in batches inside one
//! `block_on`, so the executor's entry cost is not counted.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use farmgate::config::{FarmConfig, MemberConfig, PluginSettings};
use farmgate::farm::{Farm, Tried};
use farmgate::plugins::{
    AffinityDecision, FarmFacts, MemberChoice, RequestFacts, ResponseFacts, RouteDecision, Runtime,
    Translation, TranslationDecision,
};
use farmgate::translate::MatcherCache;
use http::{HeaderMap, HeaderName, HeaderValue};

fn guest(name: &str) -> Vec<u8> {
    let path = Path::new(env!("FARMGATE_GUEST_DIR")).join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The runtime's defaults with a generous call deadline: a busy machine must not turn a
/// measurement into a failure (the deadline does not change what a call costs).
fn bench_settings() -> PluginSettings {
    PluginSettings {
        call_timeout: Duration::from_secs(1),
        ..PluginSettings::default()
    }
}

/// A browser's request for `/v2/orders/17?expand=lines`: 15 headers.
struct Head {
    uri: http::Uri,
    headers: HeaderMap,
}

fn head() -> Head {
    let headers = [
        ("host", "www.contoso.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-language", "en-US,en;q=0.9"),
        ("accept-encoding", "gzip, deflate, br"),
        ("cookie", "ARRAffinity=abc123; session=9f8e7d6c5b4a"),
        ("referer", "https://www.contoso.com/catalog"),
        ("cache-control", "max-age=0"),
        ("upgrade-insecure-requests", "1"),
        ("sec-fetch-dest", "document"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-site", "same-origin"),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-request-id", "5b0c8a7e-3f1d-4c2b-9e6a-1d2f3a4b5c6d"),
        ("x-api-version", "2"),
    ];
    let mut map = HeaderMap::new();
    for (n, v) in headers {
        map.append(HeaderName::from_static(n), HeaderValue::from_static(v));
    }
    Head {
        uri: http::Uri::from_static("/v2/orders/17?expand=lines"),
        headers: map,
    }
}

/// The request's facts as the proxy makes them from the head, once per request.
fn facts(head: &Head, rule: &Arc<str>, listener: &Arc<str>) -> Arc<RequestFacts> {
    Arc::new(RequestFacts {
        method: http::Method::GET,
        scheme: "http",
        host: HeaderValue::from_static("www.contoso.com"),
        uri: head.uri.clone(),
        headers: head.headers.clone(),
        client_addr: std::net::IpAddr::from([198, 51, 100, 23]),
        listener: Arc::clone(listener),
        rule: Arc::clone(rule),
    })
}

/// A farm `web` of `members` members with addresses, some requests in flight and latencies.
fn farm(members: u32) -> Arc<Farm> {
    let config = FarmConfig {
        name: "web".into(),
        members: (0..members)
            .map(|i| MemberConfig {
                name: format!("web{i}"),
                host: "127.0.0.1".into(),
                port: 8000 + i as u16,
                weight: 1,
            })
            .collect(),
        affinity: farmgate::config::Binding::Folder,
        health_evaluation: farmgate::config::Binding::Folder,
        balance: None,
        hash_on: None,
        affinity_mode: "none".into(),
        affinity_cookie: "ARRAffinity".into(),
        health: farmgate::config::HealthSettings::default(),
        upstream: Default::default(),
    };
    let farm = Farm::new(&config, b"bench key");
    for (i, m) in farm.members().iter().enumerate() {
        m.set_addrs(vec![std::net::SocketAddr::from(([127, 0, 0, 1], m.port))]);
        m.record_latency(Duration::from_micros(800 + i as u64 * 10));
        for _ in 0..i % 3 {
            std::mem::forget(m.begin());
        }
    }
    Arc::new(farm)
}

fn load(
    rt: &tokio::runtime::Runtime,
    runtime: &Arc<Runtime>,
    name: &str,
    bytes: Vec<u8>,
) -> Arc<farmgate::plugins::Plugin> {
    let runtime = Arc::clone(runtime);
    let name = name.to_string();
    rt.block_on(async move {
        tokio::task::spawn_blocking(move || {
            runtime.load(
                &name,
                Path::new("bench.wasm"),
                &bytes,
                format!("bench-{}", bytes.len()),
            )
        })
        .await
        .expect("join")
        .expect("guest loads")
    })
}

/// Loads a built-in with `settings_json` as farmgate configures the built-ins: with their own
/// call deadline. `tag` stands for the content hash.
fn load_builtin(
    rt: &tokio::runtime::Runtime,
    runtime: &Arc<Runtime>,
    builtin: &'static farmgate::builtin::Builtin,
    tag: &str,
    settings_json: String,
) -> Arc<farmgate::plugins::Plugin> {
    let runtime = Arc::clone(runtime);
    let tag = tag.to_string();
    let config = farmgate::config::PluginConfig {
        settings_json,
        call_timeout: Some(farmgate::config::defaults::BUILTIN_CALL_TIMEOUT),
        ..Default::default()
    };
    rt.block_on(async move {
        tokio::task::spawn_blocking(move || {
            runtime.load_with(
                builtin.name,
                Path::new("bench.wasm"),
                builtin.wasm,
                tag,
                config,
            )
        })
        .await
        .expect("join")
        .expect("built-in loads")
    })
}

/// Runs `call` `iters` times inside one `block_on` and returns the time taken.
fn timed<F, Fut, T>(rt: &tokio::runtime::Runtime, iters: u64, call: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            std::hint::black_box(call().await);
        }
        start.elapsed()
    })
}

fn hook_calls(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let runtime = Runtime::new(bench_settings()).expect("plugin runtime");
    let router = load(&rt, &runtime, "router", guest("test_router_v2"));
    let affinity = load(&rt, &runtime, "fixed", guest("test_fixed_member"));
    let head = head();
    let (rule, listener): (Arc<str>, Arc<str>) = (Arc::from("site"), Arc::from("web"));
    let web = farm(8);
    let web_facts: Arc<dyn FarmFacts> = Arc::clone(&web) as Arc<dyn FarmFacts>;
    let none = Tried::default();

    // What is timed is a real decision: the router sends /v2/... to its farm, the fixed-member
    // plugin picks member 0.
    let routed = rt
        .block_on(runtime.route(&router, &facts(&head, &rule, &listener)))
        .expect("route");
    assert!(
        matches!(&routed, RouteDecision::Forward(f) if f.farm.as_deref() == Some("v2")),
        "{routed:?}"
    );
    let chosen = rt
        .block_on(runtime.choose(
            &affinity,
            &facts(&head, &rule, &listener),
            &web_facts,
            &farmgate::views::farm_live(&web, None, &none),
        ))
        .expect("choose");
    assert!(
        matches!(chosen, AffinityDecision::Member(MemberChoice { id: 0, .. })),
        "{chosen:?}"
    );

    let pass = load(&rt, &runtime, "pass", guest("test_pass"));
    let shared = facts(&head, &rule, &listener);

    let mut group = c.benchmark_group("hook_call");
    // The parts of a call, for comparison with the whole: making the request's facts from the
    // head (once per request), and a call whose plugin reads nothing and passes (the floor of
    // a hook call in this runtime).
    group.bench_function("request_facts_15_headers", |b| {
        b.iter(|| facts(&head, &rule, &listener))
    });
    group.bench_function("router_reading_nothing", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || async {
                runtime.route(&pass, &shared).await.expect("route")
            })
        })
    });
    group.bench_function("router_15_headers_cached_instance", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || async {
                let req = facts(&head, &rule, &listener);
                runtime.route(&router, &req).await.expect("route")
            })
        })
    });
    group.bench_function("affinity_8_members_cached_instance", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || async {
                let req = facts(&head, &rule, &listener);
                let live = farmgate::views::farm_live(&web, None, &none);
                runtime
                    .choose(&affinity, &req, &web_facts, &live)
                    .await
                    .expect("choose")
            })
        })
    });
    // The built-in link translation on a member's HTML page, as a TMG-published rule has it:
    // the decision, then the searcher for its mappings from the generation's cache.
    let links = load_builtin(
        &rt,
        &runtime,
        &farmgate::builtin::LINKS,
        "bench-links",
        "{}".into(),
    );
    let response_headers = {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("server", "Microsoft-IIS/10.0"),
            ("date", "Wed, 02 Dec 2026 16:00:00 GMT"),
            ("content-type", "text/html; charset=utf-8"),
            ("content-length", "1534"),
            ("last-modified", "Tue, 01 Dec 2026 09:00:00 GMT"),
            ("etag", "\"5f3-61a2b\""),
        ] {
            h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        h
    };
    let (internal, public): (Arc<str>, HeaderValue) = (
        Arc::from("intranet.contoso.local"),
        HeaderValue::from_static("www.contoso.com"),
    );
    let matchers = MatcherCache::default();
    let decide = || async {
        let resp = Arc::new(ResponseFacts {
            rule: Arc::clone(&rule),
            internal_name: Arc::clone(&internal),
            public_name: public.clone(),
            public_scheme: "http",
            status: 200,
            headers: response_headers.clone(),
        });
        let decision = runtime
            .decide_translation(&links, &resp)
            .await
            .expect("decide");
        let headers = ResponseFacts::into_headers(resp);
        let TranslationDecision::Translate(Translation { mappings, .. }) = decision else {
            return (headers, None);
        };
        let pairs: Vec<(String, String)> = mappings.into_iter().map(|m| (m.from, m.to)).collect();
        (headers, matchers.get(&pairs))
    };
    let (_, searcher) = rt.block_on(decide());
    assert!(
        searcher.is_some(),
        "the built-in translates an HTML page of a rule with an internal site name"
    );
    group.bench_function("link_translation_html_decision", |b| {
        b.iter_custom(|iters| timed(&rt, iters, decide))
    });
    group.bench_function("router_new_instance_per_call", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || async {
                let req = facts(&head, &rule, &listener);
                runtime
                    .route_on_fresh_instance(&router, &req)
                    .await
                    .expect("route")
            })
        })
    });
    group.finish();
}

/// Member choice by the built-in balance plugin, per algorithm, with 8 and 64 members.
fn member_choice(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let runtime = Runtime::new(bench_settings()).expect("plugin runtime");
    let head = head();
    let (rule, listener): (Arc<str>, Arc<str>) = (Arc::from("site"), Arc::from("web"));
    let none = Tried::default();
    let policies = [
        ("least-current-request", "{}"),
        ("round-robin", r#"{"balance": "round-robin"}"#),
        (
            "weighted-total-traffic",
            r#"{"balance": "weighted-total-traffic"}"#,
        ),
        (
            "least-response-time",
            r#"{"balance": "least-response-time"}"#,
        ),
        ("random", r#"{"balance": "random"}"#),
        (
            "power-of-two-choices",
            r#"{"balance": "power-of-two-choices"}"#,
        ),
        ("hash-url", r#"{"balance": "hash", "hash_on": "url"}"#),
        ("cookie-affinity", r#"{"affinity": "cookie"}"#),
        ("client-ip-affinity", r#"{"affinity": "client-ip"}"#),
    ];
    let mut group = c.benchmark_group("member_choice");
    for (name, farm_settings) in policies {
        let plugin = load_builtin(
            &rt,
            &runtime,
            &farmgate::builtin::BALANCE,
            &format!("bench-{name}"),
            format!(r#"{{"farms": {{"web": {farm_settings}}}}}"#),
        );
        for members in [8u32, 64] {
            let web = farm(members);
            let sticky = (name == "cookie-affinity").then_some(members / 2);
            let web_facts: Arc<dyn FarmFacts> = Arc::clone(&web) as Arc<dyn FarmFacts>;
            let chosen = rt
                .block_on(runtime.choose(
                    &plugin,
                    &facts(&head, &rule, &listener),
                    &web_facts,
                    &farmgate::views::farm_live(&web, sticky, &none),
                ))
                .expect("choose");
            match (&chosen, sticky) {
                (AffinityDecision::Member(m), Some(s)) => assert_eq!(m.id, s, "{name}"),
                (AffinityDecision::Member(m), None) => assert!(m.id < members, "{name}"),
                (AffinityDecision::Pass, _) => panic!("{name} passed"),
            }
            group.bench_with_input(
                criterion::BenchmarkId::new(name, members),
                &web,
                |b, web| {
                    b.iter_custom(|iters| {
                        timed(&rt, iters, || async {
                            let req = facts(&head, &rule, &listener);
                            let live = farmgate::views::farm_live(web, sticky, &none);
                            runtime
                                .choose(&plugin, &req, &web_facts, &live)
                                .await
                                .expect("choose")
                        })
                    })
                },
            );
        }
    }
    group.finish();
}

fn loading(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let runtime = Runtime::new(bench_settings()).expect("plugin runtime");
    let bytes = guest("test_router_v2");
    let mut group = c.benchmark_group("load");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("compile_and_smoke_test_router", |b| {
        b.iter(|| load(&rt, &runtime, "router", bytes.clone()))
    });
    group.finish();
}

criterion_group!(benches, hook_calls, member_choice, loading);
criterion_main!(benches);
