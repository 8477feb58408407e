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
//! always kept (`Request::replace_first_segment` keeps it). Any other path passes, so the rule's own
//! farm (or the next plugin) decides. farmgate checks the farm names: a forward to a farm the
//! config does not have is a counted failure, and the rule's own farm serves the request.
//! Without stripping, the version segment reaches the members spelled as in `versions`.
//!
//! Settings (`[plugins.config.versioned_api] settings = { ... }`):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `versions` | required | version segment -> farm name, e.g. `{ v1 = "api-v1", v2 = "api-v2" }` |
//! | `current` | none | the version `/current/...` goes to; one of the keys of `versions` as written; without it `/current` passes |
//! | `strip_prefix` | `true` | remove the version segment from the path sent to the member |

use std::collections::BTreeMap;

use farmgate_sdk::{Plugin, Request, RouteDecision, Router, Settings, export_plugin};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct VersionedApi {
    versions: BTreeMap<String, String>,
    current: Option<String>,
    strip_prefix: Option<bool>,
}

impl Plugin for VersionedApi {
    fn new(s: &Settings) -> Result<Self, String> {
        let api: VersionedApi = s.deserialize()?;
        s.check_one_of("current", api.versions.keys())?;
        Ok(api)
    }
}

impl Router for VersionedApi {
    fn route(&self, req: &Request) -> RouteDecision {
        let segment = req.first_segment().unwrap_or_default();
        let wanted = match segment.eq_ignore_ascii_case("current") {
            true => self.current.as_deref().unwrap_or_default(),
            false => segment,
        };
        let found = (self.versions.iter()).find(|(v, _)| v.eq_ignore_ascii_case(wanted));
        let Some((version, farm)) = found else {
            return RouteDecision::Pass;
        };
        // A member serves its own version's URLs: unless stripped, the segment names the version.
        let keep = self.strip_prefix == Some(false);
        let path = req.replace_first_segment(if keep { version.as_str() } else { "" });
        RouteDecision::to_farm(farm).with_path(path)
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
        assert_eq!(forward(&p, "/v1/orders"), fwd("api-v1", Some("/v1/orders")));
        assert_eq!(forward(&p, "/V1/orders"), fwd("api-v1", Some("/v1/orders")));
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
        for path in ["/v10/orders", "/v1x", "/", "/orders/v1", "/v3/orders", ""] {
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
        assert_eq!(
            error(r#"{"versions": {"v1": "a", "v2": "b"}, "current": "v3"}"#),
            r#"setting "current": "v3" is not one of v1, v2"#
        );
        assert!(error(r#"{}"#).contains("missing field `versions`"));
        assert!(error(r#"{"versions": {"v1": 1}}"#).contains("setting \"versions\""));
        assert!(
            error(r#"{"versions": {"v1": "a"}, "strip_prefix": "yes"}"#)
                .contains("setting \"strip_prefix\"")
        );
        assert!(
            error(r#"{"versions": {"v1": "a"}, "current": 2}"#).contains("setting \"current\"")
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
