//! `[plugins]` and the plugin bindings of rules and farms: the watched folder, the code cache,
//! call deadline and memory limit, and each plugin's `[plugins.config.NAME]` (fail-closed,
//! settings, what its WASI may reach).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::Validator;
use crate::config::{
    Binding, ConfigError, PluginConfig, PluginReference, PluginSettings, defaults, raw,
};

impl Validator<'_> {
    pub(super) fn plugins(&self, raw: raw::RawPlugins) -> Result<PluginSettings, ConfigError> {
        let base = self.config_dir();
        let in_base = |d: Option<String>| {
            d.filter(|d| !d.trim().is_empty())
                .map(|d| base.join(d.trim()))
        };
        let dir = in_base(raw.dir);
        let cache_dir = in_base(raw.cache_dir);
        let memory_limit_mb = self.at_least(
            &raw.memory_limit_mb,
            "plugins.memory_limit_mb",
            1,
            defaults::PLUGIN_MEMORY_LIMIT_MB,
        )?;
        let call_timeout = match &raw.call_timeout {
            Some(t)
                if t.get_ref().0 < Duration::from_millis(1)
                    || t.get_ref().0 > defaults::PLUGIN_CALL_TIMEOUT_MAX =>
            {
                return Err(self.source.error(
                    t,
                    "plugins.call_timeout",
                    format!(
                        "must be between 1ms and {:?}",
                        defaults::PLUGIN_CALL_TIMEOUT_MAX
                    ),
                ));
            }
            Some(t) => t.get_ref().0,
            None => defaults::PLUGIN_CALL_TIMEOUT,
        };
        let mut config = HashMap::new();
        let mut references = self.references.take();
        for (name, c) in raw.config {
            let (line, column) = self.table_header(&name);
            references.push(PluginReference {
                name: name.clone(),
                key: format!("plugins.config.{name}"),
                line,
                column,
                settings: true,
            });
            let plugin = self.plugin_config(&name, c, &base)?;
            config.insert(name, plugin);
        }
        Ok(PluginSettings {
            dir,
            call_timeout,
            memory_limit_bytes: memory_limit_mb as usize * 1024 * 1024,
            failures_before_disable: raw
                .failures_before_disable
                .unwrap_or(defaults::PLUGIN_FAILURES_BEFORE_DISABLE)
                .max(1),
            cache_dir,
            config,
            references,
        })
    }

    /// Where `[plugins.config.NAME]` (or a dotted key or inline table for it) is written: the
    /// line and column of NAME, or (0, 0). The raw table's keys carry no spans of their own.
    fn table_header(&self, name: &str) -> (usize, usize) {
        let forms = [
            format!("plugins.config.{name}"),
            format!("plugins.config.\"{name}\""),
            format!("config.{name}"),
            format!("config.\"{name}\""),
        ];
        for (i, line) in self.source.text.lines().enumerate() {
            let code = line.split('#').next().unwrap_or("");
            for form in &forms {
                if let Some(at) = code.find(form.as_str()) {
                    let end = at + form.len();
                    // The name must end there: `config.api` is not `config.apiv2`.
                    if code[end..]
                        .chars()
                        .next()
                        .is_none_or(|c| matches!(c, ']' | '.' | ' ' | '=' | '\t'))
                    {
                        let column = end - name.len() - usize::from(form.ends_with('"')) + 1;
                        return (i + 1, column);
                    }
                }
            }
        }
        (0, 0)
    }

    /// One `[plugins.config.NAME]`; its directories are taken from `base`.
    fn plugin_config(
        &self,
        name: &str,
        c: raw::RawPluginConfig,
        base: &Path,
    ) -> Result<PluginConfig, ConfigError> {
        let mut read_only_dirs = Vec::new();
        for d in &c.read_only_dirs {
            let path = base.join(d.get_ref());
            if !path.is_dir() {
                return Err(self.source.error(
                    d,
                    format!("plugins.config.{name}.read_only_dirs"),
                    format!("{} is not a directory", path.display()),
                ));
            }
            read_only_dirs.push(path);
        }
        let settings_json = match c.settings {
            Some(t) => serde_json::to_string(&t).unwrap_or_else(|_| "{}".into()),
            None => "{}".into(),
        };
        Ok(PluginConfig {
            fail_closed: c.fail_closed.unwrap_or(defaults::PLUGIN_FAIL_CLOSED),
            call_timeout: None,
            settings_json,
            env: c.env.into_iter().collect(),
            read_only_dirs,
            network: c.network.unwrap_or(defaults::PLUGIN_NETWORK),
        })
    }

    /// The plugins bound to a hook of a rule or farm: the names listed (each once), or every
    /// plugin in the folder when the key is absent.
    pub(super) fn binding(
        &self,
        names: &Option<Vec<Spanned<String>>>,
        key: &str,
    ) -> Result<Binding, ConfigError> {
        let Some(names) = names else {
            return Ok(Binding::Folder);
        };
        let mut seen = HashSet::new();
        for n in names {
            self.check_name(n, key, "plugin", &mut seen)?;
            let (line, column) = self.source.line_col(n.span().start);
            self.references.borrow_mut().push(PluginReference {
                name: n.get_ref().clone(),
                key: key.to_string(),
                line,
                column,
                settings: false,
            });
        }
        Ok(Binding::Named(
            names.iter().map(|n| n.get_ref().clone()).collect(),
        ))
    }
}
