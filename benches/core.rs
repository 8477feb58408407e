//! Criterion benches of the native request path: rule matching and header rewriting.
//! Setup happens outside the timed closures; variants are compared with `BenchmarkId`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use farmgate::Config;
use farmgate::headers::{self, Forwarding};
use farmgate::routing::RouteTable;
use http::{HeaderMap, HeaderName, HeaderValue, Version};

/// A config with `n` sites, each with an exact name, a wildcard and two path prefixes.
fn config_with_sites(n: usize) -> Config {
    let mut text = String::from(
        "[[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\n[[farms]]\nname = \"f\"\nmembers = [{ host = \"127.0.0.1\" }]\n",
    );
    for i in 0..n {
        text.push_str(&format!(
            "[[rules]]\nname = \"site{i}\"\npublic_names = [\"www.site{i}.example\"]\nfarm = \"f\"\n\
             [[rules]]\nname = \"api{i}\"\npublic_names = [\"www.site{i}.example\"]\npaths = [\"/api/v1\", \"/api/v2/*\"]\nfarm = \"f\"\n\
             [[rules]]\nname = \"wild{i}\"\npublic_names = [\"*.site{i}.example\"]\nfarm = \"f\"\n"
        ));
    }
    text.push_str("[[rules]]\nname = \"any\"\npublic_names = [\"*\"]\nfarm = \"f\"\n");
    Config::parse(&text, "bench").expect("bench config")
}

fn rule_matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    for sites in [1usize, 10, 100, 1000] {
        let config = config_with_sites(sites);
        let table = RouteTable::new(&config);
        let last = sites - 1;
        let cases = [
            (
                "exact",
                format!("www.site{last}.example:8080"),
                "/index.html",
            ),
            (
                "prefix",
                format!("WWW.site{last}.example"),
                "/api/v2/orders/17",
            ),
            ("wildcard", format!("shop.site{last}.example"), "/cart"),
            ("fallback", "unknown.example".to_string(), "/"),
        ];
        for (name, host, path) in &cases {
            assert!(table.route(0, host, path).is_some());
            group.bench_with_input(
                BenchmarkId::new(*name, sites),
                &(host, path),
                |b, (h, p)| b.iter(|| table.route(black_box(0), black_box(h), black_box(p))),
            );
        }
    }
    group.finish();
}

/// The 15 headers of a typical browser request, with a few hop-by-hop ones.
fn browser_headers() -> HeaderMap {
    let pairs = [
        ("host", "www.contoso.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
        ),
        ("accept-language", "en-US,en;q=0.9"),
        ("accept-encoding", "gzip, deflate, br"),
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
        ("upgrade-insecure-requests", "1"),
        ("cookie", "ARRAffinity=abc123; session=9f8e7d6c5b4a"),
        ("referer", "https://www.contoso.com/catalog"),
        ("cache-control", "max-age=0"),
        ("sec-fetch-dest", "document"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-site", "same-origin"),
        ("x-forwarded-for", "203.0.113.7"),
    ];
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h
}

fn header_rewriting(c: &mut Criterion) {
    let template = browser_headers();
    let client = headers::ClientAddr::new("198.51.100.23".parse().expect("ip"));
    let via = headers::Via::new("farmgate");
    let host = HeaderValue::from_static("www.contoso.com");
    let mut group = c.benchmark_group("headers");
    group.bench_function("request_rewrite_15_headers", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |h| {
                headers::remove_hop_by_hop(h);
                headers::add_forwarding(
                    h,
                    &Forwarding {
                        client: &client,
                        proto: "http",
                        host: Some(&host),
                    },
                );
                via.append(h, Version::HTTP_11);
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function("hop_by_hop_only", |b| {
        b.iter_batched_ref(
            || template.clone(),
            headers::remove_hop_by_hop,
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, rule_matching, header_rewriting);
criterion_main!(benches);
