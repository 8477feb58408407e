//! Validation: the raw structs of one file -> an immutable [`Config`], one section at a time, in
//! the order the sections depend on each other (rules name listeners and farms; the admin
//! listener must not take a listener's or a sample server's address). The first problem found
//! is the error; nothing is validated further.
//!
//! Each section has its own file here. Validators read the file, the certificate and CA files it
//! names, plugin directories and environment variables the config points at; they must not open
//! connections, resolve names or start anything.

mod admin;
mod farms;
mod health;
mod hosts;
mod listeners;
mod plugins;
mod proxy;
mod rewrite;
mod rules;
mod sample_servers;

use std::collections::HashSet;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

pub use farms::{AFFINITY_MODES, BALANCE_ALGORITHMS};

use super::error::Source;
use super::parse::duration;
use super::raw::{Dur, RawConfig};
use super::{Config, ConfigError, DEFAULT_CONFIG_NAME};

pub(super) struct Validator<'a> {
    pub(super) source: Source<'a>,
    /// Plugin names met in bindings so far, with their places.
    pub(super) references: std::cell::RefCell<Vec<super::PluginReference>>,
}

impl Validator<'_> {
    pub(super) fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        self.version(&raw.version)?;
        let proxy = self.proxy(raw.proxy)?;
        let access_log = proxy::access_log(raw.access_log);
        let listeners = self.listeners(&raw.listeners)?;
        let hosts = self.hosts(&raw.hosts)?;
        let farms = self.farms(&raw.farms)?;
        let rules = self.rules(&raw.rules, &listeners, &farms)?;
        let mut binds = sample_servers::listener_binds(&listeners);
        let sample_servers = self.sample_servers(&raw.sample_servers, &mut binds)?;
        let plugins = self.plugins(raw.plugins)?;
        let admin = self.admin(raw.admin, &binds)?;
        Ok(Config {
            origin: self.source.origin.to_string(),
            plugins,
            admin,
            proxy,
            access_log,
            listeners,
            hosts,
            rules,
            farms,
            sample_servers,
        })
    }

    fn version(&self, version: &Option<Spanned<u32>>) -> Result<(), ConfigError> {
        if let Some(v) = version
            && *v.get_ref() != 1
        {
            return Err(self.source.error(
                v,
                "version",
                format!(
                    "config version {} is not known; this farmgate reads version 1",
                    v.get_ref()
                ),
            ));
        }
        Ok(())
    }

    /// A name of a listener, farm, rule, sample server or plugin: its characters, and that no
    /// other in `seen` has it.
    fn check_name(
        &self,
        name: &Spanned<String>,
        key: &str,
        what: &str,
        seen: &mut HashSet<String>,
    ) -> Result<(), ConfigError> {
        let n = name.get_ref();
        if n.is_empty()
            || !n
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(self.source.error(
                name,
                key,
                format!("{what} name \"{n}\" may use only letters, digits, '-', '_' and '.'"),
            ));
        }
        if !seen.insert(n.clone()) {
            return Err(self.source.error(
                name,
                key,
                format!("there are two {what}s named \"{n}\""),
            ));
        }
        Ok(())
    }

    /// A duration that must be at least 1ms; `default` when the key is absent.
    fn positive_duration(
        &self,
        d: &Option<Spanned<Dur>>,
        key: impl Into<String>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        if let Some(t) = d
            && t.get_ref().0 < Duration::from_millis(1)
        {
            return Err(self.source.error(t, key, "must be at least 1ms"));
        }
        Ok(duration(d, default))
    }

    /// A number that must be at least `min`; `default` when the key is absent.
    fn at_least<T: Copy + PartialOrd + Display>(
        &self,
        n: &Option<Spanned<T>>,
        key: impl Into<String>,
        min: T,
        default: T,
    ) -> Result<T, ConfigError> {
        match n {
            Some(n) if *n.get_ref() < min => {
                Err(self.source.error(n, key, format!("must be at least {min}")))
            }
            Some(n) => Ok(*n.get_ref()),
            None => Ok(default),
        }
    }

    /// The directory relative paths in the config are taken from.
    fn config_dir(&self) -> PathBuf {
        Path::new(self.source.origin)
            .parent()
            .filter(|p| self.source.origin != DEFAULT_CONFIG_NAME && !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }
}
