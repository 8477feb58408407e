//! The watched plugin folder: every `*.wasm` in it is a plugin named by its file name. Changes
//! (add, replace by write-then-rename, remove) are debounced, then the folder is rescanned: files
//! whose content hash and settings are unchanged keep their loaded version, new or changed files
//! are compiled and smoke-tested off the async threads (new settings alone reuse the compiled
//! code), and the new set is swapped in whole. A file that fails to load is logged with its
//! reason and the previous version of that plugin stays; the same bytes with the same settings
//! are not tried again, but other settings are another try.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{Plugin, PluginSet, Runtime, hex};
use crate::config::PluginConfig;

/// A plugin file whose content, with the settings it was given, was refused.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub file: String,
    pub reason: String,
    /// The plugin's name (the file stem); empty when the folder itself could not be read.
    pub plugin: String,
    /// SHA-256 of the content, hex; empty when it could not be read.
    pub hash: String,
    /// The settings it was refused with; `None` when it was not loaded at all.
    pub config: Option<PluginConfig>,
}

/// What one scan of the folder changed.
#[derive(Debug, Clone, Default)]
pub struct ScanReport {
    /// Plugins loaded by this scan (new files, new content or new settings): (name, version).
    pub loaded: Vec<(String, String)>,
    /// Plugins unloaded because their file went away.
    pub removed: Vec<String>,
    /// Files refused now (this scan, or earlier with the same content and settings); the
    /// previous version of each, if any, keeps running.
    pub refused: Vec<Rejected>,
}

/// Quiet time after the last file event before the folder is rescanned.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Loads the folder once, then keeps watching it until the returned task is dropped or aborted.
/// The folder is created when missing.
pub async fn watch_folder(
    runtime: Arc<Runtime>,
    dir: PathBuf,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    if !dir.exists() {
        std::fs::create_dir_all(&dir)?;
        tracing::info!(dir = %dir.display(), "created the plugin folder");
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reading the files (as the rescan does) raises access events; only changes count.
        if let Ok(e) = event
            && !matches!(e.kind, notify::EventKind::Access(_))
        {
            let _ = tx.send(());
        }
    })
    .map_err(std::io::Error::other)?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(std::io::Error::other)?;
    rescan(&runtime, &dir).await;
    tracing::info!(dir = %dir.display(), plugins = runtime.plugins().plugins.len(), "watching the plugin folder");
    Ok(tokio::spawn(async move {
        let _watcher = watcher;
        while rx.recv().await.is_some() {
            // Debounce: wait until events stop for a moment.
            while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
            rescan(&runtime, &dir).await;
        }
    }))
}

/// Brings the loaded set in line with the folder, and says what changed.
pub async fn rescan(runtime: &Arc<Runtime>, dir: &Path) -> ScanReport {
    let runtime2 = Arc::clone(runtime);
    let dir = dir.to_path_buf();
    // Reading, hashing and compiling are blocking work.
    let result = tokio::task::spawn_blocking(move || rescan_blocking(&runtime2, &dir)).await;
    result.unwrap_or_else(|e| {
        tracing::error!(error = %e, "plugin folder rescan failed");
        ScanReport::default()
    })
}

fn rescan_blocking(runtime: &Runtime, dir: &Path) -> ScanReport {
    // One scan at a time: two at once would each install a set made without the other's.
    let _one = runtime.scanning.lock().unwrap_or_else(|p| p.into_inner());
    let current = runtime.plugins();
    let mut report = ScanReport::default();
    let files = match wasm_files(dir) {
        Ok(files) => files,
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "cannot read the plugin folder; keeping the loaded plugins");
            report.refused.push(Rejected {
                file: dir.display().to_string(),
                reason: format!("cannot read the folder: {e}"),
                plugin: String::new(),
                hash: String::new(),
                config: None,
            });
            runtime.scan_done(report.refused.clone());
            return report;
        }
    };

    let mut next: Vec<Arc<Plugin>> = Vec::new();
    let mut changed = false;
    let mut rejected = Vec::new();
    for (name, path) in &files {
        let old = current.plugins.iter().find(|p| &p.name == name);
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot read plugin file");
                rejected.push(Rejected {
                    file: path.display().to_string(),
                    reason: format!("cannot read: {e}"),
                    plugin: name.clone(),
                    hash: String::new(),
                    config: None,
                });
                next.extend(old.cloned());
                continue;
            }
        };
        let hash = hex(&Sha256::digest(&bytes));
        let settings = runtime.settings();
        let config = settings.config.get(name).cloned().unwrap_or_default();
        if let Some(old) = old
            && old.hash == hash
            && old.config == config
        {
            next.push(Arc::clone(old));
            continue;
        }
        let refused = |reason: String| Rejected {
            file: path.display().to_string(),
            reason,
            plugin: name.clone(),
            hash: hash.clone(),
            config: Some(config.clone()),
        };
        // The same bytes with the same settings were refused before: say nothing new, keep
        // what is loaded.
        if let Some(reason) = runtime.rejected_for(name, &hash, &config) {
            rejected.push(refused(reason));
            next.extend(old.cloned());
            continue;
        }
        // New settings for the same bytes reuse the loaded version's compiled code.
        match runtime.load_with(name, path, &bytes, hash.clone(), config.clone()) {
            Ok(plugin) => {
                tracing::info!(
                    plugin = %plugin.name, version = %plugin.short_hash(), hooks = ?plugin.hooks,
                    replaced = old.map(|o| o.short_hash().to_string()),
                    settings_changed = old.is_some_and(|o| o.hash == plugin.hash), "plugin loaded"
                );
                report
                    .loaded
                    .push((plugin.name.clone(), plugin.short_hash().to_string()));
                next.push(plugin);
                changed = true;
            }
            Err(reason) => {
                tracing::error!(
                    file = %path.display(), reason = %reason,
                    kept = old.map(|o| o.short_hash().to_string()), "plugin rejected; the previous version (if any) stays"
                );
                rejected.push(refused(reason));
                next.extend(old.cloned());
            }
        }
    }
    for old in &current.plugins {
        if !files.contains_key(&old.name) {
            tracing::info!(plugin = %old.name, version = %old.short_hash(), "plugin file removed; plugin unloaded");
            report.removed.push(old.name.clone());
            changed = true;
        }
    }
    if changed {
        runtime.install(PluginSet { plugins: next });
    }
    report.refused = rejected.clone();
    runtime.scan_done(rejected);
    report
}

/// The `*.wasm` files in the folder, by plugin name (the file name without `.wasm`).
pub(super) fn wasm_files(dir: &Path) -> std::io::Result<BTreeMap<String, PathBuf>> {
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(dir)?.flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "wasm")
            && path.is_file()
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            files.insert(stem.to_string(), path);
        }
    }
    Ok(files)
}
