//! The plugin runtime: the only module that touches wasmtime.
//!
//! One [`Engine`] and one [`Linker`] for the process. Each `.wasm` in the watched folder is
//! compiled (off the async worker threads), checked for the `farmgate:plugin` version it was built
//! against, pre-instantiated once (`PluginPre`), instantiated and initialised once as
//! a smoke test, and only then swapped into the current [`PluginSet`] with arc-swap.
//!
//! Calls are async (wasmtime's async support, so WASI runs on tokio without blocking a worker's
//! runtime) against an instance taken from the calling thread's own cache, so no lock is shared
//! by requests and no instance is created per request. Every call has an epoch
//! deadline (a ticker thread advances the epoch every millisecond) and every instance a memory
//! cap. A failing call (trap, deadline, memory cap, or a decision the host cannot use) throws the
//! instance away, is logged with plugin, version, hook and reason, and is counted; a plugin that
//! keeps failing is disabled with exponential backoff until a new file replaces it.
//!
//! Plugins get WASI only as far as Rust's std needs it: no directories, no network, no
//! environment, no arguments.
//!
//! Here: the runtime, the plugin set and one loaded plugin version. Loading a file is in
//! `loading.rs` (with the compiled-code cache, `cache.rs`), calling hooks with deadlines and
//! failure accounting in `calling.rs`, instances and the per-thread instance caches in
//! `instances.rs`, and the watched folder in `watch.rs`.

mod bindings {
    wasmtime::component::bindgen!({
        path: "sdk/wit",
        world: "plugin",
        exports: { default: async },
    });
}

mod cache;
mod calling;
mod facts;
mod instances;
mod loading;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker};

pub use bindings::exports::farmgate::plugin::affinity::{AffinityDecision, MemberChoice};
pub use bindings::exports::farmgate::plugin::health_evaluation::HealthVerdict;
pub use bindings::exports::farmgate::plugin::link_translation::{
    Mapping, Translation, TranslationDecision,
};
pub use bindings::exports::farmgate::plugin::router::{
    DirectResponse, ForwardTo, RedirectTo, RouteDecision,
};
pub use bindings::farmgate::plugin::types::{
    FarmLive, FarmTable, Hook, MemberFigures, MemberInfo, MemberLive,
    MemberState as MemberStateView,
};

use crate::config::{Binding, PluginConfig, PluginSettings};

pub use calling::PluginFailure;
pub use facts::{FarmFacts, ProbeResult, RequestFacts, ResponseFacts, header_block};
pub use instances::Live;
pub use loading::{CONTRACT_PACKAGE, CONTRACT_VERSION};
pub use watch::{rescan, watch_folder};

use calling::Ticker;
use instances::State;

/// The runtime: engine, linker, the current plugin set.
pub struct Runtime {
    engine: Engine,
    linker: Linker<State>,
    settings: ArcSwap<PluginSettings>,
    set: ArcSwap<PluginSet>,
    /// The built-in plugins that end the chains, one per hook at most.
    builtins: ArcSwap<Vec<Arc<Plugin>>>,
    started: Instant,
    ticker: Arc<Ticker>,
    /// Folder scans completed, so callers can wait for a change to be looked at.
    scans: AtomicU64,
    /// Files whose latest content was refused: (file, reason, plugin name, content hash).
    rejected: std::sync::Mutex<Vec<(String, String, String, String)>>,
    live: Arc<Live>,
    /// Counts installs of the plugin set and of the built-ins: a chain assembled at one count
    /// holds until the next.
    installs: AtomicU64,
}

/// A chain of plugins for one hook and binding, in order: every plugin bound, enabled or not
/// (a call skips the disabled ones, see [`Runtime::enabled`]).
pub type Chain = Arc<[Arc<Plugin>]>;

/// Where a chain is kept between changes of the plugin set, so a request finds it with one
/// atomic load rather than assembling it.
#[derive(Default)]
pub struct ChainSlot(ArcSwapOption<(u64, Chain)>);

/// The plugins loaded now, in file-name order.
#[derive(Default)]
pub struct PluginSet {
    pub plugins: Vec<Arc<Plugin>>,
}

/// One loaded version of one plugin file.
pub struct Plugin {
    /// The file name without `.wasm`; what configs bind.
    pub name: String,
    pub file: PathBuf,
    /// SHA-256 of the file, hex.
    pub hash: String,
    /// The hooks the plugin said it implements.
    pub hooks: Vec<Hook>,
    pub config: PluginConfig,
    pre: bindings::PluginPre<State>,
    /// Distinguishes versions in the per-thread instance caches.
    id: u64,
    pub stats: PluginStats,
    memory_limit: usize,
    live: Arc<Live>,
}

/// Counters of one plugin version, for logs and the admin API.
#[derive(Debug, Default)]
pub struct PluginStats {
    pub calls: AtomicU64,
    pub failures: AtomicU64,
    consecutive: AtomicU32,
    /// The failures in a row that the last call to return cleared, put back by
    /// [`Runtime::invalid`] when the host then refuses that call's decision.
    cleared: AtomicU32,
    /// Milliseconds since the runtime started until which the plugin is disabled (0: enabled).
    disabled_until_ms: AtomicU64,
    backoff_ms: AtomicU64,
}

impl PluginStats {
    /// The disable period the plugin got last (zero until it is first disabled): what the next
    /// one doubles.
    pub fn backoff(&self) -> Duration {
        Duration::from_millis(self.backoff_ms.load(Ordering::Relaxed))
    }
}

/// The runtime could not be set up (engine, linker or ticker thread).
#[derive(Debug, thiserror::Error)]
#[error("plugin runtime: {0}")]
pub struct RuntimeError(String);

impl Runtime {
    pub fn new(settings: PluginSettings) -> Result<Arc<Runtime>, RuntimeError> {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        let engine = Engine::new(&config)
            .map_err(|e| RuntimeError(format!("cannot create the wasm engine: {e}")))?;
        let mut linker = Linker::<State>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| RuntimeError(format!("cannot link WASI: {e}")))?;
        bindings::Plugin::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
            .map_err(|e| RuntimeError(format!("cannot link the host interface: {e}")))?;
        let ticker = Ticker::start(engine.clone())?;
        Ok(Arc::new(Runtime {
            engine,
            linker,
            settings: ArcSwap::from_pointee(settings),
            set: ArcSwap::from_pointee(PluginSet::default()),
            builtins: ArcSwap::from_pointee(Vec::new()),
            started: Instant::now(),
            ticker,
            scans: AtomicU64::new(0),
            rejected: std::sync::Mutex::new(Vec::new()),
            live: Arc::new(Live::default()),
            installs: AtomicU64::new(0),
        }))
    }

    pub fn plugins(&self) -> Arc<PluginSet> {
        self.set.load_full()
    }

    /// Replaces the runtime settings (a config reload); plugins whose own config changed are
    /// loaded again by the next folder scan.
    pub fn set_settings(&self, settings: PluginSettings) {
        self.settings.store(Arc::new(settings));
    }

    pub fn settings(&self) -> Arc<PluginSettings> {
        self.settings.load_full()
    }

    /// Replaces the plugin set (the watcher's job).
    pub fn install(&self, set: PluginSet) {
        self.set.store(Arc::new(set));
        self.installs.fetch_add(1, Ordering::Release);
    }

    /// Replaces the built-in plugins (made from the config at start).
    pub fn install_builtins(&self, builtins: Vec<Arc<Plugin>>) {
        self.builtins.store(Arc::new(builtins));
        self.installs.fetch_add(1, Ordering::Release);
    }

    /// The chain for `hook` under `binding`, ended by the built-in for the hook when `builtin`,
    /// as kept in `slot`; assembled again when the plugin set or the built-ins changed since.
    pub fn chain_in(
        &self,
        slot: &ChainSlot,
        hook: Hook,
        binding: &Binding,
        builtin: bool,
    ) -> Chain {
        let installs = self.installs.load(Ordering::Acquire);
        if let Some(kept) = &*slot.0.load()
            && kept.0 == installs
        {
            return Arc::clone(&kept.1);
        }
        let set = self.set.load();
        let bound = |p: &&Arc<Plugin>| p.hooks.contains(&hook);
        let mut chain: Vec<Arc<Plugin>> = match binding {
            Binding::Folder => set.plugins.iter().filter(bound).cloned().collect(),
            Binding::Named(names) => names
                .iter()
                .filter_map(|n| set.plugins.iter().find(|p| &p.name == n))
                .filter(bound)
                .cloned()
                .collect(),
        };
        if builtin {
            chain.extend(self.builtins.load().iter().filter(bound).cloned());
        }
        let chain: Chain = chain.into();
        slot.0.store(Some(Arc::new((installs, Arc::clone(&chain)))));
        chain
    }

    /// Whether a plugin of a chain is asked now (it is not disabled after repeated failures).
    pub fn enabled(&self, plugin: &Plugin) -> bool {
        let until = plugin.stats.disabled_until_ms.load(Ordering::Relaxed);
        until == 0 || until <= self.now_ms()
    }

    /// The built-in plugins.
    pub fn builtins(&self) -> Arc<Vec<Arc<Plugin>>> {
        self.builtins.load_full()
    }

    /// The enabled built-in plugin for `hook`, which ends that hook's chains.
    pub fn builtin(&self, hook: Hook) -> Option<Arc<Plugin>> {
        let now = self.now_ms();
        self.builtins
            .load()
            .iter()
            .find(|p| p.hooks.contains(&hook) && p.enabled(now))
            .cloned()
    }

    /// Plugin versions and instances alive now.
    pub fn live(&self) -> &Live {
        &self.live
    }

    /// How many folder scans have completed.
    pub fn scans(&self) -> u64 {
        self.scans.load(Ordering::Acquire)
    }

    /// Files whose current content was refused, and why.
    pub fn rejected(&self) -> Vec<(String, String)> {
        self.rejected
            .lock()
            .map(|r| {
                r.iter()
                    .map(|(f, why, _, _)| (f.clone(), why.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The reason the plugin `name` with content `hash` was refused, if it was.
    fn rejected_for(&self, name: &str, hash: &str) -> Option<(String, String)> {
        let r = self.rejected.lock().ok()?;
        r.iter()
            .find(|(_, _, n, h)| n == name && h == hash && !h.is_empty())
            .map(|(f, why, _, _)| (f.clone(), why.clone()))
    }

    fn scan_done(&self, rejected: Vec<(String, String, String, String)>) {
        if let Ok(mut r) = self.rejected.lock() {
            *r = rejected;
        }
        self.scans.fetch_add(1, Ordering::Release);
    }

    /// The enabled plugins bound to `hook` under `binding`, in chain order.
    pub fn chain(&self, hook: Hook, binding: &Binding) -> Vec<Arc<Plugin>> {
        let set = self.set.load();
        if set.plugins.is_empty() {
            return Vec::new();
        }
        let now = self.now_ms();
        let usable = |p: &Arc<Plugin>| p.hooks.contains(&hook) && p.enabled(now);
        match binding {
            Binding::Folder => set.plugins.iter().filter(|p| usable(p)).cloned().collect(),
            Binding::Named(names) => names
                .iter()
                .filter_map(|n| set.plugins.iter().find(|p| &p.name == n))
                .filter(|p| usable(p))
                .cloned()
                .collect(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker.stop();
    }
}

impl Plugin {
    pub fn short_hash(&self) -> &str {
        &self.hash[..self.hash.len().min(12)]
    }

    fn enabled(&self, now_ms: u64) -> bool {
        self.stats.disabled_until_ms.load(Ordering::Relaxed) <= now_ms
    }
}

/// Lower-case hex of `bytes` (content hashes).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
