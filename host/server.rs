//! Starting and stopping: binds listeners (or takes already-bound ones), starts the sample
//! members, builds the first generation, runs the accept loops, and shuts down gracefully (stop
//! accepting, let in-flight requests finish up to the grace period, then return).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::access_log::AccessLog;
use crate::config::Config;
use crate::plugins::{Runtime, watch_folder};
use crate::pool::{Pool, PoolSettings};
use crate::proxy::{ConnInfo, Generation, Proxy};
use crate::resolve::Resolver;
use crate::tls::CertStore;

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
    listeners: Vec<(String, SocketAddr)>,
    samples: Vec<(String, SocketAddr)>,
    shutdown: watch::Sender<bool>,
    serving: JoinHandle<()>,
    /// Resolver refresh, pool reaper and sample members: stopped after the listeners drain.
    background: Vec<JoinHandle<()>>,
}

impl Running {
    /// The bound address of a listener (useful when the config asked for port 0).
    pub fn addr(&self, listener: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == listener)
            .map(|(_, a)| *a)
    }

    pub fn listeners(&self) -> &[(String, SocketAddr)] {
        &self.listeners
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
        let _ = self.serving.await;
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
    let mut tls = Vec::new();
    for (i, _) in &listeners {
        let l = &config.listeners[*i];
        if !l.is_tls() {
            tls.push(None);
            continue;
        }
        let err = |message: String| StartError::Tls {
            listener: l.name.clone(),
            message,
        };
        let store = Arc::new(CertStore::load(&l.name, &l.certificates).map_err(err)?);
        let watcher = store
            .watch()
            .map_err(|e| err(format!("cannot watch the certificate files: {e}")))?;
        background.push(watcher);
        tls.push(Some(store.acceptor(l.http2)));
    }
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

    let mut addrs = Vec::new();
    for (i, l) in &listeners {
        let addr = l.local_addr().map_err(|source| StartError::Bind {
            what: format!("listener \"{}\"", config.listeners[*i].name),
            addr: config.listeners[*i].bind,
            source,
        })?;
        addrs.push((config.listeners[*i].name.clone(), addr));
    }
    let config_file = Some(std::path::PathBuf::from(&config.origin))
        .filter(|p| config.origin != crate::config::DEFAULT_CONFIG_NAME && p.is_file());
    let reloader = crate::reload::Reloader::new(
        config_file,
        Arc::clone(&proxy),
        Arc::clone(&health),
        resolver.clone(),
    );
    match reloader.watch() {
        Ok(Some(task)) => background.push(task),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP or the admin API")
        }
    }
    let (tx, rx) = watch::channel(false);
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
    let listeners = listeners
        .into_iter()
        .zip(tls)
        .map(|((i, l), tls)| Bound {
            index: i,
            listener: l,
            tls,
            http2: config.listeners[i].http2,
            handshake_timeout: settings.tls_handshake_timeout,
        })
        .collect();
    let serving = tokio::spawn(serve(
        Arc::clone(&proxy),
        listeners,
        rx,
        settings.shutdown_grace,
    ));
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(Running {
        proxy,
        resolver,
        health,
        reloader,
        admin: admin_addr,
        ready,
        listeners: addrs,
        samples: Vec::new(),
        shutdown: tx,
        serving,
        background,
    })
}

/// A bound listener and how its connections are served.
pub struct Bound {
    /// Index into the config's listeners.
    pub index: usize,
    pub listener: TcpListener,
    /// TLS listeners: the acceptor (its certificates are reloaded underneath it).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Whether HTTP/2 is spoken (ALPN over TLS, prior knowledge on plain connections).
    pub http2: bool,
    pub handshake_timeout: Duration,
}

/// Runs the accept loops until `shutdown` turns true, then drains connections for up to `grace`.
pub async fn serve(
    proxy: Arc<Proxy>,
    listeners: Vec<Bound>,
    shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    // One budget of client connections shared by every listener.
    let connections = Arc::new(tokio::sync::Semaphore::new(
        proxy.generation().config.proxy.max_connections,
    ));
    let loops: Vec<JoinHandle<()>> = listeners
        .into_iter()
        .map(|bound| {
            tokio::spawn(accept_loop(
                Arc::clone(&proxy),
                Arc::clone(&connections),
                bound,
                shutdown.clone(),
                grace,
            ))
        })
        .collect();
    for l in loops {
        let _ = l.await;
    }
}

async fn accept_loop(
    proxy: Arc<Proxy>,
    connections: Arc<tokio::sync::Semaphore>,
    bound: Bound,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let Bound {
        index,
        listener,
        tls,
        http2,
        handshake_timeout,
    } = bound;
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let proxy_settings = proxy.generation().config.proxy.clone();
    // Limits on what a client may send: the head within header_read_timeout (slowloris, and the
    // keep-alive idle time, as the clock starts when the connection waits for a request), at
    // most max_headers headers and max_header_bytes bytes of head (431 beyond either).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(proxy_settings.header_read_timeout)
        .max_headers(proxy_settings.max_headers)
        .max_buf_size(proxy_settings.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(proxy_settings.max_header_bytes).unwrap_or(u32::MAX));
    if !http2 {
        builder = builder.http1_only();
    }
    loop {
        // At max_connections, wait for a connection to close before accepting another: the
        // kernel's queue holds the rest, and file descriptors never run out.
        let permit = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, client) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors or a connection reset before accept: back off briefly
                // instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let info = Arc::new(ConnInfo {
            listener: index,
            client,
            client_addr: crate::headers::ClientAddr::new(client.ip()),
            proto: if tls.is_some() { "https" } else { "http" },
        });
        let proxy = Arc::clone(&proxy);
        let svc = service_fn(move |req| {
            let proxy = Arc::clone(&proxy);
            let info = Arc::clone(&info);
            async move { Ok::<_, Infallible>(proxy.handle(req, &info).await) }
        });
        let watcher = graceful.watcher();
        let Some(acceptor) = &tls else {
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .into_owned();
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(%client, error = %e, "client connection ended with an error");
                }
            });
            continue;
        };
        // The TLS handshake runs on the connection's own task, bounded, so a slow client never
        // holds up the accept loop.
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%client, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%client, timeout = ?handshake_timeout, "TLS handshake timed out");
                    return;
                }
            };
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%client, error = %e, "client connection ended with an error");
            }
        });
    }
    drop(listener);
    let open = graceful.count();
    if open > 0 {
        tracing::info!(connections = open, ?grace, "draining client connections");
    }
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(?grace, "grace period over; closing remaining connections");
    }
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
