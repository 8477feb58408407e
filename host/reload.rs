//! Config hot reload: the file is read, parsed and validated completely, then a new
//! [`Generation`] is built and swapped in at once. Requests in flight finish on the generation
//! they loaded; members that persist keep their runtime state (drain, removal, health,
//! counters); the built-in plugins get their new settings; the verifiers restart on the new
//! farms. A file that does not validate is refused with its file, line and key, and the running
//! config keeps serving.
//!
//! Triggers: the config file changing on disk (watched, debounced), SIGHUP (the binary), and
//! `POST /api/reload` on the admin listener. Reloads are serialised.
//!
//! Listeners are added, removed and restarted without touching the others (see `listeners`);
//! a listener address that cannot be bound refuses the whole reload. What a reload cannot
//! change while running is refused with a clear message (sample servers, the admin listener,
//! the plugin folder, worker threads, the access log).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use crate::config::Config;
use crate::generation::Generation;
use crate::health::HealthChecker;
use crate::listeners::Listeners;
use crate::proxy::Proxy;
use crate::resolve::Resolver;

/// Quiet time after the last file event before the config is read (editors write in steps).
const DEBOUNCE: Duration = Duration::from_millis(200);

/// What a reload that was applied did to the plugins, beside the config itself.
#[derive(Debug, Clone, Default)]
pub struct ReloadReport {
    /// The config's one-line summary and the listeners' changes.
    pub summary: String,
    /// Plugins (re)loaded: new files, new content or new settings: (name, version).
    pub plugins_loaded: Vec<(String, String)>,
    /// Plugins whose file or new settings were refused, and why; each keeps its previous
    /// version, if it had one, with its previous settings.
    pub plugins_refused: Vec<crate::plugins::Rejected>,
}

impl ReloadReport {
    /// The summary, and a sentence for each plugin refused.
    pub fn text(&self) -> String {
        let mut text = self.summary.clone();
        for r in &self.plugins_refused {
            text.push_str(&format!(
                "; plugin {} refused ({}): {}",
                r.plugin, r.file, r.reason
            ));
        }
        text
    }
}

/// Applies new configs to a running farmgate.
pub struct Reloader {
    /// The config file; `None` when farmgate runs on the embedded default.
    pub path: Option<PathBuf>,
    proxy: Arc<Proxy>,
    health: Arc<HealthChecker>,
    resolver: Resolver,
    listeners: Arc<Listeners>,
    /// One reload at a time.
    lock: tokio::sync::Mutex<()>,
    /// Reloads applied, and refused.
    pub applied: AtomicU64,
    pub refused: AtomicU64,
}

impl Reloader {
    pub fn new(
        path: Option<PathBuf>,
        proxy: Arc<Proxy>,
        health: Arc<HealthChecker>,
        resolver: Resolver,
        listeners: Arc<Listeners>,
    ) -> Arc<Reloader> {
        Arc::new(Reloader {
            path,
            proxy,
            health,
            resolver,
            listeners,
            lock: tokio::sync::Mutex::new(()),
            applied: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// Reads the config file again and applies it; on any error the running config stays and
    /// the error (file:line:col: key: message) is logged and returned. The text returned says
    /// which plugins refused their new settings, if any did.
    pub async fn reload(&self) -> Result<String, String> {
        self.reload_report().await.map(|r| r.text())
    }

    /// [`Reloader::reload`], saying what happened to each plugin.
    pub async fn reload_report(&self) -> Result<ReloadReport, String> {
        let _one = self.lock.lock().await;
        let result = match &self.path {
            None => Err(
                "farmgate runs on its embedded default config; there is no file to reload"
                    .to_string(),
            ),
            Some(path) => match Config::load(path) {
                Ok(config) => self.apply(config).await,
                Err(e) => Err(e.to_string()),
            },
        };
        match &result {
            Ok(report) => {
                self.applied.fetch_add(1, Ordering::Relaxed);
                tracing::info!("config reloaded: {}", report.summary);
                for r in &report.plugins_refused {
                    tracing::error!(
                        plugin = %r.plugin, file = %r.file, reason = %r.reason,
                        "config reloaded, but this plugin refused its file or settings; its previous version (if any) keeps running"
                    );
                }
            }
            Err(e) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "config reload refused; the running config stays");
            }
        }
        result
    }

    async fn apply(&self, mut config: Config) -> Result<ReloadReport, String> {
        let old = self.proxy.generation();
        let before = &old.config;
        let unchanged = |what: &str, same: bool| {
            if same {
                Ok(())
            } else {
                Err(format!(
                    "{}: {what} changed, which needs a restart; nothing was applied",
                    config.origin
                ))
            }
        };
        unchanged(
            "sample_servers",
            config
                .sample_servers
                .iter()
                .map(|s| (&s.name, s.bind))
                .eq(before.sample_servers.iter().map(|s| (&s.name, s.bind))),
        )?;
        unchanged(
            "admin",
            config.admin.bind == before.admin.bind && config.admin.token == before.admin.token,
        )?;
        unchanged("plugins.dir", config.plugins.dir == before.plugins.dir)?;
        unchanged(
            "proxy.worker_threads",
            config.proxy.worker_threads == before.proxy.worker_threads,
        )?;
        unchanged(
            "access_log",
            config.access_log.path == before.access_log.path
                && config.access_log.format == before.access_log.format,
        )?;
        // A key made up at start stays: a new random key would orphan every affinity cookie.
        if config.proxy.affinity_key.source == "random"
            && before.proxy.affinity_key.source == "random"
        {
            config.proxy.affinity_key = before.proxy.affinity_key.clone();
        }
        // Bind what is new and load its certificates first: if that fails, nothing changed.
        let listeners = self.listeners.plan(&config).await?;
        let config = Arc::new(config);
        let runtime = &self.proxy.plugins;
        runtime.set_settings(config.plugins.clone());
        crate::builtin::install(runtime, &config).await?;
        self.resolver.set_hosts(config.hosts.clone());
        let generation = Generation::carrying(Arc::clone(&config), Some(&old));
        self.resolver.resolve_farms(&generation.farms).await;
        let farms = generation.farms.clone();
        self.health.replace(&config, &farms)?;
        self.proxy.install(generation);
        // New listeners start once the generation that routes them is in place.
        let listeners = self.listeners.apply(listeners).await;
        let scan = match &config.plugins.dir {
            Some(dir) => crate::plugins::rescan(runtime, dir).await,
            None => Default::default(),
        };
        Ok(ReloadReport {
            summary: format!(
                "{}; {listeners}",
                config.summary().lines().next().unwrap_or_default()
            ),
            plugins_loaded: scan.loaded,
            plugins_refused: scan.refused,
        })
    }

    /// Watches the config file (its directory, since editors replace files by renaming) and
    /// reloads after changes settle. Ends when the returned task is aborted.
    pub fn watch(self: &Arc<Self>) -> std::io::Result<Option<tokio::task::JoinHandle<()>>> {
        let Some(path) = self.path.clone() else {
            return Ok(None);
        };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let name = path.file_name().map(|n| n.to_os_string());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(e) = event
                    && !matches!(e.kind, notify::EventKind::Access(_))
                    && e.paths
                        .iter()
                        .any(|p| p.file_name().map(|n| n.to_os_string()) == name)
                {
                    let _ = tx.send(());
                }
            })
            .map_err(std::io::Error::other)?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(std::io::Error::other)?;
        let me = Arc::clone(self);
        Ok(Some(tokio::spawn(async move {
            let _watcher = watcher;
            while rx.recv().await.is_some() {
                while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
                let _ = me.reload().await;
            }
        })))
    }
}
