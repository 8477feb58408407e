//! Health evaluation from a JSON status page. Many applications publish their own view of their
//! health as JSON (`{"status": "ok", "checks": {"db": "ok", "cache": "degraded"}}`, Spring Boot's
//! `{"status": "UP", "components": {"db": {"status": "UP"}}}`, ...), and a member that answers
//! `200` can still report that its database is gone. This plugin reads that page from the health
//! probe's body and judges the member by it:
//!
//! - **Healthy** when the field at `status_field` (default `status`; a dotted path such as
//!   `app.status` reaches into objects) holds one of `healthy_values` (default `ok`, `healthy`,
//!   `up`; compared case-insensitively; a JSON `true` counts as healthy too), and every check in
//!   `required_checks` is healthy as well. Checks live in the object at `checks_field` (default
//!   `checks`); a check's value is either the status itself (`"db": "ok"`) or an object with a
//!   status at `status_field` (`"db": {"status": "UP"}`).
//! - **Unhealthy**, with a reason naming what was wrong, when the probe got no response (the
//!   probe's error is quoted), when the page is JSON but the status is not `2xx`, when it is not
//!   valid JSON, when it was cut short (the probe keeps only the first few KiB of the body), when
//!   the status field is missing or not healthy, or when a required check is.
//! - **Pass** when the response is not JSON at all: neither a JSON content type
//!   (`application/json` or any `+json` type such as `application/health+json`) nor a body that
//!   starts with `{`. The next evaluator, normally farmgate's built-in status-code check, then
//!   decides, so a farm whose members do not all have a JSON page can still use the plugin. A
//!   non-`2xx` answer that is not JSON passes too, for the same reason: the built-in check has its
//!   own list of acceptable statuses (`[farms.health] statuses`), and a `302` to a login page
//!   there may well mean healthy.
//!
//! Settings (`[plugins.config.json_health] settings = { ... }`):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `status_field` | `"status"` | dotted path of the overall status |
//! | `healthy_values` | `["ok", "healthy", "up"]` | statuses that mean healthy (case-insensitive) |
//! | `checks_field` | `"checks"` | dotted path of the object holding the individual checks |
//! | `required_checks` | `[]` | checks that must be healthy too |

use farmgate_sdk::{HealthEvaluation, HealthVerdict, Plugin, Probe, Settings, export_plugin};
use serde::Deserialize;
use serde_json::Value;
use serde_json::error::Category;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_status_field")]
    status_field: String,
    #[serde(default = "default_healthy_values")]
    healthy_values: Vec<String>,
    #[serde(default = "default_checks_field")]
    checks_field: String,
    #[serde(default)]
    required_checks: Vec<String>,
}

fn default_status_field() -> String {
    "status".into()
}
fn default_healthy_values() -> Vec<String> {
    vec!["ok".into(), "healthy".into(), "up".into()]
}
fn default_checks_field() -> String {
    "checks".into()
}

/// A dotted path, split once: `app.status` -> `["app", "status"]`.
#[derive(Debug, Clone, PartialEq)]
struct FieldPath {
    text: String,
    keys: Vec<String>,
}

impl FieldPath {
    fn parse(setting: &str, text: &str) -> Result<FieldPath, String> {
        let keys: Vec<String> = text.split('.').map(str::to_string).collect();
        if keys.iter().any(|k| k.is_empty()) {
            return Err(format!(
                "settings.{setting} = \"{text}\" is not a field path (keys separated by single \
                 dots, e.g. \"app.status\")"
            ));
        }
        Ok(FieldPath {
            text: text.to_string(),
            keys,
        })
    }

    fn lookup<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        self.keys
            .iter()
            .try_fold(root, |value, key| value.as_object()?.get(key))
    }
}

#[derive(Debug)]
pub struct JsonHealth {
    status: FieldPath,
    checks: FieldPath,
    /// Lower-cased.
    healthy_values: Vec<String>,
    required_checks: Vec<String>,
}

impl Plugin for JsonHealth {
    fn new(settings: &Settings) -> Result<Self, String> {
        let c: Config = settings
            .deserialize()
            .map_err(|e| name_the_key(settings, e))?;
        let healthy_values: Vec<String> = c
            .healthy_values
            .iter()
            .map(|v| v.trim().to_lowercase())
            .collect();
        if healthy_values.is_empty() || healthy_values.iter().any(String::is_empty) {
            return Err(
                "settings.healthy_values must list at least one non-empty status, e.g. [\"ok\"]"
                    .into(),
            );
        }
        let mut required_checks: Vec<String> = Vec::with_capacity(c.required_checks.len());
        for check in c.required_checks {
            if check.is_empty() {
                return Err("settings.required_checks: a check name is empty".into());
            }
            if required_checks.contains(&check) {
                return Err(format!("settings.required_checks lists \"{check}\" twice"));
            }
            required_checks.push(check);
        }
        Ok(JsonHealth {
            status: FieldPath::parse("status_field", &c.status_field)?,
            checks: FieldPath::parse("checks_field", &c.checks_field)?,
            healthy_values,
            required_checks,
        })
    }
}

/// serde's message names an unknown or missing key but not the key whose value has the wrong
/// type; reading each key on its own finds it (`Settings::get` names the key).
fn name_the_key(settings: &Settings, error: String) -> String {
    [
        settings.get::<String>("status_field").err(),
        settings.get::<Vec<String>>("healthy_values").err(),
        settings.get::<String>("checks_field").err(),
        settings.get::<Vec<String>>("required_checks").err(),
    ]
    .into_iter()
    .flatten()
    .next()
    .unwrap_or(error)
}

/// At most this many characters of a value from the page go into a reason.
const QUOTE_CHARS: usize = 60;

/// A JSON value for a reason, shortened: the page is the member's text, not ours.
fn quote(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(QUOTE_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// Whether a probe's answer is JSON: by content type, else by its first character.
fn looks_like_json(probe: &Probe, body: &[u8]) -> bool {
    let json_type = probe.header("content-type").is_some_and(|ct| {
        let mime = ct.split(';').next().unwrap_or("").trim();
        mime.eq_ignore_ascii_case("application/json")
            || mime
                .get(mime.len().saturating_sub(5)..)
                .is_some_and(|suffix| suffix.eq_ignore_ascii_case("+json"))
    });
    json_type || body.first() == Some(&b'{')
}

/// The body without a UTF-8 byte-order mark and leading white space.
fn trim_start(body: &[u8]) -> &[u8] {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    &body[start..]
}

impl JsonHealth {
    /// Whether a status value means healthy.
    fn is_healthy(&self, value: &Value) -> bool {
        match value {
            Value::String(s) => {
                let s = s.trim().to_lowercase();
                self.healthy_values.contains(&s)
            }
            Value::Bool(b) => *b,
            _ => false,
        }
    }

    /// What is wrong with one required check, if anything.
    fn check_problem(&self, checks: &serde_json::Map<String, Value>, name: &str) -> Option<String> {
        let Some(value) = checks.get(name) else {
            return Some(format!("{name} is missing"));
        };
        // `"db": "ok"` or `"db": {"status": "ok", ...}`.
        let status = if value.is_object() {
            match self.status.lookup(value) {
                Some(s) => s,
                None => return Some(format!("{name} has no \"{}\"", self.status.text)),
            }
        } else {
            value
        };
        (!self.is_healthy(status)).then(|| format!("{name} is {}", quote(status)))
    }

    fn judge(&self, page: &Value) -> HealthVerdict {
        if !page.is_object() {
            return HealthVerdict::unhealthy(format!(
                "status page is not a JSON object: {}",
                quote(page)
            ));
        }
        let Some(status) = self.status.lookup(page) else {
            return HealthVerdict::unhealthy(format!(
                "status page has no \"{}\" field",
                self.status.text
            ));
        };
        if !self.is_healthy(status) {
            return HealthVerdict::unhealthy(format!(
                "status page says \"{}\" is {} (healthy: {})",
                self.status.text,
                quote(status),
                self.healthy_values.join(", ")
            ));
        }
        if self.required_checks.is_empty() {
            return HealthVerdict::Healthy;
        }
        let Some(checks) = self.checks.lookup(page).and_then(Value::as_object) else {
            return HealthVerdict::unhealthy(format!(
                "status page has no \"{}\" object with the required checks",
                self.checks.text
            ));
        };
        let problems: Vec<String> = self
            .required_checks
            .iter()
            .filter_map(|name| self.check_problem(checks, name))
            .collect();
        if problems.is_empty() {
            HealthVerdict::Healthy
        } else {
            HealthVerdict::unhealthy(format!(
                "required checks not healthy: {}",
                problems.join("; ")
            ))
        }
    }
}

impl HealthEvaluation for JsonHealth {
    fn evaluate(&self, probe: &Probe) -> HealthVerdict {
        if let Some(error) = probe.error() {
            return HealthVerdict::unhealthy(format!("probe failed: {error}"));
        }
        let Some(status) = probe.status() else {
            return HealthVerdict::unhealthy("probe got no response");
        };
        let body = trim_start(probe.body_prefix());
        if !looks_like_json(probe, body) {
            return HealthVerdict::Pass;
        }
        let page = serde_json::from_slice::<Value>(body);
        if !(200..300).contains(&status) {
            // Say what the page says, when it says something.
            let says = page
                .ok()
                .and_then(|p| self.status.lookup(&p).map(quote))
                .map(|s| format!(", \"{}\" is {s}", self.status.text))
                .unwrap_or_default();
            return HealthVerdict::unhealthy(format!("HTTP status {status}{says}"));
        }
        match page {
            Ok(page) => self.judge(&page),
            Err(_) if body.is_empty() => {
                HealthVerdict::unhealthy("status page is empty although its content type is JSON")
            }
            Err(e) if e.classify() == Category::Eof => HealthVerdict::unhealthy(format!(
                "status page is cut short after {} bytes: the JSON does not end (the probe \
                 keeps only the first few KiB of the body; keep the page small)",
                probe.body_prefix().len()
            )),
            Err(e) => HealthVerdict::unhealthy(format!("status page is not valid JSON: {e}")),
        }
    }
}

export_plugin!(JsonHealth);

#[cfg(test)]
mod tests {
    use super::*;
    use farmgate_sdk::testing;

    fn plugin(json: &str) -> JsonHealth {
        JsonHealth::new(&testing::settings(json)).expect("valid settings")
    }

    /// A 200 probe with a JSON content type.
    fn json_probe(body: &str) -> Probe<'static> {
        with_type(200, "application/json; charset=utf-8", body)
    }

    fn with_type(status: u16, content_type: &str, body: &str) -> Probe<'static> {
        testing::probe(status, body, 1_500)
            .header("content-type", content_type)
            .build()
    }

    /// The reason of an unhealthy verdict; panics otherwise.
    fn reason(v: HealthVerdict) -> String {
        match v {
            HealthVerdict::Unhealthy(r) => r,
            other => panic!("expected unhealthy, got {other:?}"),
        }
    }

    #[test]
    fn healthy_status_values() {
        let p = plugin("{}");
        for body in [
            r#"{"status": "ok"}"#,
            r#"{"status": "UP", "components": {}}"#,
            r#"{"status": " Healthy "}"#,
            r#"{"status": true}"#,
        ] {
            assert_eq!(
                p.evaluate(&json_probe(body)),
                HealthVerdict::Healthy,
                "{body}"
            );
        }
        // No content type, but the body is plainly JSON.
        assert_eq!(
            p.evaluate(&testing::probe(200, "  {\"status\": \"ok\"}", 10).build()),
            HealthVerdict::Healthy
        );
        // A byte-order mark is not an error.
        assert_eq!(
            p.evaluate(&json_probe("\u{feff}{\"status\": \"ok\"}")),
            HealthVerdict::Healthy
        );
    }

    #[test]
    fn unhealthy_status_names_the_value() {
        let p = plugin("{}");
        let r = reason(p.evaluate(&json_probe(r#"{"status": "degraded"}"#)));
        assert!(r.contains("\"status\" is \"degraded\""), "{r}");
        assert!(r.contains("ok, healthy, up"), "{r}");
        let r = reason(p.evaluate(&json_probe(r#"{"status": false}"#)));
        assert!(r.contains("is false"), "{r}");
        let r = reason(p.evaluate(&json_probe(r#"{"state": "ok"}"#)));
        assert!(r.contains("no \"status\" field"), "{r}");
        let r = reason(p.evaluate(&json_probe(r#"["ok"]"#)));
        assert!(r.contains("not a JSON object"), "{r}");
        // A long value from the page is shortened in the reason.
        let long = "x".repeat(500);
        let r = reason(p.evaluate(&json_probe(&format!(r#"{{"status": "{long}"}}"#))));
        assert!(r.len() < 200 && r.contains("..."), "{r}");
    }

    #[test]
    fn dotted_status_paths() {
        let p = plugin(r#"{"status_field": "app.status", "healthy_values": ["green"]}"#);
        assert_eq!(
            p.evaluate(&json_probe(r#"{"app": {"status": "GREEN"}}"#)),
            HealthVerdict::Healthy
        );
        let r = reason(p.evaluate(&json_probe(r#"{"app": {"status": "ok"}}"#)));
        assert!(
            r.contains("\"app.status\" is \"ok\" (healthy: green)"),
            "{r}"
        );
        let r = reason(p.evaluate(&json_probe(r#"{"app": "green"}"#)));
        assert!(r.contains("no \"app.status\" field"), "{r}");
    }

    #[test]
    fn required_checks_must_be_healthy() {
        let p = plugin(r#"{"required_checks": ["db", "queue"]}"#);
        let body =
            r#"{"status": "ok", "checks": {"db": "ok", "queue": "up", "cache": "degraded"}}"#;
        assert_eq!(p.evaluate(&json_probe(body)), HealthVerdict::Healthy);

        let body = r#"{"status": "ok", "checks": {"db": "down", "cache": "ok"}}"#;
        let r = reason(p.evaluate(&json_probe(body)));
        assert_eq!(
            r,
            "required checks not healthy: db is \"down\"; queue is missing"
        );

        let r = reason(p.evaluate(&json_probe(r#"{"status": "ok"}"#)));
        assert!(r.contains("no \"checks\" object"), "{r}");
        // Checks that are not required do not matter.
        let lax = plugin("{}");
        assert_eq!(lax.evaluate(&json_probe(body)), HealthVerdict::Healthy);
    }

    #[test]
    fn checks_as_objects_spring_boot_style() {
        let p = plugin(r#"{"checks_field": "components", "required_checks": ["db"]}"#);
        let up = r#"{"status": "UP", "components": {"db": {"status": "UP", "details": {}}}}"#;
        assert_eq!(p.evaluate(&json_probe(up)), HealthVerdict::Healthy);
        let down = r#"{"status": "UP", "components": {"db": {"status": "DOWN"}}}"#;
        assert_eq!(
            reason(p.evaluate(&json_probe(down))),
            "required checks not healthy: db is \"DOWN\""
        );
        let odd = r#"{"status": "UP", "components": {"db": {"state": "UP"}}}"#;
        assert!(reason(p.evaluate(&json_probe(odd))).contains("db has no \"status\""));
    }

    #[test]
    fn probe_failures_are_unhealthy() {
        let p = plugin("{}");
        let failed = testing::probe(200, "", 0)
            .failed("connection refused")
            .build();
        assert_eq!(
            reason(p.evaluate(&failed)),
            "probe failed: connection refused"
        );
        let failed = testing::probe(200, "", 0).no_status().build();
        assert_eq!(reason(p.evaluate(&failed)), "probe got no response");
    }

    #[test]
    fn non_2xx_json_is_unhealthy() {
        let p = plugin("{}");
        let r = reason(p.evaluate(&with_type(503, "application/json", r#"{"status": "DOWN"}"#)));
        assert_eq!(r, "HTTP status 503, \"status\" is \"DOWN\"");
        // Even when the page claims to be fine.
        let r = reason(p.evaluate(&with_type(500, "application/json", r#"{"status": "ok"}"#)));
        assert!(r.starts_with("HTTP status 500"), "{r}");
        let r = reason(p.evaluate(&with_type(502, "application/json", "Bad gateway")));
        assert_eq!(r, "HTTP status 502");
    }

    #[test]
    fn invalid_and_truncated_json_are_unhealthy() {
        let p = plugin("{}");
        let r = reason(p.evaluate(&json_probe(r#"{"status": ok}"#)));
        assert!(r.starts_with("status page is not valid JSON"), "{r}");
        let r = reason(p.evaluate(&with_type(200, "application/json", "OK")));
        assert!(r.starts_with("status page is not valid JSON"), "{r}");
        let r = reason(p.evaluate(&json_probe(r#"{"status": "ok"} trailing"#)));
        assert!(r.starts_with("status page is not valid JSON"), "{r}");
        let r = reason(p.evaluate(&json_probe("")));
        assert!(r.starts_with("status page is empty"), "{r}");

        // What the probe keeps of a big page: the prefix ends in the middle of the JSON.
        let full = format!(
            r#"{{"status": "ok", "checks": {{{}}}}}"#,
            (0..400)
                .map(|i| format!(r#""check{i}": "ok""#))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let prefix = &full[..4096];
        let r = reason(p.evaluate(&json_probe(prefix)));
        assert!(r.contains("cut short after 4096 bytes"), "{r}");
        // Invalid UTF-8 is invalid JSON, not a panic.
        let bad = testing::probe(200, "", 1_500)
            .header("content-type", "application/json; charset=utf-8")
            .body(b"{\"status\": \"\xff\"}")
            .build();
        assert!(reason(p.evaluate(&bad)).starts_with("status page is not valid JSON"));
    }

    #[test]
    fn pages_that_are_not_json_pass() {
        let p = plugin(r#"{"required_checks": ["db"]}"#);
        assert_eq!(
            p.evaluate(&testing::probe(200, "OK\n", 10).build()),
            HealthVerdict::Pass
        );
        assert_eq!(
            p.evaluate(&with_type(
                200,
                "text/html",
                "<html><body>fine</body></html>"
            )),
            HealthVerdict::Pass
        );
        assert_eq!(
            p.evaluate(&with_type(302, "text/html", "")),
            HealthVerdict::Pass
        );
        assert_eq!(
            p.evaluate(&with_type(503, "text/plain", "Service Unavailable")),
            HealthVerdict::Pass
        );
        // A JSON body under a wrong content type is still read.
        assert_eq!(
            p.evaluate(&with_type(
                200,
                "text/plain",
                r#"{"status": "ok", "checks": {"db": "ok"}}"#
            )),
            HealthVerdict::Healthy
        );
        // A +json media type counts as JSON.
        let r = reason(p.evaluate(&with_type(200, "application/health+json", "[]")));
        assert!(r.contains("not a JSON object"), "{r}");
    }

    #[test]
    fn settings_are_validated() {
        let err = |json: &str| JsonHealth::new(&testing::settings(json)).expect_err(json);
        assert!(err(r#"{"status_field": "app..status"}"#).contains("not a field path"));
        assert!(err(r#"{"status_field": ""}"#).contains("not a field path"));
        assert!(err(r#"{"checks_field": ".checks"}"#).contains("settings.checks_field"));
        assert!(err(r#"{"healthy_values": []}"#).contains("at least one"));
        assert!(err(r#"{"healthy_values": [" "]}"#).contains("at least one"));
        assert!(err(r#"{"required_checks": ["db", "db"]}"#).contains("twice"));
        assert!(err(r#"{"required_checks": [""]}"#).contains("empty"));
        assert!(err(r#"{"required_checks": "db"}"#).contains("setting \"required_checks\""));
        assert!(err(r#"{"healthy_value": ["ok"]}"#).contains("unknown field"));
    }

    /// The example farmgate.toml: the plugin's settings from it, the farm names it defines, and
    /// the whole table.
    fn example_config() -> (Settings, Vec<String>, toml::Table) {
        let config: toml::Table =
            toml::from_str(include_str!("../farmgate.toml")).expect("farmgate.toml is TOML");
        let settings = &config["plugins"]["config"]["json_health"]["settings"];
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
        let p = JsonHealth::new(&settings).expect("the example settings are accepted");
        assert_eq!(p.required_checks, ["db"]);
        assert_eq!(
            bound(&config["farms"][0], "health_evaluation_plugins"),
            ["json_health"]
        );
        // The page the README serves for member api3.
        let page = include_str!("../status-page/status.htm");
        assert_eq!(p.evaluate(&json_probe(page)), HealthVerdict::Healthy);
    }
}
