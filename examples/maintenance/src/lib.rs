//! A maintenance window: while `enabled`, every request is answered by farmgate itself with
//! `503 Service Unavailable`, a `Retry-After` header and a small HTML page, so no request reaches
//! the members while they are being worked on. Two kinds of request still go through (the plugin
//! passes them to the rest of the chain):
//!
//! - requests from the addresses in `allow_clients` (the administrators checking the site before
//!   it reopens), compared as IP addresses, so `::ffff:10.0.0.5` is `10.0.0.5`;
//! - requests under the path prefixes in `allow_paths` (a load balancer's `/health`, an API that
//!   stays up), matched by whole segments and case-insensitively, as farmgate matches rule paths:
//!   `/health` covers `/health` and `/health/db`, not `/healthy`.
//!
//! The client address is the one farmgate hands in: the connection's peer, or the address an
//! upstream proxy listed in `proxy.trusted_proxies` forwarded.
//!
//! With `enabled = false` everything passes; the settings are still checked, so the window can be
//! prepared in advance and opened by changing one line (and dropping the file in again).
//!
//! Settings (`[plugins.config.maintenance] settings = { ... }`):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `enabled` | `true` | whether the maintenance page is served |
//! | `retry_after_seconds` | `600` | the `Retry-After` value; `0` leaves the header out |
//! | `title` | `"Down for maintenance"` | page title and heading (plain text, escaped) |
//! | `message` | a generic sentence | the paragraph below it (plain text, escaped; blank lines start new paragraphs) |
//! | `allow_clients` | `[]` | client IP addresses that still get through |
//! | `allow_paths` | `[]` | path prefixes that still get through |

use std::net::IpAddr;

use farmgate_sdk::{
    DirectResponse, Plugin, Request, RouteDecision, Router, Settings, export_plugin,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default = "default_retry_after")]
    retry_after_seconds: u32,
    #[serde(default = "default_title")]
    title: String,
    #[serde(default = "default_message")]
    message: String,
    #[serde(default)]
    allow_clients: Vec<String>,
    #[serde(default)]
    allow_paths: Vec<String>,
}

fn yes() -> bool {
    true
}
fn default_retry_after() -> u32 {
    600
}
fn default_title() -> String {
    "Down for maintenance".into()
}
fn default_message() -> String {
    "This site is undergoing scheduled maintenance. Please try again in a few minutes.".into()
}

#[derive(Debug)]
pub struct Maintenance {
    enabled: bool,
    allow_clients: Vec<IpAddr>,
    /// Lower-case prefixes without a trailing slash; `""` stands for `/` (every path).
    allow_paths: Vec<String>,
    /// The whole answer, built once.
    response: DirectResponse,
}

impl Plugin for Maintenance {
    fn new(settings: &Settings) -> Result<Self, String> {
        let c: Config = settings
            .deserialize()
            .map_err(|e| name_the_key(settings, e))?;
        if c.title.trim().is_empty() {
            return Err("settings.title is empty".into());
        }
        let allow_clients = c
            .allow_clients
            .iter()
            .map(|a| {
                a.trim().parse::<IpAddr>().map(canonical).map_err(|_| {
                    format!(
                        "settings.allow_clients: \"{a}\" is not an IP address (list single \
                             addresses such as \"10.0.0.5\" or \"::1\")"
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let allow_paths = c
            .allow_paths
            .iter()
            .map(|p| normalize_prefix(p))
            .collect::<Result<Vec<_>, _>>()?;

        let mut headers = vec![
            (
                "content-type".to_string(),
                "text/html; charset=utf-8".to_string(),
            ),
            // A cached maintenance page would outlive the window.
            ("cache-control".to_string(), "no-store".to_string()),
        ];
        if c.retry_after_seconds > 0 {
            headers.push(("retry-after".to_string(), c.retry_after_seconds.to_string()));
        }
        let response = DirectResponse {
            status: 503,
            headers,
            body: page(c.title.trim(), &c.message).into_bytes(),
        };
        Ok(Maintenance {
            enabled: c.enabled,
            allow_clients,
            allow_paths,
            response,
        })
    }
}

/// serde's message names an unknown or missing key but not the key whose value has the wrong
/// type; reading each key on its own finds it (`Settings::get` names the key).
fn name_the_key(settings: &Settings, error: String) -> String {
    [
        settings.get::<bool>("enabled").err(),
        settings.get::<u32>("retry_after_seconds").err(),
        settings.get::<String>("title").err(),
        settings.get::<String>("message").err(),
        settings.get::<Vec<String>>("allow_clients").err(),
        settings.get::<Vec<String>>("allow_paths").err(),
    ]
    .into_iter()
    .flatten()
    .next()
    .unwrap_or(error)
}

/// An IPv4 client on a dual-stack socket may arrive as `::ffff:a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// `/health`, `/health/`, `/health/*` and `/Health` all mean the prefix `/health`.
fn normalize_prefix(p: &str) -> Result<String, String> {
    let trimmed = p.trim();
    if !trimmed.starts_with('/') {
        return Err(format!(
            "settings.allow_paths: \"{p}\" must start with '/' (e.g. \"/health\")"
        ));
    }
    if trimmed.contains(['?', '#']) {
        return Err(format!(
            "settings.allow_paths: \"{p}\" is a path prefix; leave out query and fragment"
        ));
    }
    let without_star = trimmed.strip_suffix('*').unwrap_or(trimmed);
    if without_star.contains('*') {
        return Err(format!(
            "settings.allow_paths: \"{p}\" may use '*' only at the end"
        ));
    }
    Ok(without_star.trim_end_matches('/').to_ascii_lowercase())
}

/// Whether `path` is `prefix` or below it, comparing case-insensitively by whole segments.
fn under(path: &str, prefix: &str) -> bool {
    let (Some(head), Some(rest)) = (path.get(..prefix.len()), path.get(prefix.len()..)) else {
        return false;
    };
    head.eq_ignore_ascii_case(prefix) && (rest.is_empty() || rest.starts_with('/'))
}

/// Text made safe for HTML element content and attribute values.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The maintenance page; `title` and `message` are plain text.
fn page(title: &str, message: &str) -> String {
    let title = escape_html(title);
    let paragraphs: String = message
        .split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| format!("<p>{}</p>\n", escape_html(p)))
        .collect();
    format!(
        "<!doctype html>\n\
         <html lang=\"en\">\n\
         <head>\n\
         <meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n\
         <style>body{{font-family:system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em;color:#222}}</style>\n\
         </head>\n\
         <body>\n\
         <h1>{title}</h1>\n\
         {paragraphs}\
         </body>\n\
         </html>\n"
    )
}

impl Maintenance {
    fn allowed(&self, req: &Request) -> bool {
        let client_allowed = !self.allow_clients.is_empty()
            && req
                .client_addr()
                .trim()
                .parse::<IpAddr>()
                .map(|ip| self.allow_clients.contains(&canonical(ip)))
                .unwrap_or(false);
        client_allowed || self.allow_paths.iter().any(|p| under(req.path(), p))
    }
}

impl Router for Maintenance {
    fn route(&self, req: &Request) -> RouteDecision {
        if !self.enabled || self.allowed(req) {
            RouteDecision::Pass
        } else {
            RouteDecision::Respond(self.response.clone())
        }
    }
}

export_plugin!(Maintenance);

#[cfg(test)]
mod tests {
    use super::*;
    use farmgate_sdk::testing;

    fn plugin(json: &str) -> Maintenance {
        Maintenance::new(&testing::settings(json)).expect("valid settings")
    }

    fn answer(p: &Maintenance, req: &Request) -> DirectResponse {
        match p.route(req) {
            RouteDecision::Respond(r) => r,
            other => panic!("expected the maintenance page, got {other:?}"),
        }
    }

    fn header<'a>(r: &'a DirectResponse, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn answers_503_with_retry_after_and_a_page() {
        let p = plugin(r#"{"retry_after_seconds": 120, "title": "Back soon"}"#);
        let r = answer(&p, &testing::request("GET", "/shop/cart?id=1").build());
        assert_eq!(r.status, 503);
        assert_eq!(header(&r, "retry-after"), Some("120"));
        assert_eq!(header(&r, "content-type"), Some("text/html; charset=utf-8"));
        assert_eq!(header(&r, "cache-control"), Some("no-store"));
        let body = String::from_utf8(r.body).unwrap();
        assert!(body.contains("<title>Back soon</title>"), "{body}");
        assert!(body.contains("<h1>Back soon</h1>"), "{body}");
        assert!(body.contains("<p>This site is undergoing"), "{body}");
    }

    #[test]
    fn defaults_work_and_zero_leaves_retry_after_out() {
        let r = answer(&plugin("{}"), &testing::request("GET", "/").build());
        assert_eq!(header(&r, "retry-after"), Some("600"));
        let r = answer(
            &plugin(r#"{"retry_after_seconds": 0}"#),
            &testing::request("GET", "/").build(),
        );
        assert_eq!(header(&r, "retry-after"), None);
    }

    #[test]
    fn settings_text_is_escaped() {
        let p = plugin(
            r#"{"title": "R&D <b>down</b>", "message": "Back at \"5 o'clock\" <script>alert(1)</script>\n\nSecond paragraph"}"#,
        );
        let body =
            String::from_utf8(answer(&p, &testing::request("GET", "/").build()).body).unwrap();
        assert!(
            body.contains("<title>R&amp;D &lt;b&gt;down&lt;/b&gt;</title>"),
            "{body}"
        );
        assert!(
            body.contains(
                "<p>Back at &quot;5 o&#39;clock&quot; &lt;script&gt;alert(1)&lt;/script&gt;</p>\n<p>Second paragraph</p>"
            ),
            "{body}"
        );
        assert!(!body.contains("<script>"));
        assert!(!body.contains("<b>"));
    }

    #[test]
    fn allowed_clients_pass() {
        let p = plugin(r#"{"allow_clients": ["10.0.0.5", "2001:db8::1"]}"#);
        let from = |addr: &str| p.route(&testing::request("GET", "/").client(addr).build());
        assert_eq!(from("10.0.0.5"), RouteDecision::Pass);
        assert_eq!(from("::ffff:10.0.0.5"), RouteDecision::Pass);
        assert_eq!(from("2001:DB8:0:0::1"), RouteDecision::Pass);
        assert!(matches!(from("10.0.0.6"), RouteDecision::Respond(_)));
        assert!(matches!(from("not an address"), RouteDecision::Respond(_)));
        assert!(matches!(from(""), RouteDecision::Respond(_)));
    }

    #[test]
    fn allowed_paths_pass_by_whole_segments() {
        let p = plugin(r#"{"allow_paths": ["/health", "/api/status/*", "/Admin/"]}"#);
        let path = |path: &str| p.route(&testing::request("GET", path).build());
        for ok in [
            "/health",
            "/health/db",
            "/HEALTH",
            "/api/status",
            "/api/status/x",
            "/admin/users",
        ] {
            assert_eq!(path(ok), RouteDecision::Pass, "{ok}");
        }
        for blocked in [
            "/healthy",
            "/",
            "/api",
            "/api/statuses",
            "/admins",
            "/x/health",
        ] {
            assert!(
                matches!(path(blocked), RouteDecision::Respond(_)),
                "{blocked}"
            );
        }
        // "/" as an allowed prefix lets everything through.
        assert_eq!(
            plugin(r#"{"allow_paths": ["/"]}"#).route(&testing::request("GET", "/x").build()),
            RouteDecision::Pass
        );
    }

    #[test]
    fn disabled_passes_everything() {
        let p = plugin(r#"{"enabled": false, "allow_clients": ["10.0.0.5"]}"#);
        assert_eq!(
            p.route(&testing::request("GET", "/").build()),
            RouteDecision::Pass
        );
    }

    #[test]
    fn settings_are_validated() {
        let err = |json: &str| Maintenance::new(&testing::settings(json)).expect_err(json);
        assert!(err(r#"{"allow_clients": ["10.0.0.0/8"]}"#).contains("not an IP address"));
        assert!(err(r#"{"allow_paths": ["health"]}"#).contains("must start with '/'"));
        assert!(err(r#"{"allow_paths": ["/a*b"]}"#).contains("only at the end"));
        assert!(err(r#"{"allow_paths": ["/a?b=1"]}"#).contains("query"));
        assert!(err(r#"{"title": "  "}"#).contains("title is empty"));
        assert!(err(r#"{"retry_after_seconds": -1}"#).contains("setting \"retry_after_seconds\""));
        assert!(err(r#"{"allow_paths": "/health"}"#).contains("setting \"allow_paths\""));
        assert!(err(r#"{"enable": true}"#).contains("unknown field"));
    }

    #[test]
    fn under_never_slices_inside_a_character() {
        // "/é" is 3 bytes; a 2-byte prefix would cut the 'é' in half.
        assert!(!under("/é", "/x"));
        assert!(under("/é/x", "/é"));
    }

    /// The example farmgate.toml: the plugin's settings from it, the farm names it defines, and
    /// the whole table.
    fn example_config() -> (Settings, Vec<String>, toml::Table) {
        let config: toml::Table =
            toml::from_str(include_str!("../farmgate.toml")).expect("farmgate.toml is TOML");
        let settings = &config["plugins"]["config"]["maintenance"]["settings"];
        let settings = testing::settings(&serde_json::to_string(settings).expect("JSON"));
        let farms = config["farms"]
            .as_array()
            .expect("[[farms]]")
            .iter()
            .map(|f| f["name"].as_str().expect("farm name").to_string())
            .collect();
        (settings, farms, config)
    }

    /// The names in a rule's or farm's plugin list.
    fn bound(table: &toml::Value, key: &str) -> Vec<String> {
        table[key]
            .as_array()
            .expect("a plugin list")
            .iter()
            .map(|n| n.as_str().expect("a plugin name").to_string())
            .collect()
    }

    #[test]
    fn the_example_config_works_with_the_plugin() {
        let (settings, _, config) = example_config();
        let p = Maintenance::new(&settings).expect("the example settings are accepted");
        let r = answer(&p, &testing::request("GET", "/").build());
        assert_eq!(header(&r, "retry-after"), Some("900"));
        let admin = testing::request("GET", "/").client("127.0.0.2").build();
        assert_eq!(p.route(&admin), RouteDecision::Pass);
        assert_eq!(
            p.route(&testing::request("GET", "/health").build()),
            RouteDecision::Pass
        );
        assert_eq!(
            bound(&config["rules"][0], "router_plugins"),
            ["maintenance"]
        );
    }
}
