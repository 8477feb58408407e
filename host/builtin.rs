//! The built-in default plugins: real wasm components built from `plugins/builtin-*` with the
//! public SDK, embedded in the binary, and configured from the farmgate config. They end every
//! hook chain, so a config with no plugin folder still balances, keeps affinity, rewrites URLs,
//! translates links and judges health the way TMG and ARR did.
//!
//! This module owns the mapping from config to each built-in's settings; the behaviour itself
//! lives in the plugins. It must not decide anything a built-in decides.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::config::{Config, PluginConfig};
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

/// The built-ins' call deadline. They are farmgate's own code, and a built-in interrupted by a
/// deadline fails open: on a loaded machine, where a thread can wait more than the 10 ms meant
/// for third-party plugins, that would let internal names through untranslated. Their deadline
/// only guards against a bug that loops.
pub const BUILTIN_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

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

/// Compiles (or takes from the code cache) and starts every built-in with its settings from
/// `config`, then installs them. A built-in that refuses its settings is an error: the config
/// validation should have caught what it refuses.
pub async fn install(runtime: &Arc<Runtime>, config: &Config) -> Result<(), String> {
    let mut tasks = Vec::new();
    for b in ALL {
        let rt = Arc::clone(runtime);
        let plugin_config = PluginConfig {
            settings_json: settings(b, config),
            call_timeout: Some(BUILTIN_CALL_TIMEOUT),
            ..PluginConfig::default()
        };
        tasks.push(tokio::task::spawn_blocking(move || {
            let hash = crate::plugins::hex(&Sha256::digest(b.wasm));
            let file = PathBuf::from(format!("<built-in>/{}.wasm", b.name));
            rt.load_with(b.name, &file, b.wasm, hash, plugin_config)
                .map_err(|e| format!("built-in plugin {} {e}", b.name))
        }));
    }
    let mut loaded: Vec<Arc<Plugin>> = Vec::new();
    for t in tasks {
        loaded.push(
            t.await
                .map_err(|e| format!("loading a built-in plugin failed: {e}"))??,
        );
    }
    runtime.install_builtins(loaded);
    Ok(())
}
