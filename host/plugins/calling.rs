//! Calling a plugin's hooks: an instance from the calling thread's cache, the call's epoch
//! deadline (and the ticker thread that advances the epoch), and what a failed call costs the
//! plugin: the failure is logged (within the plugin's log budget) and counted, and a plugin one
//! of whose hooks keeps failing is disabled with exponential backoff. Failures in a row are
//! counted per hook: a hook that always fails disables the plugin even if another always passes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::Engine;

use super::facts::{FarmFacts, Handed, ProbeResult, RequestFacts, ResponseFacts, borrow};
use super::instances::{EPOCH_TICK, epoch_ticks};
use super::instances::{Instance, put_cached, take_cached};
use super::{
    AffinityDecision, FarmLive, HealthVerdict, Plugin, RouteDecision, Runtime, RuntimeError,
    TranslationDecision,
};

/// How long the epoch keeps advancing after the last plugin is unloaded; longer than
/// [`crate::config::defaults::PLUGIN_CALL_TIMEOUT_MAX`], the longest call the config allows.
const TICKER_LINGER: Duration = Duration::from_secs(30);

/// First disable period of a plugin that keeps failing; doubled each time, up to the maximum.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// The hooks' names, in the order of [`super::PluginStats::failures_by_hook`].
pub const HOOK_NAMES: [&str; 4] = [
    "router",
    "affinity",
    "link-translation",
    "health-evaluation",
];

/// The slot of `hook` in the per-hook counters.
fn slot(hook: &str) -> usize {
    match hook {
        "router" => 0,
        "affinity" => 1,
        "link-translation" => 2,
        _ => 3,
    }
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
pub(super) struct Ticker {
    stop: AtomicBool,
    active: AtomicBool,
    thread: std::thread::Thread,
}

impl Ticker {
    pub(super) fn start(engine: Engine) -> Result<Arc<Ticker>, RuntimeError> {
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
    pub(super) fn ensure_active(&self) {
        if !self.active.load(Ordering::Relaxed) && !self.active.swap(true, Ordering::Relaxed) {
            self.thread.unpark();
        }
    }

    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.unpark();
    }
}

impl Runtime {
    /// The call deadline of `plugin`: its own, or the runtime's.
    fn deadline_ticks(&self, plugin: &Plugin) -> u64 {
        let timeout = plugin
            .config
            .call_timeout
            .unwrap_or(self.settings.load().call_timeout);
        epoch_ticks(timeout)
    }

    /// Asks a router plugin.
    pub async fn route(
        &self,
        plugin: &Arc<Plugin>,
        req: &Arc<RequestFacts>,
    ) -> Result<RouteDecision, PluginFailure> {
        let mut instance = self.checkout(plugin, "router").await?;
        instance.store.data_mut().handed.request = Some(Arc::clone(req));
        let result = instance
            .bindings
            .farmgate_plugin_router()
            .call_route(&mut instance.store, borrow())
            .await;
        self.finish(plugin, "router", instance, result)
    }

    /// Asks a router plugin on a brand-new instance, bypassing the instance cache. Only for
    /// measuring what the cache saves (`benches/plugins.rs`).
    #[doc(hidden)]
    pub async fn route_on_fresh_instance(
        &self,
        plugin: &Arc<Plugin>,
        req: &Arc<RequestFacts>,
    ) -> Result<RouteDecision, String> {
        let (mut instance, _) = plugin
            .instantiate(self.settings.load().call_timeout)
            .await?;
        instance
            .store
            .set_epoch_deadline(self.deadline_ticks(plugin));
        instance.store.data_mut().handed.request = Some(Arc::clone(req));
        instance
            .bindings
            .farmgate_plugin_router()
            .call_route(&mut instance.store, borrow())
            .await
            .map_err(|e| instance.failure(&e))
    }

    /// Asks a link-translation plugin what to rewrite in a response.
    pub async fn decide_translation(
        &self,
        plugin: &Arc<Plugin>,
        resp: &Arc<ResponseFacts>,
    ) -> Result<TranslationDecision, PluginFailure> {
        let mut instance = self.checkout(plugin, "link-translation").await?;
        instance.store.data_mut().handed.response = Some(Arc::clone(resp));
        let result = instance
            .bindings
            .farmgate_plugin_link_translation()
            .call_decide(&mut instance.store, borrow())
            .await;
        self.finish(plugin, "link-translation", instance, result)
    }

    /// Asks a health-evaluation plugin for a verdict on a probe.
    pub async fn evaluate_health(
        &self,
        plugin: &Arc<Plugin>,
        probe: &Arc<ProbeResult>,
    ) -> Result<HealthVerdict, PluginFailure> {
        let mut instance = self.checkout(plugin, "health-evaluation").await?;
        instance.store.data_mut().handed.probe = Some(Arc::clone(probe));
        let result = instance
            .bindings
            .farmgate_plugin_health_evaluation()
            .call_evaluate(&mut instance.store, borrow())
            .await;
        self.finish(plugin, "health-evaluation", instance, result)
    }

    /// Asks an affinity plugin; a member id outside the farm is a failure.
    pub async fn choose(
        &self,
        plugin: &Arc<Plugin>,
        req: &Arc<RequestFacts>,
        farm: &Arc<dyn FarmFacts>,
        live: &FarmLive,
    ) -> Result<AffinityDecision, PluginFailure> {
        let mut instance = self.checkout(plugin, "affinity").await?;
        let handed = &mut instance.store.data_mut().handed;
        handed.request = Some(Arc::clone(req));
        handed.farm = Some(Arc::clone(farm));
        let result = instance
            .bindings
            .farmgate_plugin_affinity()
            .call_choose(&mut instance.store, borrow(), borrow(), live)
            .await;
        let decision = self.finish(plugin, "affinity", instance, result)?;
        if let AffinityDecision::Member(m) = &decision
            && m.id as usize >= live.members.len()
        {
            return Err(self.invalid(
                plugin,
                "affinity",
                format!(
                    "chose member {} but the farm has {} members",
                    m.id,
                    live.members.len()
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
        let (stats, i) = (&plugin.stats, slot(hook));
        stats.consecutive[i].fetch_add(
            stats.cleared[i].swap(0, Ordering::Relaxed),
            Ordering::Relaxed,
        );
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
        mut instance: Instance,
        result: wasmtime::Result<R>,
    ) -> Result<R, PluginFailure> {
        // What the call was handed goes back now (a response's headers are taken back whole).
        instance.store.data_mut().handed = Handed::default();
        match result {
            Ok(r) => {
                let (stats, i) = (&plugin.stats, slot(hook));
                // Most calls find nothing to clear: a load rather than a write to a shared line.
                if stats.consecutive[i].load(Ordering::Relaxed) != 0
                    || stats.cleared[i].load(Ordering::Relaxed) != 0
                {
                    let cleared = stats.consecutive[i].swap(0, Ordering::Relaxed);
                    stats.cleared[i].store(cleared, Ordering::Relaxed);
                }
                put_cached(plugin, instance);
                Ok(r)
            }
            Err(e) => {
                let reason = instance.failure(&e);
                Err(self.failed(plugin, hook, reason))
            }
        }
    }

    fn failed(&self, plugin: &Arc<Plugin>, hook: &'static str, reason: String) -> PluginFailure {
        let (stats, i) = (&plugin.stats, slot(hook));
        stats.failures.fetch_add(1, Ordering::Relaxed);
        stats.failures_by_hook[i].fetch_add(1, Ordering::Relaxed);
        let consecutive = stats.consecutive[i].fetch_add(1, Ordering::Relaxed) + 1;
        stats
            .last_failure
            .store(Some(Arc::new((hook, reason.clone()))));
        let version = plugin.short_hash().to_string();
        if plugin.log.admit(&plugin.name) {
            tracing::warn!(
                plugin = %plugin.name, version = %version, hook, reason = %reason,
                fail_closed = plugin.config.fail_closed, "plugin call failed; its instance is discarded"
            );
        }
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
            for c in &stats.consecutive {
                c.store(0, Ordering::Relaxed);
            }
            tracing::error!(
                plugin = %plugin.name, version = %version, hook, failures = consecutive,
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
