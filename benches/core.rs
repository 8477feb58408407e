//! Criterion benches of the native request path: rule matching, header rewriting and the
//! request framing checks.
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
        // Each case with the rule it must find.
        let cases = [
            (
                "exact",
                format!("www.site{last}.example:8080"),
                "/index.html",
                format!("site{last}"),
            ),
            (
                "prefix",
                format!("WWW.site{last}.example"),
                "/api/v2/orders/17",
                format!("api{last}"),
            ),
            (
                "wildcard",
                format!("shop.site{last}.example"),
                "/cart",
                format!("wild{last}"),
            ),
            (
                "fallback",
                "unknown.example".to_string(),
                "/",
                "any".to_string(),
            ),
        ];
        for (name, host, path, rule) in &cases {
            let found = table.route(0, host, path).map(|i| &config.rules[i].name);
            assert_eq!(found, Some(rule), "{name} with {sites} sites");
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
    let rewrite = |h: &mut HeaderMap| {
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
    };
    // What is measured does the work: hop-by-hop headers gone, the client appended to the
    // forwarding chain, Via added, the end-to-end headers kept.
    let mut once = template.clone();
    rewrite(&mut once);
    assert!(once.get("connection").is_none() && once.get("keep-alive").is_none());
    let forwarded_for: Vec<&str> = once
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(forwarded_for.join(", "), "203.0.113.7, 198.51.100.23");
    assert!(
        once.get("via")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("farmgate")),
        "{once:?}"
    );
    assert_eq!(once.get("cookie"), template.get("cookie"));
    let mut group = c.benchmark_group("headers");
    group.bench_function("request_rewrite_15_headers", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |h| rewrite(h),
            criterion::BatchSize::SmallInput,
        )
    });
    let mut once = template.clone();
    headers::remove_hop_by_hop(&mut once);
    assert_eq!(once.len(), template.len() - 2, "{once:?}");
    group.bench_function("hop_by_hop_only", |b| {
        b.iter_batched_ref(
            || template.clone(),
            headers::remove_hop_by_hop,
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// The framing checks over what a browser sends: a keep-alive connection's request heads (about
/// 500 bytes each, 12 headers), and a chunked upload in 16 KiB chunks.
fn framing_checks(c: &mut Criterion) {
    use farmgate::framing::{Framing, Step};
    let head = "GET /app/products/list?page=2&sort=price HTTP/1.1\r\nHost: www.contoso.com\r\n\
        User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36\r\n\
        Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
        Accept-Language: en-GB,en;q=0.9\r\nAccept-Encoding: gzip, deflate, br\r\n\
        Cookie: farmgate_demo=Y2FmZWJhYmUxMjM0NTY3OA; session=0123456789abcdef\r\n\
        Referer: https://www.contoso.com/app/\r\nConnection: keep-alive\r\n\
        Sec-Fetch-Dest: document\r\nSec-Fetch-Mode: navigate\r\nUpgrade-Insecure-Requests: 1\r\n\r\n";
    let heads = head.repeat(100);
    let mut upload = String::from(
        "POST /upload HTTP/1.1\r\nHost: www.contoso.com\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    for _ in 0..64 {
        upload.push_str(&format!("4000\r\n{}\r\n", "x".repeat(16384)));
    }
    upload.push_str("0\r\n\r\n");
    let mut group = c.benchmark_group("framing");
    for (name, input) in [
        ("100 heads", heads.as_bytes()),
        ("1 MiB chunked", upload.as_bytes()),
    ] {
        group.throughput(criterion::Throughput::Bytes(input.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut f = Framing::new(65536);
                assert_eq!(f.judge(black_box(input)), Step::More(input.len()));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, rule_matching, header_rewriting, framing_checks);
criterion_main!(benches);
