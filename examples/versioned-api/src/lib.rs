//! API versioning in front of two farms, the scenario IIS Application Request Routing documents
//! with URL Rewrite rules: `/v1/...` goes to the farm that runs version 1 of an API, `/v2/...` to
//! the farm that runs version 2, and `/current/...` to whichever version the `current` setting
//! names, so clients that do not care about versions follow the switch without a new URL.
//!
//! The version segment is matched case-insensitively (farmgate's rule paths are), it must be a
//! whole segment (`/v10` is not `/v1`), and with `strip_prefix = true` it is removed from the path
//! the members get: `/v2/orders?id=7` reaches an `api-v2` member as `/orders?id=7`. Without
//! stripping, `/current/...` is still rewritten to the concrete version (`/v2/...`), because a
//! member serves its own version's URLs and knows nothing of the alias. The query string is
//! always kept. Any other path passes, so the rule's own farm (or the next plugin) decides.
//!
//! Settings (`[plugins.config.versioned_api] settings = { ... }`):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `versions` | required | version segment -> farm name, e.g. `{ v1 = "api-v1", v2 = "api-v2" }` |
//! | `current` | none | the version `/current/...` goes to; must be one of `versions`; without it `/current` is not special |
//! | `strip_prefix` | `true` | remove the version segment from the path sent to the member |

use std::collections::BTreeMap;

use farmgate_sdk::{ForwardTo, Plugin, Request, RouteDecision, Router, Settings, export_plugin};
use serde::Deserialize;

/// The path segment that names the current version.
const CURRENT: &str = "current";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    versions: BTreeMap<String, String>,
    #[serde(default)]
    current: Option<String>,
    #[serde(default = "yes")]
    strip_prefix: bool,
}

fn yes() -> bool {
    true
}

/// One version as it is matched and forwarded.
#[derive(Debug, Clone, PartialEq)]
struct Version {
    /// The segment as configured (what `/current` is rewritten to when not stripping).
    segment: String,
    farm: String,
}

#[derive(Debug)]
pub struct VersionedApi {
    versions: Vec<Version>,
    /// Index into `versions` of the version `/current` means.
    current: Option<usize>,
    strip_prefix: bool,
}

impl Plugin for VersionedApi {
    fn new(settings: &Settings) -> Result<Self, String> {
        let config: Config = settings
            .deserialize()
            .map_err(|e| name_the_key(settings, e))?;
        if config.versions.is_empty() {
            return Err(
                "settings.versions is empty: map each version segment to its farm, e.g. \
                 versions = { v1 = \"api-v1\", v2 = \"api-v2\" }"
                    .into(),
            );
        }
        let mut versions: Vec<Version> = Vec::with_capacity(config.versions.len());
        for (segment, farm) in config.versions {
            check_segment(&segment)?;
            if segment.eq_ignore_ascii_case(CURRENT) {
                return Err(format!(
                    "settings.versions: \"{segment}\" is reserved for the alias of the current \
                     version; set `current` instead"
                ));
            }
            if let Some(other) = versions
                .iter()
                .find(|v| v.segment.eq_ignore_ascii_case(&segment))
            {
                return Err(format!(
                    "settings.versions: \"{}\" and \"{segment}\" are the same path segment \
                     (paths compare case-insensitively)",
                    other.segment
                ));
            }
            check_farm_name(&farm).map_err(|e| format!("settings.versions.{segment}: {e}"))?;
            versions.push(Version { segment, farm });
        }
        let current = match config.current {
            None => None,
            Some(name) => Some(
                versions
                    .iter()
                    .position(|v| v.segment.eq_ignore_ascii_case(&name))
                    .ok_or_else(|| {
                        let known: Vec<&str> =
                            versions.iter().map(|v| v.segment.as_str()).collect();
                        format!(
                            "settings.current = \"{name}\" is not one of the versions ({})",
                            known.join(", ")
                        )
                    })?,
            ),
        };
        Ok(VersionedApi {
            versions,
            current,
            strip_prefix: config.strip_prefix,
        })
    }
}

/// serde's message names an unknown or missing key but not the key whose value has the wrong
/// type; reading each key on its own finds it (`Settings::get` names the key).
fn name_the_key(settings: &Settings, error: String) -> String {
    [
        settings.get::<BTreeMap<String, String>>("versions").err(),
        settings.get::<String>("current").err(),
        settings.get::<bool>("strip_prefix").err(),
    ]
    .into_iter()
    .flatten()
    .next()
    .unwrap_or(error)
}

/// A version must be one plain path segment so that it can be matched and stripped.
fn check_segment(segment: &str) -> Result<(), String> {
    let plain = !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if plain {
        Ok(())
    } else {
        Err(format!(
            "settings.versions: \"{segment}\" is not a single path segment (use letters, digits, \
             '-', '.', '_' or '~', e.g. \"v1\")"
        ))
    }
}

/// Farm names as farmgate's config accepts them; anything else could never match a farm.
fn check_farm_name(farm: &str) -> Result<(), String> {
    if !farm.is_empty()
        && farm
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        Ok(())
    } else {
        Err(format!(
            "\"{farm}\" is not a farm name (letters, digits, '-', '_' and '.')"
        ))
    }
}

impl VersionedApi {
    fn find(&self, segment: &str) -> Option<(&Version, bool)> {
        if segment.eq_ignore_ascii_case(CURRENT) {
            return self
                .current
                .and_then(|i| self.versions.get(i))
                .map(|v| (v, true));
        }
        self.versions
            .iter()
            .find(|v| v.segment.eq_ignore_ascii_case(segment))
            .map(|v| (v, false))
    }
}

impl Router for VersionedApi {
    fn route(&self, req: &Request) -> RouteDecision {
        let Some(rest) = req.path().strip_prefix('/') else {
            return RouteDecision::Pass;
        };
        // `rest` is "v2/orders", "v2/" or "v2"; `tail` keeps its leading slash.
        let (segment, tail) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let Some((version, via_alias)) = self.find(segment) else {
            return RouteDecision::Pass;
        };
        let path = if self.strip_prefix {
            Some(if tail.is_empty() { "/" } else { tail }.to_string())
        } else if via_alias {
            Some(format!("/{}{tail}", version.segment))
        } else {
            None
        };
        // A rewritten path replaces path and query together, so the query goes along.
        let path = path.map(|mut p| {
            if let Some(q) = req.query() {
                p.push('?');
                p.push_str(q);
            }
            p
        });
        RouteDecision::Forward(ForwardTo {
            farm: Some(version.farm.clone()),
            path,
            ..ForwardTo::unchanged()
        })
    }
}

export_plugin!(VersionedApi);

#[cfg(test)]
mod tests {
    use super::*;
    use farmgate_sdk::testing;

    const SETTINGS: &str = r#"{
        "versions": {"v1": "api-v1", "v2": "api-v2"},
        "current": "v2",
        "strip_prefix": true
    }"#;

    fn plugin(json: &str) -> VersionedApi {
        VersionedApi::new(&testing::settings(json)).expect("valid settings")
    }

    fn error(json: &str) -> String {
        VersionedApi::new(&testing::settings(json)).expect_err("settings are refused")
    }

    /// The farm and path of a forward; panics on any other decision.
    fn forward(p: &VersionedApi, path_and_query: &str) -> (String, Option<String>) {
        match p.route(&testing::request("GET", path_and_query).build()) {
            RouteDecision::Forward(f) => (f.farm.expect("a farm"), f.path),
            other => panic!("{path_and_query}: expected a forward, got {other:?}"),
        }
    }

    fn fwd(farm: &str, path: Option<&str>) -> (String, Option<String>) {
        (farm.to_string(), path.map(str::to_string))
    }

    #[test]
    fn each_version_goes_to_its_farm_with_the_prefix_stripped() {
        let p = plugin(SETTINGS);
        assert_eq!(forward(&p, "/v1/orders"), fwd("api-v1", Some("/orders")));
        assert_eq!(
            forward(&p, "/v2/orders/7"),
            fwd("api-v2", Some("/orders/7"))
        );
        assert_eq!(forward(&p, "/v1"), fwd("api-v1", Some("/")));
        assert_eq!(forward(&p, "/v1/"), fwd("api-v1", Some("/")));
    }

    #[test]
    fn the_query_string_is_kept() {
        let p = plugin(SETTINGS);
        assert_eq!(
            forward(&p, "/v1/orders?id=7&sort=asc"),
            fwd("api-v1", Some("/orders?id=7&sort=asc"))
        );
        assert_eq!(forward(&p, "/v2?x"), fwd("api-v2", Some("/?x")));
        let unstripped =
            plugin(r#"{"versions": {"v1": "a"}, "current": "v1", "strip_prefix": false}"#);
        assert_eq!(
            forward(&unstripped, "/current/orders?id=7"),
            fwd("a", Some("/v1/orders?id=7"))
        );
    }

    #[test]
    fn current_follows_the_setting() {
        let p = plugin(SETTINGS);
        assert_eq!(
            forward(&p, "/current/orders?id=1"),
            fwd("api-v2", Some("/orders?id=1"))
        );
        let back = plugin(r#"{"versions": {"v1": "api-v1", "v2": "api-v2"}, "current": "v1"}"#);
        assert_eq!(
            forward(&back, "/current/orders"),
            fwd("api-v1", Some("/orders"))
        );
    }

    #[test]
    fn without_stripping_versions_keep_their_path_and_current_names_the_version() {
        let p = plugin(
            r#"{"versions": {"v1": "api-v1", "v2": "api-v2"}, "current": "v2", "strip_prefix": false}"#,
        );
        assert_eq!(forward(&p, "/v1/orders"), fwd("api-v1", None));
        assert_eq!(
            forward(&p, "/current/orders"),
            fwd("api-v2", Some("/v2/orders"))
        );
        assert_eq!(forward(&p, "/current"), fwd("api-v2", Some("/v2")));
    }

    #[test]
    fn segments_match_whole_and_case_insensitively() {
        let p = plugin(SETTINGS);
        assert_eq!(forward(&p, "/V1/Orders"), fwd("api-v1", Some("/Orders")));
        assert_eq!(forward(&p, "/CURRENT/x"), fwd("api-v2", Some("/x")));
        for path in [
            "/v10/orders",
            "/v1x",
            "/",
            "/orders/v1",
            "/v3/orders",
            "",
            "v1/orders",
        ] {
            assert_eq!(
                p.route(&testing::request("GET", path).build()),
                RouteDecision::Pass,
                "{path}"
            );
        }
    }

    #[test]
    fn without_current_the_alias_passes() {
        let p = plugin(r#"{"versions": {"v1": "api-v1"}}"#);
        assert_eq!(
            p.route(&testing::request("GET", "/current/x").build()),
            RouteDecision::Pass
        );
        assert_eq!(forward(&p, "/v1/x"), fwd("api-v1", Some("/x")));
    }

    #[test]
    fn settings_are_validated() {
        assert!(
            error(r#"{"versions": {"v1": "a"}, "current": "v3"}"#)
                .contains("not one of the versions (v1)")
        );
        assert!(error(r#"{"versions": {}}"#).contains("empty"));
        assert!(error(r#"{}"#).contains("versions"));
        assert!(error(r#"{"versions": {"v1": "a"}, "strip": true}"#).contains("unknown field"));
        assert!(error(r#"{"versions": {"v/1": "a"}}"#).contains("single path segment"));
        assert!(error(r#"{"versions": {"..": "a"}}"#).contains("single path segment"));
        assert!(error(r#"{"versions": {"Current": "a"}}"#).contains("reserved"));
        assert!(error(r#"{"versions": {"v1": "a", "V1": "b"}}"#).contains("same path segment"));
        assert!(error(r#"{"versions": {"v1": "api v1"}}"#).contains("not a farm name"));
        assert!(error(r#"{"versions": {"v1": 1}}"#).contains("setting \"versions\""));
        assert!(
            error(r#"{"versions": {"v1": "a"}, "strip_prefix": "yes"}"#)
                .contains("setting \"strip_prefix\"")
        );
        // `current` names a version case-insensitively, as paths do.
        assert!(
            VersionedApi::new(&testing::settings(
                r#"{"versions": {"v1": "a"}, "current": "V1"}"#
            ))
            .is_ok()
        );
    }

    /// The example farmgate.toml: the plugin's settings from it, the farm names it defines, and
    /// the whole table.
    fn example_config() -> (Settings, Vec<String>, toml::Table) {
        let config: toml::Table =
            toml::from_str(include_str!("../farmgate.toml")).expect("farmgate.toml is TOML");
        let settings = &config["plugins"]["config"]["versioned_api"]["settings"];
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
        let p = VersionedApi::new(&settings).expect("the example settings are accepted");
        for path in ["/v1/orders", "/v2/orders", "/current/orders"] {
            let (farm, _) = forward(&p, path);
            assert!(
                farms.contains(&farm),
                "{path} -> {farm}, not a farm of the example"
            );
        }
        assert_eq!(
            bound(&config["rules"][0], "router_plugins"),
            ["versioned_api"]
        );
    }
}
