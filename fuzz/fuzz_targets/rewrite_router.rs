//! URL rewrite patterns: the built-in router plugin (plugins/builtin-router, linked natively)
//! never panics on any rule set, pattern or request, and every decision it makes is well formed:
//! forwarded paths start with '/' and carry no line break or NUL, header names are tokens and
//! values single lines, redirect and respond statuses are in their ranges, a farm switch names a
//! farm from the rules, and the same request gets the same decision again (the compiled patterns
//! keep capture state between calls).

#![no_main]

use builtin_router::Rewriter;
use farmgate_sdk::testing;
use farmgate_sdk::{Plugin, Request, RouteDecision, Router};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// Regex pieces: anchors, captures, classes, alternation, repetition.
const PATTERN_WORDS: &[&str] = &[
    "^", "$", "/", "(.*)", "(.+)", "([^/]+)", "([a-z]+)", "(\\d+)", "(?:a|b)", "a", "b", "api",
    "v1", "\\.", ".", "*", "+", "?", "|", "(", ")", "[", "]", "{2}", "{1,3}", "(?i)", "\\w+",
    "(x)?", "\\", "é", "[^?]*", "(?P<n>a)",
];
/// Template pieces: back-references, server variables, text, near-misses.
const TEMPLATE_WORDS: &[&str] = &[
    "/", "{R:0}", "{R:1}", "{R:2}", "{R:99}", "{C:0}", "{C:1}", "{PATH}", "{QUERY_STRING}",
    "{HTTP_HOST}", "{path}", "?", "&", "x=1", "new", "{", "}", "{R:}", "{R:1000}", "{X}", "http://",
    "https://example.org", "%2F", "\r\n", "\0", "é", " ",
];
const FARMS: &[&str] = &["f1", "f2", "", "v2"];
const HOSTS: &[&str] = &["www.example.com", "api.example.com:8080", "[::1]:80", "::1", "EXAMPLE.com", ""];

#[derive(Arbitrary, Debug)]
enum Text {
    Raw(String),
    Words(Vec<u8>),
}

impl Text {
    fn render(&self, words: &[&str]) -> String {
        match self {
            Text::Raw(s) => s.chars().take(64).collect(),
            Text::Words(w) => w.iter().take(16).map(|i| words[usize::from(*i) % words.len()]).collect(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct FuzzRule {
    host: Option<Text>,
    path: Option<Text>,
    ignore_case: Option<bool>,
    action: u8,
    url: Option<Text>,
    append_query: Option<bool>,
    farm: Option<u8>,
    status: Option<u16>,
    body: Option<Text>,
    content_type: Option<String>,
    set_headers: Vec<(String, Text)>,
    remove_headers: Vec<String>,
    stop: bool,
}

#[derive(Arbitrary, Debug)]
struct FuzzRequest {
    path: Text,
    query: Option<Text>,
    host: Result<u8, String>,
    /// Ask under another publishing rule (which has no rewrites).
    other_rule: bool,
}

#[derive(Arbitrary, Debug)]
enum Settings {
    Rules(Vec<FuzzRule>),
    /// Settings JSON as the fuzzer writes it.
    Json(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    settings: Settings,
    requests: Vec<FuzzRequest>,
}

fn rule_json(r: &FuzzRule) -> Value {
    let action = ["rewrite", "redirect", "respond", "none"][usize::from(r.action) % 4];
    let mut o = serde_json::Map::new();
    o.insert("action".into(), json!(action));
    if let Some(h) = &r.host {
        o.insert("host".into(), json!(h.render(PATTERN_WORDS)));
    }
    if let Some(p) = &r.path {
        o.insert("path".into(), json!(p.render(PATTERN_WORDS)));
    }
    if let Some(b) = r.ignore_case {
        o.insert("ignore_case".into(), json!(b));
    }
    if let Some(u) = &r.url {
        o.insert("url".into(), json!(u.render(TEMPLATE_WORDS)));
    }
    if let Some(b) = r.append_query {
        o.insert("append_query".into(), json!(b));
    }
    if let Some(f) = r.farm {
        o.insert("farm".into(), json!(FARMS[usize::from(f) % FARMS.len()]));
    }
    if let Some(s) = r.status {
        o.insert("status".into(), json!(s));
    }
    if let Some(b) = &r.body {
        o.insert("body".into(), json!(b.render(TEMPLATE_WORDS)));
    }
    if let Some(c) = &r.content_type {
        o.insert("content_type".into(), json!(c));
    }
    let set: Vec<(String, String)> = r
        .set_headers
        .iter()
        .take(4)
        .map(|(n, v)| (n.clone(), v.render(TEMPLATE_WORDS)))
        .collect();
    if !set.is_empty() {
        o.insert("set_headers".into(), json!(set));
    }
    if !r.remove_headers.is_empty() {
        o.insert("remove_headers".into(), json!(r.remove_headers.iter().take(4).collect::<Vec<_>>()));
    }
    if r.stop {
        o.insert("stop".into(), json!(true));
    }
    Value::Object(o)
}

/// A request as the host builds it: the path from the URI (starts with '/', no controls, no
/// '?' or '#'), the query after the first '?'.
fn request(r: &FuzzRequest) -> Request {
    let clean = |s: String, also: &[char]| -> String {
        s.chars().filter(|c| !c.is_control() && *c != ' ' && *c != '#' && !also.contains(c)).collect()
    };
    let path = clean(r.path.render(TEMPLATE_WORDS), &['?']);
    let path = if path.starts_with('/') { path } else { format!("/{path}") };
    let query = r.query.as_ref().map(|q| clean(q.render(TEMPLATE_WORDS), &[]));
    let target = match &query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let host = match &r.host {
        Ok(i) => HOSTS[usize::from(*i) % HOSTS.len()].to_string(),
        Err(s) => clean(s.chars().take(64).collect(), &['/']),
    };
    let mut req = testing::request("GET", &target).host(&host);
    if r.other_rule {
        req = req.rule("other");
    }
    req.build()
}

fn is_header_name(n: &str) -> bool {
    !n.is_empty()
        && n.bytes().all(|b| {
            (b.is_ascii_alphanumeric() && !b.is_ascii_uppercase()) || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

fn single_line(v: &str) -> bool {
    !v.contains(['\r', '\n', '\0'])
}

fn check(req: &Request, d: &RouteDecision, farms: &[String]) {
    match d {
        RouteDecision::Pass => {}
        RouteDecision::Forward(f) => {
            let original = match &req.query {
                Some(q) => format!("{}?{q}", req.path),
                None => req.path.clone(),
            };
            if let Some(p) = &f.path {
                assert!(p.starts_with('/'), "forwarded path {p:?} does not start with '/'");
                assert!(single_line(p), "forwarded path {p:?} has a line break or NUL");
                assert_ne!(p, &original, "forwarded path given but unchanged");
            }
            assert!(f.host.is_none(), "the rewrite plugin never sets Host");
            if let Some(farm) = &f.farm {
                assert!(!farm.is_empty(), "empty farm");
                assert!(farms.contains(farm), "farm {farm:?} is in no rule");
            }
            assert!(
                f.path.is_some() || f.farm.is_some() || !f.set_headers.is_empty() || !f.remove_headers.is_empty(),
                "a forward that changes nothing instead of pass"
            );
            for (i, (n, v)) in f.set_headers.iter().enumerate() {
                assert!(is_header_name(n), "set header name {n:?}");
                assert!(single_line(v), "set header {n} value {v:?} is not one line");
                assert!(f.set_headers[..i].iter().all(|(m, _)| m != n), "header {n} set twice");
                assert!(!f.remove_headers.contains(n), "header {n} both set and removed");
            }
            for (i, n) in f.remove_headers.iter().enumerate() {
                assert!(is_header_name(n), "removed header name {n:?}");
                assert!(!f.remove_headers[..i].contains(n), "header {n} removed twice");
            }
        }
        RouteDecision::Redirect(r) => {
            assert!([301, 302, 303, 307, 308].contains(&r.status), "redirect status {}", r.status);
            assert!(single_line(&r.location), "Location {:?} is not one line", r.location);
        }
        RouteDecision::Respond(r) => {
            assert!((200..=599).contains(&r.status), "respond status {}", r.status);
            for (n, v) in &r.headers {
                assert!(is_header_name(n), "respond header name {n:?}");
                assert!(single_line(v), "respond header {n} value {v:?}");
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let (json, farms) = match &input.settings {
        Settings::Rules(rules) => {
            let list: Vec<Value> = rules.iter().take(6).map(rule_json).collect();
            let farms: Vec<String> = list
                .iter()
                .filter_map(|r| r.get("farm").and_then(Value::as_str).map(str::to_string))
                .collect();
            (json!({ "rules": { "site": list } }).to_string(), farms)
        }
        Settings::Json(s) => (s.clone(), Vec::new()),
    };
    let Ok(settings) = farmgate_sdk::Settings::from_json(&json) else {
        return;
    };
    let Ok(plugin) = Rewriter::new(&settings) else {
        return;
    };
    let farms = if farms.is_empty() {
        // Fuzzer-written settings: any farm named anywhere in them.
        let mut names = Vec::new();
        collect_farms(&serde_json::from_str(&json).unwrap_or(Value::Null), &mut names);
        names
    } else {
        farms
    };
    for r in input.requests.iter().take(4) {
        let req = request(r);
        let first = plugin.route(&req);
        check(&req, &first, &farms);
        if r.other_rule && matches!(input.settings, Settings::Rules(_)) {
            assert_eq!(first, RouteDecision::Pass, "a rule without rewrites changed something");
        }
        assert_eq!(plugin.route(&req), first, "the same request routed differently");
    }
});

fn collect_farms(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                if k == "farm"
                    && let Some(s) = v.as_str()
                {
                    out.push(s.to_string());
                }
                collect_farms(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_farms(v, out)),
        _ => {}
    }
}
