//! The built-in default plugins: real wasm components built from `plugins/builtin-*` with the
//! public SDK, embedded in the binary, and configured from the farmgate config. They end every
//! hook chain, so a config with no plugin folder still balances, keeps affinity, rewrites URLs,
//! translates links and judges health the way TMG and ARR did.
//!
//! This module owns the mapping from config to each built-in's settings; the behaviour itself
//! lives in the plugins. It must not decide anything a built-in decides. The built-ins cannot
//! import [`defaults`]; where one keeps a copy of a default, the tests here check that the copy
//! agrees.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::config::{Config, PluginConfig, defaults};
use crate::plugins::{Plugin, Runtime};

/// A built-in plugin: its name (as logs and the admin API show it) and its component.
pub struct Builtin {
    pub name: &'static str,
    pub wasm: &'static [u8],
}

macro_rules! guest {
    ($file:literal) => {
        include_bytes!(concat!(env!("FARMGATE_GUEST_DIR"), "/", $file))
    };
}

/// Affinity and load balancing.
pub const BALANCE: Builtin = Builtin {
    name: "builtin-balance",
    wasm: guest!("builtin_balance.wasm"),
};
/// URL rewrite rules.
pub const ROUTER: Builtin = Builtin {
    name: "builtin-router",
    wasm: guest!("builtin_router.wasm"),
};
/// Link translation decisions.
pub const LINKS: Builtin = Builtin {
    name: "builtin-links",
    wasm: guest!("builtin_links.wasm"),
};
/// ARR's explicit health test.
pub const HEALTH: Builtin = Builtin {
    name: "builtin-health",
    wasm: guest!("builtin_health.wasm"),
};

pub const ALL: [&Builtin; 4] = [&BALANCE, &ROUTER, &LINKS, &HEALTH];

/// The settings each built-in gets from `config`, as the JSON its `init` reads.
pub fn settings(builtin: &Builtin, config: &Config) -> String {
    let value = match builtin.name {
        "builtin-balance" => {
            let farms: Map<String, Value> = config
                .farms
                .iter()
                .map(|f| {
                    let mut s = Map::new();
                    if let Some(b) = &f.balance {
                        s.insert("balance".into(), json!(b));
                    }
                    if let Some(h) = &f.hash_on {
                        s.insert("hash_on".into(), json!(h));
                    }
                    s.insert("affinity".into(), json!(f.affinity_mode));
                    (f.name.clone(), Value::Object(s))
                })
                .collect();
            json!({ "farms": farms })
        }
        "builtin-router" => {
            let rules: Map<String, Value> = config
                .rules
                .iter()
                .filter(|r| !r.rewrites.is_empty())
                .map(|r| (r.name.clone(), json!(r.rewrites)))
                .collect();
            json!({ "rules": rules })
        }
        "builtin-links" => {
            let rules: Map<String, Value> = config
                .rules
                .iter()
                .map(|r| (r.name.clone(), json!(r.links)))
                .collect();
            json!({ "rules": rules })
        }
        _ => {
            let farms: Map<String, Value> = config
                .farms
                .iter()
                .map(|f| {
                    let mut s = Map::new();
                    s.insert("statuses".into(), json!(f.health.statuses));
                    if let Some(m) = &f.health.content_match {
                        s.insert("content_match".into(), json!(m));
                    }
                    s.insert(
                        "response_time_ms".into(),
                        json!(f.health.response_time_threshold.as_millis() as u64),
                    );
                    (f.name.clone(), Value::Object(s))
                })
                .collect();
            json!({ "farms": farms })
        }
    };
    value.to_string()
}

/// Starts every built-in with its settings from `config`, then installs them. A built-in whose
/// settings did not change keeps its loaded version (and its counters); one whose settings did
/// reuses the compiled code, so a reload compiles nothing. A built-in that refuses its settings is
/// an error: the config validation should have caught what it refuses.
pub async fn install(runtime: &Arc<Runtime>, config: &Config) -> Result<(), String> {
    let current = runtime.builtins();
    let mut loading = Vec::new();
    for b in ALL {
        let plugin_config = PluginConfig {
            settings_json: settings(b, config),
            call_timeout: Some(defaults::BUILTIN_CALL_TIMEOUT),
            ..PluginConfig::default()
        };
        let hash = crate::plugins::hex(&Sha256::digest(b.wasm));
        if let Some(kept) = current
            .iter()
            .find(|p| p.name == b.name && p.hash == hash && p.config == plugin_config)
        {
            loading.push(Ok(Arc::clone(kept)));
            continue;
        }
        let rt = Arc::clone(runtime);
        loading.push(Err(tokio::task::spawn_blocking(move || {
            let file = PathBuf::from(format!("<built-in>/{}.wasm", b.name));
            rt.load_with(b.name, &file, b.wasm, hash, plugin_config)
                .map_err(|e| format!("built-in plugin {} {e}", b.name))
        })));
    }
    let mut loaded: Vec<Arc<Plugin>> = Vec::new();
    for l in loading {
        loaded.push(match l {
            Ok(kept) => kept,
            Err(task) => task
                .await
                .map_err(|e| format!("loading a built-in plugin failed: {e}"))??,
        });
    }
    runtime.install_builtins(loaded);
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The built-in plugins are crates of their own, built for wasm, and cannot import
    //! `defaults.rs`. Where one keeps its own copy of a default, these tests read the plugin's
    //! source and check the copy against `defaults.rs`, and check what the host hands it: a copy
    //! of a default the host always passes is only a fallback (for a rule or farm missing from
    //! the settings), while one the host never passes is the default in force.

    use serde_json::{Value, json};

    use super::*;

    const LINKS_SOURCE: &str = include_str!("../plugins/builtin-links/src/lib.rs");
    const HEALTH_SOURCE: &str = include_str!("../plugins/builtin-health/src/lib.rs");
    const ROUTER_SOURCE: &str = include_str!("../plugins/builtin-router/src/lib.rs");

    /// Two rules: one silent about link translation, one with its own media types and a
    /// rewrite rule that names no status.
    const CONFIG: &str = r#"
[[listeners]]
name = "web"
bind = "127.0.0.1:0"

[[farms]]
name = "f"
members = [{ host = "127.0.0.1", port = 9 }]

[[rules]]
name = "silent"
public_names = ["a.example"]
farm = "f"

[[rules]]
name = "own"
public_names = ["b.example"]
farm = "f"
link_content_types = ["text/plain"]
[[rules.rewrite]]
path = "^/old"
action = "redirect"
url = "/new"
"#;

    /// The value of `const NAME: TYPE = VALUE;` in a plugin's source, as written.
    fn constant<'a>(source: &'a str, name: &str) -> &'a str {
        let decl = format!("const {name}:");
        let start = source
            .find(&decl)
            .unwrap_or_else(|| panic!("the plugin declares no {name}"));
        let rest = &source[start + decl.len()..];
        let value = rest
            .split_once('=')
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("{name} has no value"));
        let end = value
            .find(";\n")
            .unwrap_or_else(|| panic!("{name} does not end with ';' at a line end"));
        value[..end].trim()
    }

    /// The text of a string literal.
    fn string(literal: &str) -> &str {
        literal
            .strip_prefix('"')
            .and_then(|l| l.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{literal} is not a string literal"))
    }

    /// The strings of a `&[&str]` literal.
    fn strings(literal: &str) -> Vec<&str> {
        let list = literal
            .strip_prefix("&[")
            .and_then(|l| l.strip_suffix(']'))
            .unwrap_or_else(|| panic!("{literal} is not a &[&str] literal"));
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(string)
            .collect()
    }

    fn settings_of(builtin: &Builtin, config: &Config) -> Value {
        serde_json::from_str(&settings(builtin, config)).unwrap()
    }

    #[test]
    fn builtin_links_defaults_agree() {
        assert_eq!(
            strings(constant(LINKS_SOURCE, "DEFAULT_CONTENT_TYPES")),
            defaults::LINK_CONTENT_TYPES
        );
        assert_eq!(
            strings(constant(LINKS_SOURCE, "DEFAULT_HEADERS")),
            defaults::LINK_HEADERS
        );
    }

    /// Every rule's media types are handed over, the default list for a rule that names none,
    /// so the plugin's own list is only a fallback. No header list is handed over, so the
    /// plugin's is the one in force.
    #[test]
    fn builtin_links_gets_every_rules_content_types_and_no_headers() {
        let config = Config::parse(CONFIG, "t.toml").unwrap();
        let s = settings_of(&LINKS, &config);
        assert_eq!(
            s["rules"]["silent"]["content_types"],
            json!(defaults::LINK_CONTENT_TYPES)
        );
        assert_eq!(s["rules"]["own"]["content_types"], json!(["text/plain"]));
        for rule in ["silent", "own"] {
            assert_eq!(s["rules"][rule].get("headers"), None, "{rule}");
        }
    }

    /// The host hands every farm its statuses and threshold, so the plugin's copies are only
    /// fallbacks; they agree all the same.
    #[test]
    fn builtin_health_defaults_agree() {
        assert_eq!(
            string(constant(HEALTH_SOURCE, "DEFAULT_STATUSES")),
            defaults::HEALTH_STATUSES
        );
        assert_eq!(
            constant(HEALTH_SOURCE, "DEFAULT_RESPONSE_TIME_MS"),
            defaults::RESPONSE_TIME_THRESHOLD.as_millis().to_string()
        );
        let config = Config::parse(CONFIG, "t.toml").unwrap();
        let s = settings_of(&HEALTH, &config);
        assert_eq!(
            s["farms"]["f"]["statuses"],
            json!(defaults::HEALTH_STATUSES)
        );
        assert_eq!(
            s["farms"]["f"]["response_time_ms"],
            json!(defaults::RESPONSE_TIME_THRESHOLD.as_millis() as u64)
        );
    }

    /// A status is handed over only when the rule names one, so the router's defaults for
    /// statuses and the response content type are the ones in force. Whether regexes ignore
    /// case and whether the query is kept are always handed over.
    #[test]
    fn builtin_router_defaults_agree() {
        assert_eq!(
            constant(ROUTER_SOURCE, "DEFAULT_REDIRECT_STATUS"),
            defaults::REWRITE_REDIRECT_STATUS.to_string()
        );
        assert_eq!(
            constant(ROUTER_SOURCE, "DEFAULT_RESPOND_STATUS"),
            defaults::REWRITE_RESPOND_STATUS.to_string()
        );
        assert_eq!(
            string(constant(ROUTER_SOURCE, "DEFAULT_CONTENT_TYPE")),
            defaults::REWRITE_RESPOND_CONTENT_TYPE
        );
        let config = Config::parse(CONFIG, "t.toml").unwrap();
        let s = settings_of(&ROUTER, &config);
        let rule = &s["rules"]["own"][0];
        assert_eq!(rule.get("status"), None);
        assert_eq!(rule["ignore_case"], json!(defaults::REWRITE_IGNORE_CASE));
        assert_eq!(rule["append_query"], json!(defaults::REWRITE_APPEND_QUERY));
        assert_eq!(rule["stop"], json!(defaults::REWRITE_STOP));
    }
}
