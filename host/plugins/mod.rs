//! The plugin runtime: the only module that touches wasmtime.
//!
//! One [`Engine`] and one [`Linker`] for the process. Each `.wasm` in the watched folder is
//! compiled (off the async worker threads), checked for the `farmgate:plugin` version it was built
//! against, pre-instantiated once ([`bindings::PluginPre`]), instantiated and initialised once as
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

mod bindings {
    wasmtime::component::bindgen!({
        path: "sdk/wit",
        world: "plugin",
        exports: { default: async },
    });
}

mod cache;
mod watch;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use bindings::exports::farmgate::plugin::affinity::{AffinityDecision, MemberChoice};
pub use bindings::exports::farmgate::plugin::health_evaluation::HealthVerdict;
pub use bindings::exports::farmgate::plugin::link_translation::{
    Mapping, Translation, TranslationDecision,
};
pub use bindings::exports::farmgate::plugin::router::{
    DirectResponse, ForwardTo, RedirectTo, RouteDecision,
};
pub use bindings::farmgate::plugin::types::{
    FarmView, Hook, MemberState as MemberStateView, MemberView, ProbeResult, RequestView,
    ResponseView,
};

use crate::config::{Binding, PluginConfig, PluginSettings};

pub use watch::{rescan, watch_folder};

/// The `farmgate:plugin` package version this host speaks. Components built against another
/// minor version (for 0.x) are refused with a message naming both.
pub const CONTRACT_PACKAGE: &str = "farmgate:plugin";
pub const CONTRACT_VERSION: &str = "0.2.0";

/// How often the epoch advances; call deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// How long the epoch keeps advancing after the last plugin is unloaded; longer than
/// [`crate::config::defaults::PLUGIN_CALL_TIMEOUT_MAX`], the longest call the config allows.
const TICKER_LINGER: Duration = Duration::from_secs(30);

/// First disable period of a plugin that keeps failing; doubled each time, up to the maximum.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

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
}

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

/// Counts of plugin versions and instances alive in one runtime: what proves that replaced
/// versions and their instances are freed.
#[derive(Debug, Default)]
pub struct Live {
    versions: AtomicUsize,
    instances: AtomicUsize,
}

impl Live {
    pub fn versions(&self) -> usize {
        self.versions.load(Ordering::Relaxed)
    }

    pub fn instances(&self) -> usize {
        self.instances.load(Ordering::Relaxed)
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        self.live.versions.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Held by every instance's store; dropping the store counts the instance gone.
struct InstanceGuard(Arc<Live>);

impl Drop for InstanceGuard {
    fn drop(&mut self) {
        self.0.instances.fetch_sub(1, Ordering::Relaxed);
    }
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

/// What went wrong with a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFailure {
    pub plugin: String,
    pub version: String,
    pub hook: &'static str,
    pub reason: String,
    /// The plugin's config says a failure must fail the request (503).
    pub fail_closed: bool,
}

impl std::fmt::Display for PluginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "plugin {} ({}) {} hook: {}",
            self.plugin, self.version, self.hook, self.reason
        )
    }
}

/// The thread that advances the engine's epoch every [`EPOCH_TICK`] while plugins are being
/// called, and sleeps after a quiet spell (an idle proxy should not wake a thousand times a
/// second). Every call marks the ticker active; a sleeping ticker is woken by the first call.
struct Ticker {
    stop: AtomicBool,
    active: AtomicBool,
    thread: std::thread::Thread,
}

impl Ticker {
    fn start(engine: Engine) -> Result<Arc<Ticker>, RuntimeError> {
        let (tx, rx) = std::sync::mpsc::channel::<Arc<Ticker>>();
        let handle = std::thread::Builder::new()
            .name("farmgate-epoch".into())
            .spawn(move || {
                let Ok(ticker) = rx.recv() else { return };
                let mut last_active = Instant::now();
                while !ticker.stop.load(Ordering::Relaxed) {
                    // Calls set the flag; clearing it here means "no call since the last tick".
                    if ticker.active.swap(false, Ordering::Relaxed) {
                        last_active = Instant::now();
                    }
                    // Calls still running on a just-removed plugin keep their deadline: the
                    // ticker parks only after a quiet spell far longer than any call may take.
                    if last_active.elapsed() < TICKER_LINGER {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    } else {
                        std::thread::park_timeout(Duration::from_secs(1));
                    }
                }
            })
            .map_err(|e| RuntimeError(format!("cannot start the epoch ticker: {e}")))?;
        let ticker = Arc::new(Ticker {
            stop: AtomicBool::new(false),
            active: AtomicBool::new(false),
            thread: handle.thread().clone(),
        });
        tx.send(Arc::clone(&ticker))
            .map_err(|_| RuntimeError("the epoch ticker ended at start".into()))?;
        Ok(ticker)
    }

    /// Called before every plugin call: one atomic load when already marked since the last tick.
    fn ensure_active(&self) {
        if !self.active.load(Ordering::Relaxed) && !self.active.swap(true, Ordering::Relaxed) {
            self.thread.unpark();
        }
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.unpark();
    }
}

/// The runtime could not be set up (engine, linker or ticker thread).
#[derive(Debug, thiserror::Error)]
#[error("plugin runtime: {0}")]
pub struct RuntimeError(String);

/// Store data of one instance.
struct State {
    _live: InstanceGuard,
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    plugin: Arc<str>,
    started: Instant,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::farmgate::plugin::types::Host for State {}

impl bindings::farmgate::plugin::host::Host for State {
    fn log(&mut self, level: bindings::farmgate::plugin::host::LogLevel, message: String) {
        use bindings::farmgate::plugin::host::LogLevel as L;
        let plugin = &*self.plugin;
        match level {
            L::Trace => tracing::trace!(target: "farmgate::plugin", plugin, "{message}"),
            L::Debug => tracing::debug!(target: "farmgate::plugin", plugin, "{message}"),
            L::Info => tracing::info!(target: "farmgate::plugin", plugin, "{message}"),
            L::Warn => tracing::warn!(target: "farmgate::plugin", plugin, "{message}"),
            L::Error => tracing::error!(target: "farmgate::plugin", plugin, "{message}"),
        }
    }

    fn monotonic_now_ns(&mut self) -> u64 {
        self.started.elapsed().as_nanos().min(u64::MAX as u128) as u64
    }

    fn random_u64(&mut self) -> u64 {
        random_u64()
    }
}

/// A per-thread xorshift generator seeded from the OS-randomised std hasher.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    thread_local! {
        static SEED: std::cell::Cell<u64> = std::cell::Cell::new(RandomState::new().hash_one(0u64) | 1);
    }
    SEED.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

/// An instance ready for calls.
struct Instance {
    store: Store<State>,
    bindings: bindings::Plugin,
}

/// Per-thread idle instances, by plugin version.
struct Cached {
    id: u64,
    version: Weak<Plugin>,
    idle: Option<Instance>,
}

thread_local! {
    static INSTANCES: RefCell<Vec<Cached>> = const { RefCell::new(Vec::new()) };
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

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
        self.ticker.ensure_active();
        let settings = self.settings.load();
        let component = self.compile(bytes, &hash)?;
        check_contract(&self.engine, &component)?;
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
            pre,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            stats: PluginStats::default(),
            memory_limit: settings.memory_limit_bytes,
            live: {
                self.live.versions.fetch_add(1, Ordering::Relaxed);
                Arc::clone(&self.live)
            },
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

    /// Replaces the plugin set (the watcher's job).
    pub fn install(&self, set: PluginSet) {
        self.set.store(Arc::new(set));
    }

    /// Replaces the built-in plugins (made from the config at start).
    pub fn install_builtins(&self, builtins: Vec<Arc<Plugin>>) {
        self.builtins.store(Arc::new(builtins));
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

    /// The call deadline of `plugin`: its own, or the runtime's.
    fn deadline_ticks(&self, plugin: &Plugin) -> u64 {
        let timeout = plugin
            .config
            .call_timeout
            .unwrap_or(self.settings.load().call_timeout);
        (timeout.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64 + 1
    }

    /// Asks a router plugin.
    pub async fn route(
        &self,
        plugin: &Arc<Plugin>,
        req: &RequestView,
    ) -> Result<RouteDecision, PluginFailure> {
        let mut instance = self.checkout(plugin, "router").await?;
        let result = instance
            .bindings
            .farmgate_plugin_router()
            .call_route(&mut instance.store, req)
            .await;
        self.finish(plugin, "router", instance, result)
    }

    /// Asks a router plugin on a brand-new instance, bypassing the instance cache. Only for
    /// measuring what the cache saves (`benches/plugins.rs`).
    #[doc(hidden)]
    pub async fn route_on_fresh_instance(
        &self,
        plugin: &Arc<Plugin>,
        req: &RequestView,
    ) -> Result<RouteDecision, String> {
        let (mut instance, _) = plugin
            .instantiate(self.settings.load().call_timeout)
            .await?;
        instance
            .store
            .set_epoch_deadline(self.deadline_ticks(plugin));
        instance
            .bindings
            .farmgate_plugin_router()
            .call_route(&mut instance.store, req)
            .await
            .map_err(|e| describe(&e))
    }

    /// Asks a link-translation plugin what to rewrite in a response.
    pub async fn decide_translation(
        &self,
        plugin: &Arc<Plugin>,
        resp: &ResponseView,
    ) -> Result<TranslationDecision, PluginFailure> {
        let mut instance = self.checkout(plugin, "link-translation").await?;
        let result = instance
            .bindings
            .farmgate_plugin_link_translation()
            .call_decide(&mut instance.store, resp)
            .await;
        self.finish(plugin, "link-translation", instance, result)
    }

    /// Asks a health-evaluation plugin for a verdict on a probe.
    pub async fn evaluate_health(
        &self,
        plugin: &Arc<Plugin>,
        probe: &ProbeResult,
    ) -> Result<HealthVerdict, PluginFailure> {
        let mut instance = self.checkout(plugin, "health-evaluation").await?;
        let result = instance
            .bindings
            .farmgate_plugin_health_evaluation()
            .call_evaluate(&mut instance.store, probe)
            .await;
        self.finish(plugin, "health-evaluation", instance, result)
    }

    /// Asks an affinity plugin; a member id outside the farm is a failure.
    pub async fn choose(
        &self,
        plugin: &Arc<Plugin>,
        req: &RequestView,
        farm: &FarmView,
    ) -> Result<AffinityDecision, PluginFailure> {
        let mut instance = self.checkout(plugin, "affinity").await?;
        let result = instance
            .bindings
            .farmgate_plugin_affinity()
            .call_choose(&mut instance.store, req, farm)
            .await;
        let decision = self.finish(plugin, "affinity", instance, result)?;
        if let AffinityDecision::Member(m) = &decision
            && !farm.members.iter().any(|v| v.id == m.id)
        {
            return Err(self.invalid(
                plugin,
                "affinity",
                format!(
                    "chose member {} but the farm has {} members",
                    m.id,
                    farm.members.len()
                ),
            ));
        }
        Ok(decision)
    }

    /// Records a decision the host cannot use as a failure of the plugin. The call returned, so
    /// `finish` cleared the plugin's failures in a row; the call failed after all, so
    /// they are put back first: a plugin whose every decision is refused is disabled like one
    /// that traps.
    pub fn invalid(
        &self,
        plugin: &Arc<Plugin>,
        hook: &'static str,
        reason: String,
    ) -> PluginFailure {
        let stats = &plugin.stats;
        stats
            .consecutive
            .fetch_add(stats.cleared.swap(0, Ordering::Relaxed), Ordering::Relaxed);
        self.failed(plugin, hook, reason)
    }

    /// An instance for one call: this thread's cached one, else a new one.
    async fn checkout(
        &self,
        plugin: &Arc<Plugin>,
        hook: &'static str,
    ) -> Result<Instance, PluginFailure> {
        self.ticker.ensure_active();
        plugin.stats.calls.fetch_add(1, Ordering::Relaxed);
        let mut instance = match take_cached(plugin) {
            Some(i) => i,
            None => match plugin.instantiate(self.settings.load().call_timeout).await {
                Ok((i, _)) => i,
                Err(e) => return Err(self.failed(plugin, hook, e)),
            },
        };
        instance
            .store
            .set_epoch_deadline(self.deadline_ticks(plugin));
        Ok(instance)
    }

    /// Returns a healthy instance to the cache, or records the failure and drops the instance
    /// (its state after a trap is not trusted).
    fn finish<R>(
        &self,
        plugin: &Arc<Plugin>,
        hook: &'static str,
        instance: Instance,
        result: wasmtime::Result<R>,
    ) -> Result<R, PluginFailure> {
        match result {
            Ok(r) => {
                let stats = &plugin.stats;
                let cleared = stats.consecutive.swap(0, Ordering::Relaxed);
                stats.cleared.store(cleared, Ordering::Relaxed);
                put_cached(plugin, instance);
                Ok(r)
            }
            Err(e) => Err(self.failed(plugin, hook, describe(&e))),
        }
    }

    fn failed(&self, plugin: &Arc<Plugin>, hook: &'static str, reason: String) -> PluginFailure {
        let stats = &plugin.stats;
        stats.failures.fetch_add(1, Ordering::Relaxed);
        let consecutive = stats.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        let version = plugin.short_hash().to_string();
        tracing::warn!(
            plugin = %plugin.name, version = %version, hook, reason = %reason,
            fail_closed = plugin.config.fail_closed, "plugin call failed; its instance is discarded"
        );
        let threshold = self.settings.load().failures_before_disable;
        if consecutive >= threshold {
            let backoff = stats.backoff_ms.load(Ordering::Relaxed);
            let next = if backoff == 0 {
                BACKOFF_START.as_millis() as u64
            } else {
                (backoff * 2).min(BACKOFF_MAX.as_millis() as u64)
            };
            stats.backoff_ms.store(next, Ordering::Relaxed);
            stats
                .disabled_until_ms
                .store(self.now_ms() + next, Ordering::Relaxed);
            stats.consecutive.store(0, Ordering::Relaxed);
            tracing::error!(
                plugin = %plugin.name, version = %version, failures = consecutive,
                disabled_for_ms = next, "plugin disabled after repeated failures; a new file re-enables it"
            );
        }
        PluginFailure {
            plugin: plugin.name.clone(),
            version,
            hook,
            reason,
            fail_closed: plugin.config.fail_closed,
        }
    }

    /// Milliseconds the plugin stays disabled, if it is.
    pub fn disabled_for(&self, plugin: &Plugin) -> Option<Duration> {
        let until = plugin.stats.disabled_until_ms.load(Ordering::Relaxed);
        let now = self.now_ms();
        (until > now).then(|| Duration::from_millis(until - now))
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

    /// WASI as far as std needs it (clocks, randomness, empty stdin, discarded stdout/stderr),
    /// plus only what the plugin's config grants.
    fn wasi(&self) -> Result<WasiCtx, String> {
        let mut b = WasiCtx::builder();
        for (k, v) in &self.config.env {
            b.env(k, v);
        }
        for dir in &self.config.read_only_dirs {
            let guest = dir.to_string_lossy();
            b.preopened_dir(dir, guest.as_ref(), wasmtime_wasi::FsPerms::ReadOnly)
                .map_err(|e| format!("cannot grant {}: {e}", dir.display()))?;
        }
        if self.config.network {
            b.inherit_network().allow_ip_name_lookup(true);
        }
        Ok(b.build())
    }

    /// A fresh instance, initialised with the plugin's settings; returns the hooks it reports.
    async fn instantiate(&self, timeout: Duration) -> Result<(Instance, Vec<Hook>), String> {
        let state = State {
            wasi: self.wasi()?,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.memory_limit)
                .trap_on_grow_failure(true)
                .build(),
            plugin: Arc::from(self.name.as_str()),
            _live: {
                self.live.instances.fetch_add(1, Ordering::Relaxed);
                InstanceGuard(Arc::clone(&self.live))
            },
            started: Instant::now(),
        };
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.limits);
        let ticks = (timeout.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64 + 1;
        // Instantiation and init run under a deadline too (a guest's start-up can loop).
        store.set_epoch_deadline(ticks.saturating_mul(10));
        let bindings = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| describe(&e))?;
        let hooks = bindings
            .farmgate_plugin_lifecycle()
            .call_init(&mut store, &self.config.settings_json)
            .await
            .map_err(|e| describe(&e))?
            .map_err(|e| format!("init refused its settings: {e}"))?;
        Ok((Instance { store, bindings }, hooks))
    }
}

fn take_cached(plugin: &Arc<Plugin>) -> Option<Instance> {
    INSTANCES.with(|cell| {
        let mut cache = cell.borrow_mut();
        // Versions no longer loaded anywhere free their instances here.
        cache.retain(|c| c.version.strong_count() > 0);
        cache
            .iter_mut()
            .find(|c| c.id == plugin.id)
            .and_then(|c| c.idle.take())
    })
}

fn put_cached(plugin: &Arc<Plugin>, instance: Instance) {
    INSTANCES.with(|cell| {
        let mut cache = cell.borrow_mut();
        match cache.iter_mut().find(|c| c.id == plugin.id) {
            Some(c) => c.idle = Some(instance),
            None => cache.push(Cached {
                id: plugin.id,
                version: Arc::downgrade(plugin),
                idle: Some(instance),
            }),
        }
    });
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

/// A one-line reason for a failed call: the trap kind when there is one.
fn describe(e: &wasmtime::Error) -> String {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => "call deadline exceeded (interrupted)".into(),
        Some(t) => format!("trap: {t}"),
        None => {
            let text = format!("{e:#}");
            if text.contains("forcing a memory growth failure") {
                "memory cap reached".into()
            } else {
                text
            }
        }
    }
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
}
