//! Multi-tenant routing: one public site, one farm per tenant. The tenant is named by a request
//! header (`x-tenant` by default), set by the client application or by a gateway in front of
//! farmgate, and the `tenants` table maps it to the tenant's farm. Tenant names compare
//! case-insensitively: `Contoso`, `contoso` and `CONTOSO` are one tenant.
//!
//! - A known tenant goes to its farm. With `farm_header` set, the member is also told which farm
//!   that was (`x-tenant-farm: farm-contoso`), replacing any such header the client sent.
//! - An unknown tenant is, with `unknown = "reject"` (the default), answered by farmgate with
//!   `404 Not Found` and a short text body; with `unknown = "pass"` the rule's farm (or the next
//!   plugin) takes it. Rejecting is the default because the rule's farm belongs to nobody in
//!   particular: sending a request meant for a tenant that does not exist there could show it
//!   another tenant's data. The status is 404 rather than 400 because the request is well formed
//!   and only names something the site does not have, like an unknown host name would; a 400
//!   tells the client to fix its request, which it cannot. The body does not repeat the tenant
//!   name, so no client text is reflected, and the answer says `cache-control: no-store`, since a
//!   cache keyed by URL alone must not serve it to the next (known) tenant.
//! - A request without the header (or with an empty one) passes.
//!
//! Settings (`[plugins.config.tenant] settings = { ... }`):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `tenants` | required | tenant name -> farm, e.g. `{ contoso = "farm-contoso", fabrikam = "farm-fabrikam" }` |
//! | `header` | `"x-tenant"` | the request header naming the tenant |
//! | `unknown` | `"reject"` | `"reject"` (404) or `"pass"` for tenants not in `tenants` |
//! | `farm_header` | none | a header telling the member the chosen farm, e.g. `"x-tenant-farm"` |

use std::collections::{BTreeMap, HashMap};

use farmgate_sdk::{ForwardTo, Plugin, Request, RouteDecision, Router, Settings, export_plugin};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    tenants: BTreeMap<String, String>,
    #[serde(default = "default_header")]
    header: String,
    #[serde(default)]
    unknown: Unknown,
    #[serde(default)]
    farm_header: Option<String>,
}

fn default_header() -> String {
    "x-tenant".into()
}

/// What happens to a tenant the table does not list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unknown {
    /// Answer 404.
    #[default]
    Reject,
    /// Leave it to the rule's farm or the next plugin.
    Pass,
}

#[derive(Debug)]
pub struct Tenant {
    /// Lower-cased tenant name -> farm.
    farms: HashMap<String, String>,
    header: String,
    unknown: Unknown,
    farm_header: Option<String>,
}

/// The body of the answer to an unknown tenant.
const UNKNOWN_BODY: &str = "This tenant is not known here.\n";

impl Plugin for Tenant {
    fn new(settings: &Settings) -> Result<Self, String> {
        let c: Config = settings
            .deserialize()
            .map_err(|e| name_the_key(settings, e))?;
        if c.tenants.is_empty() {
            return Err(
                "settings.tenants is empty: map each tenant to its farm, e.g. \
                 tenants = { contoso = \"farm-contoso\" }"
                    .into(),
            );
        }
        if !is_token(&c.header) {
            return Err(format!(
                "settings.header = \"{}\" is not a header name",
                c.header
            ));
        }
        if let Some(h) = &c.farm_header
            && !is_token(h)
        {
            return Err(format!(
                "settings.farm_header = \"{h}\" is not a header name"
            ));
        }
        let mut farms = HashMap::with_capacity(c.tenants.len());
        let mut spelled: HashMap<String, String> = HashMap::new();
        for (name, farm) in c.tenants {
            let key = name.trim().to_lowercase();
            if key.is_empty() {
                return Err("settings.tenants: a tenant name is empty".into());
            }
            if !is_farm_name(&farm) {
                return Err(format!(
                    "settings.tenants.{name}: \"{farm}\" is not a farm name (letters, digits, \
                     '-', '_' and '.')"
                ));
            }
            if let Some(other) = spelled.insert(key.clone(), name.clone()) {
                return Err(format!(
                    "settings.tenants: \"{other}\" and \"{name}\" are the same tenant (names \
                     compare case-insensitively)"
                ));
            }
            farms.insert(key, farm);
        }
        Ok(Tenant {
            farms,
            header: c.header.to_ascii_lowercase(),
            unknown: c.unknown,
            farm_header: c.farm_header.map(|h| h.to_ascii_lowercase()),
        })
    }
}

/// serde's message names an unknown or missing key but not the key whose value has the wrong
/// type; reading each key on its own finds it (`Settings::get` names the key).
fn name_the_key(settings: &Settings, error: String) -> String {
    [
        settings.get::<BTreeMap<String, String>>("tenants").err(),
        settings.get::<String>("header").err(),
        settings.get::<Unknown>("unknown").err(),
        settings.get::<String>("farm_header").err(),
    ]
    .into_iter()
    .flatten()
    .next()
    .unwrap_or(error)
}

/// An HTTP token (RFC 9110): what header names are made of.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Farm names as farmgate's config accepts them.
fn is_farm_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl Tenant {
    /// The farm of a tenant name as a client sent it.
    pub fn farm_of(&self, tenant: &str) -> Option<&str> {
        let tenant = tenant.trim();
        // Most clients send the name as configured: look it up without allocating first.
        self.farms
            .get(tenant)
            .or_else(|| self.farms.get(&tenant.to_lowercase()))
            .map(String::as_str)
    }
}

impl Router for Tenant {
    fn route(&self, req: &Request) -> RouteDecision {
        let Some(tenant) = req.header(&self.header).filter(|t| !t.is_empty()) else {
            return RouteDecision::Pass;
        };
        match self.farm_of(tenant) {
            Some(farm) => RouteDecision::Forward(ForwardTo {
                farm: Some(farm.to_string()),
                set_headers: match &self.farm_header {
                    Some(h) => vec![(h.clone(), farm.to_string())],
                    None => Vec::new(),
                },
                ..ForwardTo::unchanged()
            }),
            None => match self.unknown {
                Unknown::Pass => RouteDecision::Pass,
                Unknown::Reject => RouteDecision::Respond(farmgate_sdk::DirectResponse {
                    status: 404,
                    headers: vec![
                        (
                            "content-type".to_string(),
                            "text/plain; charset=utf-8".to_string(),
                        ),
                        ("cache-control".to_string(), "no-store".to_string()),
                    ],
                    body: UNKNOWN_BODY.as_bytes().to_vec(),
                }),
            },
        }
    }
}

export_plugin!(Tenant);

#[cfg(test)]
mod tests {
    use super::*;
    use farmgate_sdk::testing;

    const SETTINGS: &str = r#"{
        "tenants": {"contoso": "farm-contoso", "Fabrikam": "farm-fabrikam"},
        "farm_header": "X-Tenant-Farm"
    }"#;

    fn plugin(json: &str) -> Tenant {
        Tenant::new(&testing::settings(json)).expect("valid settings")
    }

    fn for_tenant(p: &Tenant, tenant: &str) -> RouteDecision {
        p.route(
            &testing::request("GET", "/orders")
                .header("x-tenant", tenant)
                .build(),
        )
    }

    fn forward(farm: &str, farm_header: Option<&str>) -> RouteDecision {
        RouteDecision::Forward(ForwardTo {
            farm: Some(farm.to_string()),
            set_headers: farm_header
                .map(|h| vec![(h.to_string(), farm.to_string())])
                .unwrap_or_default(),
            ..ForwardTo::unchanged()
        })
    }

    #[test]
    fn known_tenants_go_to_their_farm_case_insensitively() {
        let p = plugin(SETTINGS);
        for name in ["contoso", "Contoso", "CONTOSO", " contoso "] {
            assert_eq!(
                for_tenant(&p, name),
                forward("farm-contoso", Some("x-tenant-farm")),
                "{name}"
            );
        }
        assert_eq!(
            for_tenant(&p, "fabrikam"),
            forward("farm-fabrikam", Some("x-tenant-farm"))
        );
        // Non-ASCII names fold too.
        let p = plugin(r#"{"tenants": {"Ärzte": "farm-a"}}"#);
        assert_eq!(for_tenant(&p, "ÄRZTE"), forward("farm-a", None));
    }

    #[test]
    fn unknown_tenants_are_rejected_with_404_by_default() {
        let p = plugin(SETTINGS);
        let RouteDecision::Respond(r) = for_tenant(&p, "<script>northwind") else {
            panic!("expected a direct answer");
        };
        assert_eq!(r.status, 404);
        assert_eq!(r.body, UNKNOWN_BODY.as_bytes());
        assert!(
            r.headers
                .contains(&("cache-control".into(), "no-store".into()))
        );
        assert!(
            r.headers
                .contains(&("content-type".into(), "text/plain; charset=utf-8".into()))
        );
    }

    #[test]
    fn unknown_tenants_can_pass() {
        let p = plugin(r#"{"tenants": {"contoso": "farm-contoso"}, "unknown": "pass"}"#);
        assert_eq!(for_tenant(&p, "northwind"), RouteDecision::Pass);
        assert_eq!(for_tenant(&p, "contoso"), forward("farm-contoso", None));
    }

    #[test]
    fn requests_without_the_header_pass() {
        let p = plugin(SETTINGS);
        assert_eq!(
            p.route(&testing::request("GET", "/").build()),
            RouteDecision::Pass
        );
        assert_eq!(for_tenant(&p, ""), RouteDecision::Pass);
    }

    #[test]
    fn the_header_name_is_configurable() {
        let p = plugin(r#"{"tenants": {"contoso": "farm-contoso"}, "header": "X-Org"}"#);
        let req = testing::request("GET", "/")
            .header("x-org", "Contoso")
            .build();
        assert_eq!(p.route(&req), forward("farm-contoso", None));
        // The default header means nothing now.
        assert_eq!(for_tenant(&p, "contoso"), RouteDecision::Pass);
    }

    #[test]
    fn settings_are_validated() {
        let err = |json: &str| Tenant::new(&testing::settings(json)).expect_err(json);
        assert!(err(r#"{}"#).contains("tenants"));
        assert!(err(r#"{"tenants": {}}"#).contains("empty"));
        assert!(err(r#"{"tenants": {"a": "f", "A": "g"}}"#).contains("same tenant"));
        assert!(err(r#"{"tenants": {" ": "f"}}"#).contains("name is empty"));
        assert!(err(r#"{"tenants": {"a": "my farm"}}"#).contains("not a farm name"));
        assert!(
            err(r#"{"tenants": {"a": "f"}, "unknown": "drop"}"#).contains("setting \"unknown\"")
        );
        assert!(
            err(r#"{"tenants": {"a": "f"}, "header": "x tenant"}"#).contains("not a header name")
        );
        assert!(err(r#"{"tenants": {"a": "f"}, "farm_header": ""}"#).contains("not a header name"));
        assert!(err(r#"{"tenants": {"a": "f"}, "tenant_header": "x"}"#).contains("unknown field"));
        assert!(err(r#"{"tenants": ["a"]}"#).contains("setting \"tenants\""));
    }

    /// The example farmgate.toml: the plugin's settings from it, the farm names it defines, and
    /// the whole table.
    fn example_config() -> (Settings, Vec<String>, toml::Table) {
        let config: toml::Table =
            toml::from_str(include_str!("../farmgate.toml")).expect("farmgate.toml is TOML");
        let settings = &config["plugins"]["config"]["tenant"]["settings"];
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
        let p = Tenant::new(&settings).expect("the example settings are accepted");
        for name in ["contoso", "Fabrikam"] {
            let RouteDecision::Forward(f) = for_tenant(&p, name) else {
                panic!("{name}: expected a forward");
            };
            let farm = f.farm.expect("a farm");
            assert!(
                farms.contains(&farm),
                "{name} -> {farm}, not a farm of the example"
            );
        }
        assert_eq!(bound(&config["rules"][0], "router_plugins"), ["tenant"]);
    }
}
