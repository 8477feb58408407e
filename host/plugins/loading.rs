//! Loading a plugin file: compiling it (or reading the code compiled for the same bytes earlier
//! from the cache directory, `cache.rs`), checking the `farmgate:plugin` version it was built
//! against, pre-instantiating it, and the smoke test of one instance. New settings for bytes
//! already loaded reuse that version's compiled code: only the smoke test runs again, so a
//! settings change does not wait for a compiler on a busy machine. Also the words for why bytes
//! are not a usable component.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::Engine;
use wasmtime::component::Component;

use super::{LogBudget, Plugin, PluginStats, Runtime, bindings, cache};
use crate::config::PluginConfig;

/// The `farmgate:plugin` package version this host speaks. Components built against another
/// minor version (for 0.x) are refused with a message naming both.
pub const CONTRACT_PACKAGE: &str = "farmgate:plugin";
/// Read by the build script from the `package` line of `sdk/wit/farmgate.wit`.
pub const CONTRACT_VERSION: &str = env!("FARMGATE_CONTRACT_VERSION");

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Runtime {
    /// Compiles, checks and smoke-tests one plugin file. Blocking: call from a blocking thread.
    /// The smoke test runs under a deadline, so the epoch ticker starts if it was idle.
    pub fn load(
        &self,
        name: &str,
        file: &Path,
        bytes: &[u8],
        hash: String,
    ) -> Result<Arc<Plugin>, String> {
        let config = self
            .settings
            .load()
            .config
            .get(name)
            .cloned()
            .unwrap_or_default();
        self.load_with(name, file, bytes, hash, config)
    }

    /// [`Runtime::load`] with the plugin's config given rather than looked up by name (the
    /// built-in plugins' settings are made from the farmgate config).
    pub fn load_with(
        &self,
        name: &str,
        file: &Path,
        bytes: &[u8],
        hash: String,
        config: PluginConfig,
    ) -> Result<Arc<Plugin>, String> {
        let component = match self.loaded_code(&hash) {
            // Bytes loaded already (a reload's new settings, a built-in, a file dropped again):
            // their code is reused rather than compiled on a machine that may be busy.
            Some(component) => component,
            None => {
                let component = self.compile(bytes, &hash)?;
                check_contract(&self.engine, &component)?;
                component
            }
        };
        self.load_compiled(name, file, component, hash, config)
    }

    /// The compiled code of a loaded version (a folder plugin or a built-in) of these bytes.
    fn loaded_code(&self, hash: &str) -> Option<Component> {
        let set = self.set.load();
        let builtins = self.builtins.load();
        set.plugins
            .iter()
            .chain(builtins.iter())
            .find(|p| p.hash == hash)
            .map(|p| p.component.clone())
    }

    /// Pre-instantiates checked code and runs the smoke test with `config`.
    fn load_compiled(
        &self,
        name: &str,
        file: &Path,
        component: Component,
        hash: String,
        config: PluginConfig,
    ) -> Result<Arc<Plugin>, String> {
        self.ticker.ensure_active();
        let settings = self.settings.load();
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(bindings::PluginPre::new)
            .map_err(|e| {
                format!("does not fit the farmgate:plugin@{CONTRACT_VERSION} contract: {e:#}")
            })?;
        let mut plugin = Plugin {
            name: name.to_string(),
            file: file.to_path_buf(),
            hash,
            hooks: Vec::new(),
            config,
            loaded_at: std::time::SystemTime::now(),
            component,
            pre,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            stats: PluginStats::default(),
            memory_limit: settings.memory_limit_bytes,
            live: {
                self.live.versions.fetch_add(1, Ordering::Relaxed);
                Arc::clone(&self.live)
            },
            log: Arc::new(LogBudget::default()),
        };
        // The smoke test: instantiate and initialise once; the answer says which hooks it has.
        // `load` runs on a blocking thread, where waiting on the runtime is allowed.
        let (_, hooks) = tokio::runtime::Handle::current()
            .block_on(plugin.instantiate(settings.call_timeout))
            .map_err(|e| format!("failed its start-up check: {e}"))?;
        if hooks.is_empty() {
            return Err("implements no hook (init returned an empty list)".into());
        }
        plugin.hooks = hooks;
        Ok(Arc::new(plugin))
    }

    /// Compiles a component, or loads the code farmgate compiled for the same bytes earlier from
    /// the cache directory. Only files in a directory that farmgate created (mode 0700) and that
    /// nobody else can write are ever deserialized.
    fn compile(&self, bytes: &[u8], hash: &str) -> Result<Component, String> {
        self.compiles.fetch_add(1, Ordering::Relaxed);
        let cache = self
            .settings
            .load()
            .cache_dir
            .clone()
            .filter(|d| cache::usable(d));
        let path = cache
            .as_ref()
            .map(|d| d.join(format!("{hash}-{:016x}.cwasm", self.engine_hash())));
        if let Some(p) = &path
            && cache::trusted_file(p)
        {
            // SAFETY: the file was written by `Component::serialize` of this farmgate into a
            // directory only this user can write (checked above), and its name binds it to the
            // source's content hash and to this engine's compatibility hash.
            match unsafe { Component::deserialize_file(&self.engine, p) } {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::warn!(file = %p.display(), error = %e, "cached plugin code unusable; compiling again");
                    let _ = std::fs::remove_file(p);
                }
            }
        }
        let component =
            Component::new(&self.engine, bytes).map_err(|e| compile_error(bytes, &e))?;
        if let Some(p) = &path {
            match component.serialize() {
                Ok(code) => cache::store(p, &code),
                Err(e) => tracing::debug!(error = %e, "cannot serialize compiled plugin"),
            }
        }
        Ok(component)
    }

    fn engine_hash(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        // DefaultHasher::new() has fixed keys, so this is stable from run to run.
        let mut h = std::hash::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        h.finish()
    }
}

/// Why bytes are not a usable component, in words a plugin author can act on.
fn compile_error(bytes: &[u8], e: &wasmtime::Error) -> String {
    if !bytes.starts_with(b"\0asm") {
        return "is not a WebAssembly file (no \\0asm header)".into();
    }
    // Bytes 4..8: version and layer; layer 0 is a core module, 1 a component.
    if bytes.len() >= 8 && bytes[6..8] == [0, 0] {
        return "is a core WebAssembly module, not a component; build it for wasm32-wasip2".into();
    }
    let text = e.to_string();
    format!(
        "does not compile: {}",
        text.lines().next().unwrap_or("invalid component")
    )
}

/// Refuses components that do not speak this host's `farmgate:plugin` version.
fn check_contract(engine: &Engine, component: &Component) -> Result<(), String> {
    let ty = component.component_type();
    let ours: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .filter(|n| n.starts_with(CONTRACT_PACKAGE))
        .collect();
    if ours.is_empty() {
        return Err(format!(
            "exports no farmgate hook (expected interfaces of {CONTRACT_PACKAGE}@{CONTRACT_VERSION}, such as {CONTRACT_PACKAGE}/router)"
        ));
    }
    let want = minor_of(CONTRACT_VERSION);
    for name in &ours {
        let version = name.split_once('@').map(|(_, v)| v).unwrap_or("");
        if minor_of(version) != want {
            return Err(format!(
                "was built against {CONTRACT_PACKAGE}@{} but this farmgate speaks {CONTRACT_PACKAGE}@{CONTRACT_VERSION}; rebuild it with a matching farmgate-sdk",
                if version.is_empty() {
                    "(unversioned)"
                } else {
                    version
                }
            ));
        }
    }
    Ok(())
}

/// `0.1` of `0.1.3`; for 1.x and later, the major version alone.
fn minor_of(v: &str) -> String {
    let mut parts = v.split('.');
    let major = parts.next().unwrap_or("");
    if major == "0" {
        format!("0.{}", parts.next().unwrap_or(""))
    } else {
        major.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_minor_for_0x() {
        assert_eq!(minor_of("0.1.0"), "0.1");
        assert_eq!(minor_of("0.1.7"), "0.1");
        assert_ne!(minor_of("0.2.0"), "0.1");
        assert_eq!(minor_of("1.4.0"), "1");
    }

    #[test]
    fn the_contract_version_is_the_one_the_wit_file_declares() {
        let wit = include_str!("../../sdk/wit/farmgate.wit");
        let package = format!("package {CONTRACT_PACKAGE}@{CONTRACT_VERSION};");
        assert!(
            wit.lines().any(|l| l.trim() == package),
            "sdk/wit/farmgate.wit has no `{package}` line"
        );
    }
}
