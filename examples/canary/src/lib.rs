//! A canary release: a share of the clients goes to a farm running the new version while the
//! rest stay on the rule's farm.
//!
//! - A request carrying the control header (`x-canary` by default) with the value `always` goes to
//!   the canary farm, with `never` it does not: testers and monitors pin themselves either way.
//! - Otherwise a client is identified by a cookie (`session` by default). Its value is hashed with
//!   [`farmgate_sdk::hash::bucket`] into one of 10 000 buckets, and buckets below
//!   `percent * 100` go to the canary. The hash is the same in every farmgate instance and
//!   version, so a client stays on its side for as long as it keeps its cookie, and raising
//!   `percent` only adds clients to the canary: nobody already there is moved back.
//! - A request without the cookie (a first visit, a client without cookies) stays on the rule's
//!   farm: without an identity the choice could not be kept from one request to the next.
//!
//! Staying on the rule's farm is a `Pass`, so a later plugin in the chain may still route it.
//!
//! Settings (`[plugins.config.canary] settings = { ... }`):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `farm` | `"canary"` | the canary farm |
//! | `percent` | required | share of cookie-identified clients sent to the canary, `0` to `100`, fractions allowed (resolution 0.01) |
//! | `cookie` | `"session"` | the cookie that identifies a client |
//! | `header` | `"x-canary"` | the control header |
//! | `always` | `"always"` | control header value that forces the canary |
//! | `never` | `"never"` | control header value that avoids it |

use farmgate_sdk::hash::bucket;
use farmgate_sdk::{Plugin, Request, RouteDecision, Router, Settings, export_plugin};
use serde::Deserialize;

/// How many buckets clients are spread over: 1 bucket is 0.01 %.
const BUCKETS: u32 = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_farm")]
    farm: String,
    percent: f64,
    #[serde(default = "default_cookie")]
    cookie: String,
    #[serde(default = "default_header")]
    header: String,
    #[serde(default = "default_always")]
    always: String,
    #[serde(default = "default_never")]
    never: String,
}

fn default_farm() -> String {
    "canary".into()
}
fn default_cookie() -> String {
    "session".into()
}
fn default_header() -> String {
    "x-canary".into()
}
fn default_always() -> String {
    "always".into()
}
fn default_never() -> String {
    "never".into()
}

#[derive(Debug)]
pub struct Canary {
    farm: String,
    /// Buckets `0..threshold` go to the canary (`0..=BUCKETS`).
    threshold: u32,
    cookie: String,
    header: String,
    always: String,
    never: String,
}

/// Which side a request is on, and why (what the tests and the log talk about).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Forced by the control header.
    ForcedCanary,
    ForcedStable,
    /// By the client's cookie bucket.
    Canary,
    Stable,
    /// No cookie: stays on the rule's farm.
    Anonymous,
}

impl Plugin for Canary {
    fn new(settings: &Settings) -> Result<Self, String> {
        let c: Config = settings
            .deserialize()
            .map_err(|e| name_the_key(settings, e))?;
        if !c.percent.is_finite() || !(0.0..=100.0).contains(&c.percent) {
            return Err(format!(
                "settings.percent = {} is outside 0..=100",
                c.percent
            ));
        }
        if c.farm.is_empty()
            || !c
                .farm
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(format!(
                "settings.farm = \"{}\" is not a farm name (letters, digits, '-', '_' and '.')",
                c.farm
            ));
        }
        if !is_token(&c.cookie) {
            return Err(format!(
                "settings.cookie = \"{}\" is not a cookie name",
                c.cookie
            ));
        }
        if !is_token(&c.header) {
            return Err(format!(
                "settings.header = \"{}\" is not a header name",
                c.header
            ));
        }
        let always = c.always.trim();
        let never = c.never.trim();
        if always.is_empty() || never.is_empty() || always.eq_ignore_ascii_case(never) {
            return Err(format!(
                "settings.always (\"{always}\") and settings.never (\"{never}\") must be two \
                 different, non-empty values"
            ));
        }
        // 12.345 % -> 1235 buckets: the share is kept to 0.01 %.
        let threshold = (c.percent * f64::from(BUCKETS / 100)).round() as u32;
        Ok(Canary {
            farm: c.farm,
            threshold: threshold.min(BUCKETS),
            cookie: c.cookie,
            header: c.header,
            always: always.to_string(),
            never: never.to_string(),
        })
    }
}

/// serde's message names an unknown or missing key but not the key whose value has the wrong
/// type; reading each key on its own finds it (`Settings::get` names the key).
fn name_the_key(settings: &Settings, error: String) -> String {
    [
        settings.get::<f64>("percent").err(),
        settings.get::<String>("farm").err(),
        settings.get::<String>("cookie").err(),
        settings.get::<String>("header").err(),
        settings.get::<String>("always").err(),
        settings.get::<String>("never").err(),
    ]
    .into_iter()
    .flatten()
    .next()
    .unwrap_or(error)
}

/// An HTTP token (RFC 9110): what header and cookie names are made of.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Canary {
    /// Which side `req` is on.
    pub fn side(&self, req: &Request) -> Side {
        match req.header(&self.header) {
            Some(v) if v.eq_ignore_ascii_case(&self.always) => return Side::ForcedCanary,
            Some(v) if v.eq_ignore_ascii_case(&self.never) => return Side::ForcedStable,
            _ => {}
        }
        match req.cookie(&self.cookie).map(str::trim) {
            Some(id) if !id.is_empty() => {
                if bucket(id.as_bytes(), BUCKETS) < self.threshold {
                    Side::Canary
                } else {
                    Side::Stable
                }
            }
            _ => Side::Anonymous,
        }
    }
}

impl Router for Canary {
    fn route(&self, req: &Request) -> RouteDecision {
        match self.side(req) {
            Side::ForcedCanary | Side::Canary => RouteDecision::to_farm(&self.farm),
            Side::ForcedStable | Side::Stable | Side::Anonymous => RouteDecision::Pass,
        }
    }
}

export_plugin!(Canary);

#[cfg(test)]
mod tests {
    use super::*;
    use farmgate_sdk::testing;

    fn plugin(json: &str) -> Canary {
        Canary::new(&testing::settings(json)).expect("valid settings")
    }

    fn with_session(id: &str) -> Request<'static> {
        testing::request("GET", "/")
            .header("cookie", &format!("theme=dark; session={id}"))
            .build()
    }

    /// The share of 20 000 distinct clients that lands on the canary, in percent.
    fn canary_share(p: &Canary) -> f64 {
        const CLIENTS: u32 = 20_000;
        let hits = (0..CLIENTS)
            .filter(|i| p.side(&with_session(&format!("sess-{i:08x}"))) == Side::Canary)
            .count();
        hits as f64 * 100.0 / f64::from(CLIENTS)
    }

    #[test]
    fn the_share_over_many_clients_is_close_to_percent() {
        // Binomial spread for 20 000 clients at 10 %: sd = 0.21 points; allow 0.75 (3.5 sd).
        for (percent, tolerance) in [(10.0, 0.75), (50.0, 1.25), (2.5, 0.4), (0.5, 0.2)] {
            let p = plugin(&format!(r#"{{"percent": {percent}}}"#));
            let share = canary_share(&p);
            assert!(
                (share - percent).abs() <= tolerance,
                "percent {percent}: {share:.2} % of clients went to the canary (tolerance {tolerance})"
            );
        }
        assert_eq!(canary_share(&plugin(r#"{"percent": 0}"#)), 0.0);
        assert_eq!(canary_share(&plugin(r#"{"percent": 100}"#)), 100.0);
    }

    #[test]
    fn one_client_stays_on_its_side() {
        let p = plugin(r#"{"percent": 50}"#);
        for i in 0..200 {
            let id = format!("client-{i}");
            let first = p.route(&with_session(&id));
            for _ in 0..5 {
                assert_eq!(p.route(&with_session(&id)), first, "{id}");
            }
            // Another instance with the same settings (another thread, another farmgate) agrees.
            assert_eq!(
                plugin(r#"{"percent": 50}"#).route(&with_session(&id)),
                first
            );
        }
    }

    #[test]
    fn the_readme_example_holds() {
        let p = plugin(r#"{"percent": 10}"#);
        assert_eq!(p.side(&with_session("user31")), Side::Canary);
        let on_canary = (1..=200)
            .filter(|i| p.side(&with_session(&format!("user{i}"))) == Side::Canary)
            .count();
        assert_eq!(on_canary, 18);
    }

    #[test]
    fn raising_the_share_moves_nobody_back() {
        let at5 = plugin(r#"{"percent": 5}"#);
        let at20 = plugin(r#"{"percent": 20}"#);
        for i in 0..5_000 {
            let req = with_session(&format!("u{i}"));
            if at5.side(&req) == Side::Canary {
                assert_eq!(at20.side(&req), Side::Canary);
            }
        }
    }

    #[test]
    fn the_control_header_forces_either_side() {
        let p = plugin(r#"{"farm": "beta", "percent": 0}"#);
        let forced = testing::request("GET", "/")
            .header("X-Canary", "Always")
            .build();
        assert_eq!(p.route(&forced), RouteDecision::to_farm("beta"));

        let all = plugin(r#"{"farm": "beta", "percent": 100}"#);
        let avoid = testing::request("GET", "/")
            .header("x-canary", "never")
            .header("cookie", "session=abc")
            .build();
        assert_eq!(all.side(&avoid), Side::ForcedStable);
        assert_eq!(all.route(&avoid), RouteDecision::Pass);
        // An unrecognised value falls back to the cookie.
        let other = testing::request("GET", "/")
            .header("x-canary", "maybe")
            .header("cookie", "session=abc")
            .build();
        assert_eq!(all.route(&other), RouteDecision::to_farm("beta"));
    }

    #[test]
    fn names_and_values_are_configurable() {
        let p = plugin(
            r#"{"farm": "next", "percent": 0, "header": "x-ring", "always": "insider", "never": "stable", "cookie": "uid"}"#,
        );
        let req = testing::request("GET", "/")
            .header("x-ring", "insider")
            .build();
        assert_eq!(p.route(&req), RouteDecision::to_farm("next"));
        let all = plugin(r#"{"farm": "next", "percent": 100, "cookie": "uid"}"#);
        assert_eq!(
            all.route(
                &testing::request("GET", "/")
                    .header("cookie", "uid=42")
                    .build()
            ),
            RouteDecision::to_farm("next")
        );
        // The default cookie name means nothing now.
        assert_eq!(all.side(&with_session("42")), Side::Anonymous);
    }

    #[test]
    fn clients_without_the_cookie_stay() {
        let p = plugin(r#"{"percent": 100}"#);
        assert_eq!(
            p.side(&testing::request("GET", "/").build()),
            Side::Anonymous
        );
        assert_eq!(p.side(&with_session("")), Side::Anonymous);
        assert_eq!(
            p.route(
                &testing::request("GET", "/")
                    .header("cookie", "sessionx=1")
                    .build()
            ),
            RouteDecision::Pass
        );
    }

    #[test]
    fn settings_are_validated() {
        let err = |json: &str| Canary::new(&testing::settings(json)).expect_err(json);
        assert!(err(r#"{}"#).contains("percent"));
        assert!(err(r#"{"percent": 101}"#).contains("outside 0..=100"));
        assert!(err(r#"{"percent": -0.5}"#).contains("outside 0..=100"));
        assert!(err(r#"{"percent": "10"}"#).contains("setting \"percent\""));
        assert!(err(r#"{"percent": 10, "share": 5}"#).contains("unknown field"));
        assert!(err(r#"{"percent": 10, "farm": ""}"#).contains("not a farm name"));
        assert!(err(r#"{"percent": 10, "cookie": "a b"}"#).contains("not a cookie name"));
        assert!(err(r#"{"percent": 10, "header": "x:y"}"#).contains("not a header name"));
        assert!(err(r#"{"percent": 10, "always": "on", "never": "ON"}"#).contains("different"));
        assert_eq!(plugin(r#"{"percent": 12.345}"#).threshold, 1235);
        assert_eq!(plugin(r#"{"percent": 100}"#).threshold, BUCKETS);
    }

    /// The example farmgate.toml: the plugin's settings from it, the farm names it defines, and
    /// the whole table.
    fn example_config() -> (Settings, Vec<String>, toml::Table) {
        let config: toml::Table =
            toml::from_str(include_str!("../farmgate.toml")).expect("farmgate.toml is TOML");
        let settings = &config["plugins"]["config"]["canary"]["settings"];
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
        let (settings, farms, config) = example_config();
        let p = Canary::new(&settings).expect("the example settings are accepted");
        let forced = testing::request("GET", "/")
            .header("x-canary", "always")
            .build();
        let RouteDecision::Forward(f) = p.route(&forced) else {
            panic!("expected a forward");
        };
        assert!(farms.contains(&f.farm.expect("a farm")));
        assert_eq!(p.threshold, 1000);
        assert_eq!(bound(&config["rules"][0], "router_plugins"), ["canary"]);
    }
}
