//! `farmgate check` for plugins: the plugin folder is loaded as `run` would load it (each file
//! compiled, checked against the contract and started with its settings), and the config's
//! plugin names are held against what loaded: a binding that names no plugin in the folder, a
//! `[plugins.config.NAME]` for a plugin that is not there, and settings a plugin refuses are
//! mistakes with the file and line of the config, like every other.

use super::{Runtime, watch};
use crate::config::{Config, ConfigError};

/// What checking the plugins found: the plugins that loaded (name, hooks) and the mistakes.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub loaded: Vec<(String, Vec<&'static str>)>,
    pub problems: Vec<ConfigError>,
}

/// Loads `config`'s plugin folder with its settings and holds the config's plugin names
/// against it. Blocking (it compiles): call from a blocking thread of a tokio runtime.
pub fn check_plugins(config: &Config) -> CheckReport {
    let mut report = CheckReport::default();
    let settings = &config.plugins;
    let problem = |line: usize, column: usize, key: &str, message: String| ConfigError {
        file: config.origin.clone(),
        line,
        column,
        key: key.to_string(),
        message,
    };
    let Some(dir) = &settings.dir else {
        for r in &settings.references {
            report.problems.push(problem(
                r.line,
                r.column,
                &r.key,
                format!(
                    "names plugin \"{}\", but no plugin folder is configured (plugins.dir)",
                    r.name
                ),
            ));
        }
        return report;
    };
    let runtime = match Runtime::new(settings.clone()) {
        Ok(rt) => rt,
        Err(e) => {
            report
                .problems
                .push(problem(0, 0, "plugins", e.to_string()));
            return report;
        }
    };
    let files = match watch::wasm_files(dir) {
        Ok(files) => files,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
        Err(e) => {
            report.problems.push(problem(
                0,
                0,
                "plugins.dir",
                format!("cannot read the plugin folder {}: {e}", dir.display()),
            ));
            return report;
        }
    };
    let present: Vec<&str> = files.keys().map(String::as_str).collect();
    let there = if present.is_empty() {
        format!("the plugin folder {} holds no .wasm file", dir.display())
    } else {
        format!("plugins in {}: {}", dir.display(), present.join(", "))
    };
    for (name, path) in &files {
        let config = settings.config.get(name).cloned().unwrap_or_default();
        let loaded = std::fs::read(path)
            .map_err(|e| format!("cannot read it: {e}"))
            .and_then(|bytes| {
                let hash = super::hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes));
                runtime.load_with(name, path, &bytes, hash, config)
            });
        match loaded {
            Ok(p) => report.loaded.push((
                name.clone(),
                p.hooks.iter().map(|h| super::hook_name(*h)).collect(),
            )),
            Err(reason) => {
                // Refused settings are the config's mistake, shown where the settings are.
                let at = settings
                    .references
                    .iter()
                    .find(|r| r.settings && &r.name == name && reason.contains("settings"));
                let (line, column, key) = match at {
                    Some(r) => (r.line, r.column, r.key.clone()),
                    None => (0, 0, String::new()),
                };
                report.problems.push(problem(
                    line,
                    column,
                    &key,
                    format!("plugin {} ({}) {reason}", name, path.display()),
                ));
            }
        }
    }
    for r in &settings.references {
        if files.contains_key(&r.name) {
            continue;
        }
        let message = if r.settings {
            format!(
                "settings for plugin \"{}\", which is not in the plugin folder (NAME is the file name without .wasm); {there}",
                r.name
            )
        } else {
            format!(
                "no plugin \"{}\" in the plugin folder (a plugin is named by its file name without .wasm); {there}",
                r.name
            )
        };
        report
            .problems
            .push(problem(r.line, r.column, &r.key, message));
    }
    report
        .problems
        .sort_by_key(|p| (p.line == 0, p.line, p.column));
    report
}
