//! Criterion benches of the plugin runtime: time added per hook call (router with a realistic
//! 15-header request, affinity with 8 members), member choice by the built-in balance plugin per
//! algorithm with 8 and 64 members, cached instances against a new instance per call, and the
//! cost of loading (compile + pre-instantiate + smoke test) a plugin.
//!
//! Calls are timed in batches inside one `block_on`, so the executor's entry cost is not counted.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use farmgate::config::PluginSettings;
use farmgate::plugins::{FarmView, MemberStateView, MemberView, RequestView, Runtime};

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

fn request() -> RequestView {
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
        ("dnt", "1"),
    ];
    RequestView {
        method: "GET".into(),
        scheme: "http".into(),
        host: "www.contoso.com".into(),
        path: "/v2/orders/17".into(),
        query: Some("expand=lines".into()),
        headers: headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}"))
            .collect::<Vec<_>>()
            .join("\n"),
        client_addr: "198.51.100.23".into(),
        listener: "web".into(),
        rule: "site".into(),
    }
}

fn farm(members: u32) -> FarmView {
    FarmView {
        name: "web".into(),
        members: (0..members)
            .map(|id| MemberView {
                id,
                name: format!("web{id}"),
                weight: 1,
                state: MemberStateView::Active,
                in_flight: id % 3,
                latency_ewma_us: 800 + u64::from(id) * 10,
                requests: 1000,
                failures: 0,
                bytes: 1_000_000 + u64::from(id) * 4096,
            })
            .collect(),
        sticky_member: None,
        sequence: 0,
    }
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
    let req = request();
    let members = farm(8);

    let mut group = c.benchmark_group("hook_call");
    group.bench_function("router_cached_instance", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || async {
                runtime.route(&router, &req).await.expect("route")
            })
        })
    });
    group.bench_function("affinity_8_members_cached_instance", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || async {
                runtime
                    .choose(&affinity, &req, &members)
                    .await
                    .expect("choose")
            })
        })
    });
    group.bench_function("router_new_instance_per_call", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || async {
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
    use farmgate::config::PluginConfig;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let runtime = Runtime::new(bench_settings()).expect("plugin runtime");
    let req = request();
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
        // As farmgate configures the built-in: its own deadline.
        let config = PluginConfig {
            settings_json: format!(r#"{{"farms": {{"web": {farm_settings}}}}}"#),
            call_timeout: Some(farmgate::config::defaults::BUILTIN_CALL_TIMEOUT),
            ..PluginConfig::default()
        };
        let plugin = {
            let runtime = Arc::clone(&runtime);
            let b = farmgate::builtin::BALANCE;
            rt.block_on(async move {
                tokio::task::spawn_blocking(move || {
                    runtime.load_with(
                        b.name,
                        Path::new("bench.wasm"),
                        b.wasm,
                        format!("bench-{name}"),
                        config,
                    )
                })
                .await
                .expect("join")
                .expect("built-in loads")
            })
        };
        for members in [8u32, 64] {
            let mut view = farm(members);
            if name == "cookie-affinity" {
                view.sticky_member = Some(members / 2);
            }
            group.bench_with_input(
                criterion::BenchmarkId::new(name, members),
                &view,
                |b, view| {
                    b.iter_custom(|iters| {
                        timed(&rt, iters, || async {
                            runtime.choose(&plugin, &req, view).await.expect("choose")
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
