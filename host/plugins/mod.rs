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
mod check;
mod describe;
mod facts;
mod instances;
mod loading;
mod reads;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

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

pub use calling::{HOOK_NAMES, PluginFailure};
pub use check::{CheckReport, check_plugins};
pub use facts::{FarmFacts, ProbeResult, RequestFacts, ResponseFacts, header_block};
pub use instances::{LOG_LINES_PER_SECOND, Live, LogBudget};
pub use loading::{CONTRACT_PACKAGE, CONTRACT_VERSION};
pub use watch::{Rejected, ScanReport, rescan, watch_folder};

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
    /// Files whose latest content (with the settings it was given) was refused.
    rejected: std::sync::Mutex<Vec<Rejected>>,
    /// One folder scan at a time (the watcher's and a config reload's).
    scanning: std::sync::Mutex<()>,
    /// Plugin code compiled or read from the code cache: a change of settings alone reuses the
    /// loaded version's code and adds nothing here.
    compiles: AtomicU64,
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
    /// When this version was loaded (its file, or its settings, changed then).
    pub loaded_at: SystemTime,
    /// The compiled code, kept so that new settings for the same bytes are not compiled again.
    component: Component,
    pre: bindings::PluginPre<State>,
    /// Distinguishes versions in the per-thread instance caches.
    id: u64,
    pub stats: PluginStats,
    memory_limit: usize,
    live: Arc<Live>,
    /// The plugin's log lines (and the lines about its failures) per second.
    pub log: Arc<LogBudget>,
}

/// Counters of one plugin version, for logs and the admin API. Failures in a row are counted
/// per hook ([`HOOK_NAMES`] order), so a hook that keeps failing disables the plugin even while
/// another hook of it succeeds.
#[derive(Debug, Default)]
pub struct PluginStats {
    pub calls: AtomicU64,
    pub failures: AtomicU64,
    /// Failures by hook, in [`HOOK_NAMES`] order.
    pub failures_by_hook: [AtomicU64; 4],
    consecutive: [AtomicU32; 4],
    /// The failures in a row that the last call of a hook to return cleared, put back by
    /// [`Runtime::invalid`] when the host then refuses that call's decision.
    cleared: [AtomicU32; 4],
    /// The reason of the latest failed call, with its hook.
    last_failure: ArcSwapOption<(&'static str, String)>,
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
            scanning: std::sync::Mutex::new(()),
            compiles: AtomicU64::new(0),
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
                    .map(|r| (r.file.clone(), r.reason.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Files whose current content was refused, with the plugin name and content hash.
    pub fn rejected_files(&self) -> Vec<Rejected> {
        self.rejected.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The reason the plugin `name` with content `hash` was refused under `config`, if it was:
    /// the same bytes with other settings are another try.
    fn rejected_for(&self, name: &str, hash: &str, config: &PluginConfig) -> Option<String> {
        let r = self.rejected.lock().ok()?;
        r.iter()
            .find(|r| {
                r.plugin == name
                    && r.hash == hash
                    && !hash.is_empty()
                    && r.config.as_ref() == Some(config)
            })
            .map(|r| r.reason.clone())
    }

    /// How many times plugin code was compiled (or read from the code cache) since start.
    pub fn compiles(&self) -> u64 {
        self.compiles.load(Ordering::Relaxed)
    }

    fn scan_done(&self, rejected: Vec<Rejected>) {
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

impl PluginStats {
    /// The current disable period's length in milliseconds (0 before the first).
    pub fn backoff_ms(&self) -> u64 {
        self.backoff_ms.load(Ordering::Relaxed)
    }

    /// The hook and reason of the latest failed call, if any.
    pub fn last_failure(&self) -> Option<(&'static str, String)> {
        self.last_failure.load_full().map(|f| (f.0, f.1.clone()))
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

/// A hook's name as the contract and the config spell it.
pub fn hook_name(h: Hook) -> &'static str {
    match h {
        Hook::Router => "router",
        Hook::Affinity => "affinity",
        Hook::LinkTranslation => "link-translation",
        Hook::HealthEvaluation => "health-evaluation",
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
