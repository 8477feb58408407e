use super::*;
use farmgate_sdk::testing;

fn plugin(rules: &str) -> Rewriter {
    let json = format!(r#"{{"rules": {{"site": {rules}}}}}"#);
    match Rewriter::new(&testing::settings(&json)) {
        Ok(p) => p,
        Err(e) => panic!("settings {json} refused: {e}"),
    }
}

fn error(rules: &str) -> String {
    let json = format!(r#"{{"rules": {{"site": {rules}}}}}"#);
    match Rewriter::new(&testing::settings(&json)) {
        Ok(_) => panic!("settings {json} accepted"),
        Err(e) => e,
    }
}

fn get(path_and_query: &str) -> Request<'static> {
    testing::request("GET", path_and_query).build()
}

fn forward(d: RouteDecision) -> ForwardTo {
    match d {
        RouteDecision::Forward(f) => f,
        other => panic!("expected a forward, got {other:?}"),
    }
}

fn set(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn path_captures_build_the_new_url() {
    let p = plugin(
        r#"[{"path": "^/products/(\\d+)/(\\w+)$", "action": "rewrite",
             "url": "/catalog/item.aspx?id={R:1}&view={R:2}&whole={R:0}"}]"#,
    );
    let f = forward(p.route(&get("/products/42/details?ref=mail")));
    assert_eq!(
        f.path.as_deref(),
        Some("/catalog/item.aspx?id=42&view=details&whole=/products/42/details")
    );
    assert_eq!(f.farm, None);
    assert_eq!(f.host, None);
    assert!(f.set_headers.is_empty() && f.remove_headers.is_empty());
    assert_eq!(p.route(&get("/products/x/details")), RouteDecision::Pass);
}

#[test]
fn host_captures_and_server_variables() {
    let p = plugin(
        r#"[{"host": "^([a-z]+)\\.shop\\.example$", "path": "^/(.*)", "action": "rewrite",
             "url": "/tenants/{C:1}/{R:1}",
             "set_headers": [["X-Tenant", "{C:1}"], ["x-original", "{HTTP_HOST}{PATH}?{QUERY_STRING}"]]}]"#,
    );
    let req = testing::request("GET", "/cart?step=2")
        .host("acme.shop.example:8443")
        .build();
    let f = forward(p.route(&req));
    assert_eq!(f.path.as_deref(), Some("/tenants/acme/cart?step=2"));
    assert_eq!(
        f.set_headers,
        set(&[
            ("x-tenant", "acme"),
            ("x-original", "acme.shop.example:8443/cart?step=2")
        ])
    );
    let other = testing::request("GET", "/cart")
        .host("www.example.com")
        .build();
    assert_eq!(p.route(&other), RouteDecision::Pass);
}

#[test]
fn missing_captures_expand_to_nothing() {
    let p = plugin(
        r#"[{"path": "^/a(/x)?(/y)?$", "action": "rewrite", "url": "/b{R:1}{R:2}{R:9}{C:1}"}]"#,
    );
    assert_eq!(forward(p.route(&get("/a/y"))).path.as_deref(), Some("/b/y"));
    assert_eq!(forward(p.route(&get("/a"))).path.as_deref(), Some("/b"));
    // Without a path regex there are no path captures either.
    let p = plugin(r#"[{"action": "rewrite", "url": "/x{R:0}{R:1}"}]"#);
    assert_eq!(
        forward(p.route(&get("/anything"))).path.as_deref(),
        Some("/x")
    );
}

#[test]
fn braces_that_are_not_references_stay() {
    let p = plugin(
        r#"[{"path": "^/(health)$", "action": "respond", "content_type": "application/json",
             "body": "{\"check\": \"{R:1}\", \"x\": {R:}, \"y\": {UNKNOWN}, \"z\": {r:1}"}]"#,
    );
    assert_eq!(
        p.route(&get("/health")),
        RouteDecision::respond(
            200,
            "application/json",
            r#"{"check": "health", "x": {R:}, "y": {UNKNOWN}, "z": health"#
        )
    );
    assert_eq!(
        Template::parse("{{R:1}}").0,
        [
            Piece::Text("{".into()),
            Piece::PathCapture(1),
            Piece::Text("}".into())
        ]
    );
    assert_eq!(
        Template::parse("{path}{Query_String}{http_host}").0,
        [Piece::Path, Piece::QueryString, Piece::HttpHost]
    );
    assert_eq!(
        Template::parse("{R:1234}").0,
        [Piece::Text("{R:1234}".into())]
    );
}

#[test]
fn rewrites_chain_and_later_rules_see_the_new_path() {
    let p = plugin(
        r#"[{"name": "legacy", "path": "^/old/(.*)", "action": "rewrite", "url": "/new/{R:1}"},
            {"name": "version", "path": "^/new/(.*)", "action": "rewrite", "url": "/v2/{R:1}"},
            {"name": "tag", "path": "^/v2/", "action": "none", "set_headers": [["x-v", "2"]]}]"#,
    );
    let f = forward(p.route(&get("/old/a/b?q=1")));
    assert_eq!(f.path.as_deref(), Some("/v2/a/b?q=1"));
    assert_eq!(f.set_headers, set(&[("x-v", "2")]));
    let f = forward(p.route(&get("/new/c")));
    assert_eq!(f.path.as_deref(), Some("/v2/c"));
}

#[test]
fn stop_ends_the_list() {
    let p = plugin(
        r#"[{"path": "^/old/(.*)", "action": "rewrite", "url": "/new/{R:1}", "stop": true},
            {"path": "^/new/(.*)", "action": "rewrite", "url": "/v2/{R:1}"}]"#,
    );
    assert_eq!(
        forward(p.route(&get("/old/a"))).path.as_deref(),
        Some("/new/a")
    );
    assert_eq!(
        forward(p.route(&get("/new/a"))).path.as_deref(),
        Some("/v2/a")
    );
    // A non-matching rule with stop does not stop anything.
    let p = plugin(
        r#"[{"path": "^/nothing", "action": "none", "set_headers": [["a", "1"]], "stop": true},
            {"action": "none", "set_headers": [["b", "2"]], "stop": true},
            {"action": "none", "set_headers": [["c", "3"]]}]"#,
    );
    assert_eq!(forward(p.route(&get("/x"))).set_headers, set(&[("b", "2")]));
}

#[test]
fn query_handling_of_rewrites() {
    let p = plugin(
        r#"[{"path": "^/keep$", "action": "rewrite", "url": "/kept"},
            {"path": "^/drop$", "action": "rewrite", "url": "/dropped", "append_query": false},
            {"path": "^/own$", "action": "rewrite", "url": "/own2?lang=en"},
            {"path": "^/empty$", "action": "rewrite", "url": "/empty2?"},
            {"path": "^/qs$", "action": "rewrite", "url": "/qs2?{QUERY_STRING}&added=1"},
            {"path": "^/noslash/(.*)", "action": "rewrite", "url": "{R:1}"}]"#,
    );
    let path = |pq: &str| forward(p.route(&get(pq))).path;
    assert_eq!(path("/keep?a=1").as_deref(), Some("/kept?a=1"));
    assert_eq!(path("/keep").as_deref(), Some("/kept"));
    assert_eq!(path("/drop?a=1").as_deref(), Some("/dropped"));
    assert_eq!(path("/own?a=1").as_deref(), Some("/own2?lang=en"));
    assert_eq!(path("/empty?a=1").as_deref(), Some("/empty2"));
    assert_eq!(path("/qs?a=1").as_deref(), Some("/qs2?a=1&added=1"));
    assert_eq!(path("/noslash/x/y").as_deref(), Some("/x/y"));
    // The query is not part of what the path regex sees.
    assert_eq!(p.route(&get("/other?keep")), RouteDecision::Pass);
}

#[test]
fn rewrite_to_the_same_url_changes_nothing() {
    let p = plugin(r#"[{"path": "^/same$", "action": "rewrite", "url": "/same"}]"#);
    assert_eq!(p.route(&get("/same?x=1")), RouteDecision::Pass);
}

#[test]
fn redirects_with_and_without_the_query() {
    let p = plugin(
        r#"[{"host": "^example\\.com$", "path": "^/(.*)", "action": "redirect",
             "url": "https://www.example.com/{R:1}"},
            {"path": "^/moved$", "action": "redirect", "url": "/here", "status": 302,
             "append_query": false},
            {"path": "^/search$", "action": "redirect", "url": "/find?engine=new", "status": 308}]"#,
    );
    let req = testing::request("GET", "/a/b?x=1&y=2")
        .host("example.com:80")
        .build();
    assert_eq!(
        p.route(&req),
        RouteDecision::redirect(301, "https://www.example.com/a/b?x=1&y=2")
    );
    let req = testing::request("GET", "/a").host("example.com").build();
    assert_eq!(
        p.route(&req),
        RouteDecision::redirect(301, "https://www.example.com/a")
    );
    assert_eq!(
        p.route(&get("/moved?x=1")),
        RouteDecision::redirect(302, "/here")
    );
    assert_eq!(
        p.route(&get("/search?q=z")),
        RouteDecision::redirect(308, "/find?engine=new")
    );
}

#[test]
fn redirect_after_a_rewrite_uses_the_rewritten_path() {
    let p = plugin(
        r#"[{"path": "^/a$", "action": "rewrite", "url": "/b", "set_headers": [["x", "1"]]},
            {"path": "^/b$", "action": "redirect", "url": "https://elsewhere{PATH}", "status": 307}]"#,
    );
    assert_eq!(
        p.route(&get("/a?q")),
        RouteDecision::redirect(307, "https://elsewhere/b?q")
    );
}

#[test]
fn location_drops_line_breaks_from_the_request() {
    let p = plugin(r#"[{"path": "(?s)^/go/(.*)", "action": "redirect", "url": "/to/{R:1}"}]"#);
    let req = get("/go/a\r\nset-cookie: evil");
    assert_eq!(
        p.route(&req),
        RouteDecision::redirect(301, "/to/aset-cookie: evil")
    );
}

#[test]
fn respond_defaults_and_settings() {
    let p = plugin(
        r#"[{"path": "^/ping$", "action": "respond", "body": "pong {PATH}"},
            {"path": "^/gone$", "action": "respond", "status": 410,
             "content_type": "text/html", "body": "<h1>Gone</h1>"},
            {"path": "^/empty$", "action": "respond", "status": 204}]"#,
    );
    assert_eq!(
        p.route(&get("/ping")),
        RouteDecision::respond(200, "text/plain; charset=utf-8", "pong /ping")
    );
    assert_eq!(
        p.route(&get("/gone")),
        RouteDecision::respond(410, "text/html", "<h1>Gone</h1>")
    );
    assert_eq!(
        p.route(&get("/empty")),
        RouteDecision::respond(204, "text/plain; charset=utf-8", "")
    );
}

#[test]
fn earlier_header_changes_are_dropped_by_a_terminal_action() {
    let p = plugin(
        r#"[{"action": "none", "set_headers": [["x-a", "1"]], "farm": "other"},
            {"path": "^/blocked", "action": "respond", "status": 403, "body": "no"}]"#,
    );
    assert_eq!(
        p.route(&get("/blocked")),
        RouteDecision::respond(403, "text/plain; charset=utf-8", "no")
    );
}

#[test]
fn header_set_and_remove_accumulate() {
    let p = plugin(
        r#"[{"action": "none", "set_headers": [["X-A", "1"], ["x-b", "2"]], "remove_headers": ["X-Powered-By"]},
            {"path": "^/api/", "action": "none", "set_headers": [["x-a", "3"], ["x-powered-by", "farmgate"]],
             "remove_headers": ["x-b", "Server"]}]"#,
    );
    let f = forward(p.route(&get("/api/x")));
    assert_eq!(f.path, None);
    assert_eq!(f.farm, None);
    assert_eq!(
        f.set_headers,
        set(&[("x-a", "3"), ("x-powered-by", "farmgate")])
    );
    assert_eq!(f.remove_headers, ["x-b", "server"]);
    let f = forward(p.route(&get("/other")));
    assert_eq!(f.set_headers, set(&[("x-a", "1"), ("x-b", "2")]));
    assert_eq!(f.remove_headers, ["x-powered-by"]);
}

#[test]
fn farm_switch() {
    let p = plugin(
        r#"[{"path": "^/api/v2/(.*)", "action": "rewrite", "url": "/{R:1}", "farm": "api-v2"},
            {"path": "^/static/", "action": "none", "farm": "static"},
            {"path": "^/static/img/", "action": "none", "farm": "images"}]"#,
    );
    let f = forward(p.route(&get("/api/v2/orders?id=3")));
    assert_eq!(f.farm.as_deref(), Some("api-v2"));
    assert_eq!(f.path.as_deref(), Some("/orders?id=3"));
    let f = forward(p.route(&get("/static/site.css")));
    assert_eq!(f.farm.as_deref(), Some("static"));
    assert_eq!(f.path, None);
    // The last matching rule's farm wins.
    assert_eq!(
        p.route(&get("/static/img/a.png")),
        RouteDecision::to_farm("images")
    );
}

#[test]
fn case_sensitivity() {
    let p = plugin(
        r#"[{"path": "^/Admin", "action": "respond", "status": 403, "body": "insensitive"},
            {"host": "^WWW\\.", "path": "^/Exact$", "ignore_case": false, "action": "respond", "body": "sensitive"}]"#,
    );
    for path in ["/admin", "/ADMIN/x", "/Admin"] {
        assert_eq!(
            p.route(&get(path)),
            RouteDecision::respond(403, "text/plain; charset=utf-8", "insensitive"),
            "{path}"
        );
    }
    let req = |host: &str, path: &str| p.route(&testing::request("GET", path).host(host).build());
    assert_eq!(
        req("WWW.example.com", "/Exact"),
        RouteDecision::respond(200, "text/plain; charset=utf-8", "sensitive")
    );
    assert_eq!(req("www.example.com", "/Exact"), RouteDecision::Pass);
    assert_eq!(req("WWW.example.com", "/exact"), RouteDecision::Pass);
}

#[test]
fn no_match_or_no_rules_pass() {
    let p = plugin(r#"[{"path": "^/only$", "action": "none", "set_headers": [["a", "b"]]}]"#);
    assert_eq!(p.route(&get("/other")), RouteDecision::Pass);
    let other_rule = testing::request("GET", "/only").rule("another").build();
    assert_eq!(p.route(&other_rule), RouteDecision::Pass);
    let empty = Rewriter::new(&testing::settings("{}")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(empty.route(&get("/only")), RouteDecision::Pass);
}

#[test]
fn host_port_is_removed_before_matching() {
    assert_eq!(without_port("example.com:8080"), "example.com");
    assert_eq!(without_port("example.com"), "example.com");
    assert_eq!(without_port("[::1]:443"), "[::1]");
    assert_eq!(without_port("[::1]"), "[::1]");
    assert_eq!(without_port("::1"), "::1");
    assert_eq!(without_port("example.com:"), "example.com");
    assert_eq!(without_port(""), "");
    let p = plugin(r#"[{"host": "^api\\.example\\.com$", "action": "none", "farm": "api"}]"#);
    let req = testing::request("GET", "/")
        .host("api.example.com:8443")
        .build();
    assert_eq!(p.route(&req), RouteDecision::to_farm("api"));
}

#[test]
fn header_values_lose_line_breaks_from_the_request() {
    let p = plugin(
        r#"[{"path": "(?s)^/(.*)", "action": "none", "set_headers": [["x-path", "{R:1}"]]}]"#,
    );
    let req = get("/a\nb\0c");
    assert_eq!(
        forward(p.route(&req)).set_headers,
        set(&[("x-path", "abc")])
    );
}

#[test]
fn invalid_settings_name_the_rule_and_the_index() {
    for (rules, expected) in [
        (
            r#"[{"action": "none"}, {"name": "bad", "path": "(", "action": "none"}]"#,
            "rule \"site\", rewrite 1 (\"bad\"): path regex \"(\" is invalid",
        ),
        (
            r#"[{"host": "[z-a]", "action": "none"}]"#,
            "rule \"site\", rewrite 0: host regex \"[z-a]\" is invalid",
        ),
        (r#"[{"action": "proxy"}]"#, "unknown variant `proxy`"),
        (r#"[{"path": "/"}]"#, "missing field `action`"),
        (
            r#"[{"action": "rewrite"}]"#,
            "action \"rewrite\" needs a url",
        ),
        (
            r#"[{"action": "redirect"}]"#,
            "action \"redirect\" needs a url",
        ),
        (
            r#"[{"action": "redirect", "url": "/x", "status": 200}]"#,
            "redirect status 200 is not one of 301, 302, 303, 307, 308",
        ),
        (
            r#"[{"action": "redirect", "url": "/x", "status": 304}]"#,
            "redirect status 304",
        ),
        (
            r#"[{"action": "respond", "status": 101}]"#,
            "respond status 101 is not a final status",
        ),
        (
            r#"[{"action": "respond", "status": 600}]"#,
            "respond status 600",
        ),
        (
            r#"[{"action": "rewrite", "url": "http://other/x"}]"#,
            "must be a path starting with /",
        ),
        (r#"[{"action": "rewrite", "url": " "}]"#, "url is empty"),
        (r#"[{"action": "none", "farm": ""}]"#, "farm is empty"),
        (
            r#"[{"action": "none", "set_headers": [["bad name", "v"]]}]"#,
            "\"bad name\" is not a header name",
        ),
        (
            r#"[{"action": "none", "set_headers": [["x", "a\r\nb"]]}]"#,
            "line break",
        ),
        (
            r#"[{"action": "none", "remove_headers": [""]}]"#,
            "\"\" is not a header name",
        ),
        (
            r#"[{"action": "respond", "content_type": "text/html\r\nx: y"}]"#,
            "is not a header value",
        ),
        (
            r#"[{"action": "redirect", "url": "/a\nb"}]"#,
            "url contains a line break",
        ),
        (r#"[{"action": "redirect", "url": ""}]"#, "url is empty"),
        (
            r#"[{"action": "none", "set_headers": {"a": "b"}}]"#,
            "rule \"site\", rewrite 0",
        ),
        (
            r#"[{"action": "none", "regex": "x"}]"#,
            "unknown field `regex`",
        ),
    ] {
        let e = error(rules);
        assert!(e.contains(expected), "{rules}: {e}");
    }
    let e = match Rewriter::new(&testing::settings(r#"{"rewrites": {}}"#)) {
        Ok(_) => panic!("accepted"),
        Err(e) => e,
    };
    assert!(e.contains("unknown field `rewrites`"), "{e}");
}

#[test]
fn fields_that_do_not_apply_to_the_action_are_ignored() {
    let p = plugin(
        r#"[{"path": "^/a$", "action": "rewrite", "url": "/b", "status": 302, "body": "x",
             "content_type": "text/html"},
            {"path": "^/n$", "action": "none", "url": "/ignored", "set_headers": [["x", "1"]]},
            {"path": "^/r$", "action": "redirect", "url": "/s", "farm": "f",
             "set_headers": [["bad name", "v"]], "remove_headers": ["y"], "body": "x"},
            {"path": "^/p$", "action": "respond", "url": "/t", "farm": "f", "body": "ok",
             "set_headers": [["x", "1"]]}]"#,
    );
    assert_eq!(forward(p.route(&get("/a"))).path.as_deref(), Some("/b"));
    let f = forward(p.route(&get("/n")));
    assert_eq!((f.path, f.set_headers), (None, set(&[("x", "1")])));
    assert_eq!(p.route(&get("/r")), RouteDecision::redirect(301, "/s"));
    assert_eq!(
        p.route(&get("/p")),
        RouteDecision::respond(200, "text/plain; charset=utf-8", "ok")
    );
}

#[test]
fn patterns_without_referenced_captures_do_not_record_them() {
    let p = plugin(
        r#"[{"path": "^/(a)", "host": "(.*)", "action": "none", "set_headers": [["x", "{C:1}"]]}]"#,
    );
    let rule = &p.rules["site"][0];
    assert!(rule.path.as_ref().is_some_and(|p| !p.captures));
    assert!(rule.host.as_ref().is_some_and(|p| p.captures));
}
