//! Plugin instances: the store data of one instance (its WASI context, resource table and memory
//! limits), the host functions plugins import (`log`, `monotonic_now_ns`, `random_u64`), the
//! per-plugin budget of log lines, making and initialising an instance, the calling thread's
//! cache of idle instances by plugin version, and the counts of versions and instances alive.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::describe::{Context, describe};
use super::facts::Handed;
use super::{Hook, Plugin, bindings};

/// Log lines a plugin may write per second, its own and the host's lines about its failed
/// calls together; the rest are counted, and summed up in one line when the next second begins.
pub const LOG_LINES_PER_SECOND: u32 = 20;

/// What a panic hook of the SDK logs before the instance traps.
const PANIC_PREFIX: &str = "plugin panicked: ";

/// One plugin version's log lines per second: a line is written while the current second has
/// budget left, else counted as suppressed. The count is summed up in one line when the next
/// second begins, whether or not the plugin writes again.
#[derive(Debug, Default)]
pub struct LogBudget {
    /// The second (since the process's first plugin log line) the count below is for.
    second: AtomicU64,
    lines: AtomicU32,
    /// Suppressed since the last summary line.
    held: AtomicU64,
    /// Suppressed in all, for `/metrics`.
    pub suppressed: AtomicU64,
    /// Suppressed lines already told of in a summary line.
    pub summarised: AtomicU64,
}

impl LogBudget {
    /// Whether `plugin` may write a line now. When a new second begins after lines were
    /// suppressed, one line says how many first; the first line suppressed in a second also
    /// sets a timer that writes that summary if no further line comes.
    pub fn admit(self: &Arc<Self>, plugin: &str) -> bool {
        let now = Self::clock().elapsed().as_secs() + 1;
        let second = self.second.load(Ordering::Relaxed);
        if second != now
            && self
                .second
                .compare_exchange(second, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.lines.store(0, Ordering::Relaxed);
            self.summarise(plugin);
        }
        if self.lines.fetch_add(1, Ordering::Relaxed) < LOG_LINES_PER_SECOND {
            return true;
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        if self.held.fetch_add(1, Ordering::Relaxed) == 0 {
            self.summarise_at_next_second(plugin);
        }
        false
    }

    fn clock() -> &'static Instant {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        EPOCH.get_or_init(Instant::now)
    }

    /// Writes the summary line of the lines held back, if any.
    fn summarise(&self, plugin: &str) {
        let held = self.held.swap(0, Ordering::Relaxed);
        if held > 0 {
            self.summarised.fetch_add(held, Ordering::Relaxed);
            tracing::warn!(
                target: "farmgate::plugin", plugin, suppressed = held,
                "suppressed {held} log lines of this plugin (over {LOG_LINES_PER_SECOND} a second)"
            );
        }
    }

    /// A timer for the summary of this second, in case the plugin writes nothing more (outside
    /// a runtime, as in a unit test, the next line written brings the summary instead).
    fn summarise_at_next_second(self: &Arc<Self>, plugin: &str) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let elapsed = Self::clock().elapsed();
        let next = Duration::from_secs(elapsed.as_secs() + 1);
        let wait = next.saturating_sub(elapsed) + Duration::from_millis(1);
        let (budget, plugin) = (Arc::clone(self), plugin.to_string());
        runtime.spawn(async move {
            tokio::time::sleep(wait).await;
            budget.summarise(&plugin);
        });
    }
}

/// How often the epoch advances; call deadlines are counted in these ticks.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(1);

/// A deadline of `timeout` in epoch ticks: at least one whole tick, plus one for the tick
/// already under way when the deadline is set.
pub(super) fn epoch_ticks(timeout: Duration) -> u64 {
    (timeout.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64 + 1
}

/// Counts of plugin versions and instances alive in one runtime: what proves that replaced
/// versions and their instances are freed.
#[derive(Debug, Default)]
pub struct Live {
    pub(super) versions: AtomicUsize,
    pub(super) instances: AtomicUsize,
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

/// Store data of one instance.
pub(super) struct State {
    _live: InstanceGuard,
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    memory_limit: usize,
    plugin: Arc<str>,
    log: Arc<LogBudget>,
    /// The message of a panic under way: the failure's reason says it, rather than a line of
    /// its own.
    panic: Option<String>,
    started: Instant,
    /// What the call under way was handed.
    pub(super) handed: Handed,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::farmgate::plugin::host::Host for State {
    fn log(&mut self, level: bindings::farmgate::plugin::host::LogLevel, message: String) {
        use bindings::farmgate::plugin::host::LogLevel as L;
        if let (L::Error, Some(panic)) = (level, message.strip_prefix(PANIC_PREFIX)) {
            self.panic = Some(panic.to_string());
            return;
        }
        let plugin = &*self.plugin;
        if !self.log.admit(plugin) {
            return;
        }
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
pub(super) struct Instance {
    pub(super) store: Store<State>,
    pub(super) bindings: bindings::Plugin,
}

impl Instance {
    /// Why a call on this instance failed.
    pub(super) fn failure(&mut self, e: &wasmtime::Error) -> String {
        failure(&mut self.store, e)
    }
}

fn failure(store: &mut Store<State>, e: &wasmtime::Error) -> String {
    let data = store.data_mut();
    let cx = Context {
        memory_limit: data.memory_limit,
        panic: data.panic.take(),
    };
    describe(e, &cx)
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

impl Plugin {
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
            // wasmtime-wasi allows no TCP unless told to, whatever the address check says.
            b.inherit_network()
                .allow_ip_name_lookup(true)
                .allow_tcp(true);
        }
        Ok(b.build())
    }

    /// A fresh instance, initialised with the plugin's settings; returns the hooks it reports.
    pub(super) async fn instantiate(
        &self,
        timeout: Duration,
    ) -> Result<(Instance, Vec<Hook>), String> {
        let state = State {
            wasi: self.wasi()?,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.memory_limit)
                .trap_on_grow_failure(true)
                .build(),
            memory_limit: self.memory_limit,
            plugin: Arc::from(self.name.as_str()),
            log: Arc::clone(&self.log),
            panic: None,
            _live: {
                self.live.instances.fetch_add(1, Ordering::Relaxed);
                InstanceGuard(Arc::clone(&self.live))
            },
            started: Instant::now(),
            handed: Handed::default(),
        };
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.limits);
        let ticks = epoch_ticks(timeout);
        // Instantiation and init run under a deadline too (a guest's start-up can loop).
        store.set_epoch_deadline(ticks.saturating_mul(10));
        let bindings = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| failure(&mut store, &e))?;
        let hooks = bindings
            .farmgate_plugin_lifecycle()
            .call_init(&mut store, &self.config.settings_json)
            .await
            .map_err(|e| failure(&mut store, &e))?
            .map_err(|e| format!("init refused its settings: {e}"))?;
        Ok((Instance { store, bindings }, hooks))
    }
}

pub(super) fn take_cached(plugin: &Arc<Plugin>) -> Option<Instance> {
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

pub(super) fn put_cached(plugin: &Arc<Plugin>, instance: Instance) {
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
