//! Criterion benches of host-side link translation: a 1 MB HTML page with a link every ~300
//! bytes, fed in 16 KiB chunks as the proxy would receive it, plain and under content codings.
//! Setup (page, compression, chunking) happens outside the timed closures; throughput is the
//! uncompressed page size, so the figures compare across codings.

use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use farmgate::translate::{BodyTranslator, Coding, Mappings, MatcherCache, Translator};

const PAGE_SIZE: usize = 1 << 20;
const CHUNK: usize = 16 * 1024;

/// What a TMG publishing rule typically maps: the internal name in its usual spellings.
fn mappings() -> Arc<Mappings> {
    Arc::new(Mappings::new(&pairs()).expect("bench mappings"))
}

fn pairs() -> Vec<(String, String)> {
    [
        ("http://intranet.contoso.local", "https://www.contoso.com"),
        ("https://intranet.contoso.local", "https://www.contoso.com"),
        (
            "http://intranet.contoso.local:8080",
            "https://www.contoso.com",
        ),
        ("//intranet.contoso.local", "//www.contoso.com"),
    ]
    .iter()
    .map(|(f, t)| (f.to_string(), t.to_string()))
    .collect()
}

/// A deterministic, realistic-looking page: paragraphs of prose with about one internal link
/// per 300 bytes, plus the usual head. With `links` false the same shape without internal names.
fn page(links: bool) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the",
        "quarterly",
        "report",
        "for",
        "our",
        "department",
        "shows",
        "that",
        "sales",
        "in",
        "region",
        "have",
        "grown",
        "while",
        "costs",
        "stayed",
        "flat",
        "please",
        "review",
        "attached",
        "documents",
        "before",
        "meeting",
        "on",
        "Thursday",
        "and",
        "send",
        "comments",
        "to",
        "team",
        "lead",
        "policy",
        "update",
        "holiday",
        "schedule",
        "network",
        "maintenance",
    ];
    let host = if links {
        "http://intranet.contoso.local"
    } else {
        "http://static.example.org"
    };
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Contoso \
         intranet</title>\n<link rel=\"stylesheet\" href=\"{host}/static/site.css\">\n<script \
         src=\"{host}/static/app.js\"></script>\n</head>\n<body>\n<div class=\"content\">\n"
    );
    let mut n = 0u64;
    while html.len() < PAGE_SIZE - 200 {
        html.push_str("<p class=\"item\">");
        for _ in 0..3 {
            // About 230 bytes of prose, then a link of about 80.
            let start = html.len();
            while html.len() - start < 230 {
                html.push_str(WORDS[(next() % WORDS.len() as u64) as usize]);
                html.push(' ');
            }
            n += 1;
            html.push_str(&format!(
                "<a href=\"{host}/sites/docs/{}/page{n}.aspx\">document {n}</a> ",
                next() % 1000
            ));
        }
        html.push_str("</p>\n");
    }
    html.push_str("</div>\n</body>\n</html>\n");
    html.into_bytes()
}

fn chunks(data: &[u8]) -> Vec<Bytes> {
    let data = Bytes::copy_from_slice(data);
    (0..data.len())
        .step_by(CHUNK)
        .map(|i| data.slice(i..(i + CHUNK).min(data.len())))
        .collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut w = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
    w.write_all(data).expect("brotli");
    w.into_inner()
}

/// The page as translation must leave it: every internal link (the page uses one spelling) on
/// the public name, nothing else touched.
fn translated(html: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(html)
        .replace("http://intranet.contoso.local", "https://www.contoso.com")
        .into_bytes()
}

fn decoded(coding: Coding, body: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    match coding {
        Coding::Gzip => flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .expect("gzip output"),
        Coding::Brotli => brotli::Decompressor::new(body, 4096)
            .read_to_end(&mut out)
            .expect("brotli output"),
        _ => {
            out.extend_from_slice(body);
            out.len()
        }
    };
    out
}

fn link_translation(c: &mut Criterion) {
    let m = mappings();
    let mut group = c.benchmark_group("translate");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    for (name, links) in [("identity", true), ("identity_no_links", false)] {
        let html = page(links);
        let input = chunks(&html);
        // The measured work gives the right page.
        let mut t = Translator::new(m.clone());
        let mut out: Vec<u8> = Vec::new();
        for chunk in &input {
            out.extend_from_slice(&t.push(chunk.clone()));
        }
        out.extend_from_slice(&t.finish());
        assert!(
            out == translated(&html),
            "{name}: the translated page differs"
        );
        assert_eq!(out == html, !links, "{name}");
        group.throughput(Throughput::Bytes(html.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut t = Translator::new(m.clone());
                for chunk in &input {
                    black_box(t.push(chunk.clone()));
                }
                black_box(t.finish());
            })
        });
    }

    let html = page(true);
    group.throughput(Throughput::Bytes(html.len() as u64));
    for (name, coding, encoded) in [
        ("gzip", Coding::Gzip, gzip(&html)),
        ("brotli", Coding::Brotli, brotli(&html)),
    ] {
        let input = chunks(&encoded);
        let mut t = BodyTranslator::new(coding, m.clone());
        let mut out: Vec<u8> = Vec::new();
        for chunk in &input {
            out.extend_from_slice(&t.push(chunk.clone()).expect("valid body"));
        }
        out.extend_from_slice(&t.finish().expect("complete body"));
        assert!(
            decoded(coding, &out) == translated(&html),
            "{name}: the translated page differs"
        );
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut t = BodyTranslator::new(coding, m.clone());
                for chunk in &input {
                    black_box(t.push(chunk.clone()).expect("valid body"));
                }
                black_box(t.finish().expect("complete body"));
            })
        });
    }
    group.finish();
}

/// What a response costs before its first byte is translated: building the searcher for its
/// mapping set (what every response paid before the cache), against finding it in the cache.
fn per_response_setup(c: &mut Criterion) {
    let mut group = c.benchmark_group("translate setup");
    let pairs = pairs();
    group.bench_function("build searcher", |b| {
        b.iter(|| Mappings::new(black_box(&pairs)))
    });
    let cache = MatcherCache::default();
    let first = cache.get(&pairs).expect("bench mappings");
    // The cache hands out the searcher it built, not a new one.
    let again = cache.get(&pairs).expect("bench mappings");
    assert!(Arc::ptr_eq(&first, &again));
    group.bench_function("cached searcher", |b| {
        b.iter(|| cache.get(black_box(&pairs)))
    });
    group.finish();
}

criterion_group!(benches, link_translation, per_response_setup);
criterion_main!(benches);
