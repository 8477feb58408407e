//! Starting and stopping: binds listeners (or takes already-bound ones), starts the sample
//! members, builds the first generation, starts the accept loops (`listeners`) and the
//! background tasks, and shuts down gracefully (stop accepting, let in-flight requests finish up
//! to the grace period, then return).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::access_log::AccessLog;
use crate::config::Config;
use crate::generation::Generation;
use crate::listeners::Listeners;
use crate::plugins::{Runtime, watch_folder};
use crate::pool::{Pool, PoolSettings};
use crate::proxy::Proxy;
use crate::resolve::Resolver;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {what} to {addr}: {source}")]
    Bind {
        what: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the access log: {0}")]
    AccessLog(std::io::Error),
    #[error(transparent)]
    Plugins(crate::plugins::RuntimeError),
    #[error("{0}")]
    Builtin(String),
    #[error("health checks: {0}")]
    Health(String),
    #[error("cannot watch the plugin folder {dir}: {source}")]
    PluginFolder {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("listener \"{listener}\": {message}")]
    Tls { listener: String, message: String },
}

/// A started farmgate.
pub struct Running {
    pub proxy: Arc<Proxy>,
    /// Member name resolution (its host table can be replaced).
    pub resolver: Resolver,
    /// The connectivity verifiers.
    pub health: Arc<crate::health::HealthChecker>,
    /// Applies a changed config file.
    pub reloader: Arc<crate::reload::Reloader>,
    /// Where the admin listener is bound, if there is one.
    pub admin: Option<SocketAddr>,
    /// What the admin API's `/ready` reports.
    ready: Arc<std::sync::atomic::AtomicBool>,
    /// The client listeners; a reload adds, removes and restarts them.
    listeners: Arc<Listeners>,
    samples: Vec<(String, SocketAddr)>,
    shutdown: watch::Sender<bool>,
    /// Resolver refresh, pool reaper and sample members: stopped after the listeners drain.
    background: Vec<JoinHandle<()>>,
}

impl Running {
    /// The bound address of a listener (useful when the config asked for port 0).
    pub fn addr(&self, listener: &str) -> Option<SocketAddr> {
        self.listeners
            .bound()
            .iter()
            .find(|(n, _)| n == listener)
            .map(|(_, a)| *a)
    }

    /// Name and bound address of every listener, as of now (a reload may change them).
    pub fn listeners(&self) -> Arc<Vec<(String, SocketAddr)>> {
        self.listeners.bound()
    }

    pub fn sample_addr(&self, name: &str) -> Option<SocketAddr> {
        self.samples
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// Stops accepting, waits for in-flight requests up to the configured grace period, then
    /// stops the background tasks.
    pub async fn shutdown(self) {
        self.ready
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let _ = self.shutdown.send(true);
        self.listeners.join().await;
        self.health.stop();
        for t in self.background {
            t.abort();
        }
    }
}

/// Starts farmgate on `config`: sample members first (members may point at them), then the
/// listeners bound from the config.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let mut background = Vec::new();
    let mut samples = Vec::new();
    for s in &config.sample_servers {
        let (addr, task) = crate::sample::start(s)
            .await
            .map_err(|source| StartError::Bind {
                what: format!("sample server \"{}\"", s.name),
                addr: s.bind,
                source,
            })?;
        samples.push((s.name.clone(), addr));
        background.push(task);
    }
    let mut bound = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let listener = TcpListener::bind(l.bind)
            .await
            .map_err(|source| StartError::Bind {
                what: format!("listener \"{}\"", l.name),
                addr: l.bind,
                source,
            })?;
        bound.push((i, listener));
    }
    let mut running = start_with_listeners(config, bound).await?;
    running.samples = samples;
    running.background.extend(background);
    Ok(running)
}

/// Starts farmgate on listeners the caller bound (index into the config's listeners, listener).
pub async fn start_with_listeners(
    config: Config,
    listeners: Vec<(usize, TcpListener)>,
) -> Result<Running, StartError> {
    let config = Arc::new(config);
    let settings = &config.proxy;
    let pool = Arc::new(Pool::new(PoolSettings {
        idle_timeout: settings.pool_idle_timeout,
        max_idle_per_peer: settings.pool_max_idle_per_peer,
        connect_timeout: settings.connect_timeout,
    }));
    let access_log = AccessLog::open(&config.access_log).map_err(StartError::AccessLog)?;
    let generation = Generation::new(Arc::clone(&config));
    let resolver = Resolver::new(config.hosts.clone());
    resolver.resolve_farms(&generation.farms).await;
    let farms = generation.farms.clone();
    let mut background = Vec::new();
    let plugins = Runtime::new(config.plugins.clone()).map_err(StartError::Plugins)?;
    crate::builtin::install(&plugins, &config)
        .await
        .map_err(StartError::Builtin)?;
    if let Some(dir) = &config.plugins.dir {
        let watcher = watch_folder(Arc::clone(&plugins), dir.clone())
            .await
            .map_err(|source| StartError::PluginFolder {
                dir: dir.clone(),
                source,
            })?;
        background.push(watcher);
        warn_missing_plugins(&config, &plugins);
    }
    if config.farms.iter().any(|f| f.affinity_mode == "cookie")
        && config.proxy.affinity_key.source == "random"
    {
        tracing::warn!(
            "affinity cookies are signed with a random key made at start: they do not survive a restart and other farmgate instances do not accept them; set {} (or proxy.affinity_key_env) to share a key",
            crate::config::defaults::AFFINITY_KEY_ENV
        );
    }
    let health = crate::health::HealthChecker::start(
        &config,
        &generation.farms,
        Arc::clone(&plugins),
        resolver.clone(),
    )
    .map_err(StartError::Health)?;
    crate::bridge::log_start(&config);
    let proxy = Arc::new(Proxy::new(
        generation,
        Arc::clone(&pool),
        access_log,
        plugins,
    ));

    background.extend([
        tokio::spawn(
            resolver
                .clone()
                .refresh_loop(farms, settings.resolve_interval),
        ),
        tokio::spawn(Arc::clone(&pool).reap_loop()),
    ]);

    let (tx, rx) = watch::channel(false);
    let accept = Listeners::start(Arc::clone(&proxy), &config, listeners, rx.clone())
        .map_err(|(listener, message)| StartError::Tls { listener, message })?;
    let config_file = Some(std::path::PathBuf::from(&config.origin))
        .filter(|p| config.origin != crate::config::DEFAULT_CONFIG_NAME && p.is_file());
    let reloader = crate::reload::Reloader::new(
        config_file,
        Arc::clone(&proxy),
        Arc::clone(&health),
        resolver.clone(),
        Arc::clone(&accept),
    );
    match reloader.watch() {
        Ok(Some(task)) => background.push(task),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP or the admin API")
        }
    }
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut admin_addr = None;
    if let Some(bind) = config.admin.bind {
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|source| StartError::Bind {
                what: "the admin listener".into(),
                addr: bind,
                source,
            })?;
        admin_addr = listener.local_addr().ok();
        let admin = Arc::new(crate::admin::Admin {
            proxy: Arc::clone(&proxy),
            health: Arc::clone(&health),
            resolver: resolver.clone(),
            reloader: Arc::clone(&reloader),
            token: config.admin.token.clone(),
            ready: Arc::clone(&ready),
        });
        background.push(tokio::spawn(crate::admin::serve(
            admin,
            listener,
            rx.clone(),
        )));
        if let Some(a) = admin_addr {
            tracing::info!(addr = %a, "admin listener");
        }
    }
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(Running {
        proxy,
        resolver,
        health,
        reloader,
        admin: admin_addr,
        ready,
        listeners: accept,
        samples: Vec::new(),
        shutdown: tx,
        background,
    })
}

/// Names in rule and farm bindings that no file in the plugin folder provides: they are skipped
/// until such a file arrives, which is worth a warning at start.
fn warn_missing_plugins(config: &Config, runtime: &Runtime) {
    use crate::config::Binding;
    let loaded = runtime.plugins();
    let bindings = config
        .rules
        .iter()
        .flat_map(|r| {
            [
                (&r.name, "router_plugins", &r.router),
                (&r.name, "link_translation_plugins", &r.link_translation),
            ]
        })
        .chain(config.farms.iter().flat_map(|f| {
            [
                (&f.name, "affinity_plugins", &f.affinity),
                (&f.name, "health_evaluation_plugins", &f.health_evaluation),
            ]
        }));
    for (owner, hook, binding) in bindings {
        if let Binding::Named(names) = binding {
            for name in names {
                if !loaded.plugins.iter().any(|p| &p.name == name) {
                    tracing::warn!(
                        owner = %owner, hook, plugin = %name,
                        "bound plugin is not in the plugin folder; it is skipped until {name}.wasm arrives"
                    );
                }
            }
        }
    }
}
