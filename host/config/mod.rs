//! Configuration: file -> raw serde structs ([`raw`]) -> validation -> an immutable [`Config`].
//!
//! This module owns the meaning of every key and every default ([`defaults`]). It does no network
//! I/O: names are checked for form here and resolved by `resolve`. A [`ConfigError`]
//! always names the file, the line and column, the key, and what is wrong.
//!
//! Where things are: the validated model in `model.rs`, errors and source positions in
//! `error.rs`, general parsing helpers in `parse.rs`, and one validator per section of the file
//! under `validate/`. `config` must not import `routing` or `tls` (they import it): host-name
//! helpers come from [`crate::names`] and PEM loading from [`crate::pem`].

pub mod defaults;
mod error;
mod model;
mod parse;
pub mod raw;
mod validate;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use error::ConfigError;
pub use model::{
    AccessLogSettings, AdminSettings, AffinityKey, Binding, CaBundle, CertificateConfig, Check,
    Config, FarmConfig, HealthSettings, IpNet, LinkSettings, ListenerConfig, MemberConfig,
    PluginConfig, PluginReference, PluginSettings, ProxySettings, RewriteRule, RuleConfig,
    RuleHttps, SampleServerConfig, TlsVerify, UpstreamSettings,
};
pub use parse::parse_status_ranges;
pub use raw::AccessLogFormat;
pub use validate::{AFFINITY_MODES, BALANCE_ALGORITHMS};

use error::{Source, toml_message};
use raw::RawConfig;
use validate::Validator;

/// The default config, embedded so `farmgate run` works with no file at all.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/farmgate.toml");

/// Name under which the embedded default config reports errors.
pub const DEFAULT_CONFIG_NAME: &str = "<embedded config/farmgate.toml>";

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: origin.clone(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read the config file: {e}"),
        })?;
        Config::parse(&text, &origin)
    }

    /// The embedded default config.
    pub fn embedded_default() -> Result<Config, ConfigError> {
        Config::parse(DEFAULT_CONFIG, DEFAULT_CONFIG_NAME)
    }

    /// Parses and validates config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let source = Source { text, origin };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| source.line_col(s.start)).unwrap_or((1, 1));
            ConfigError {
                file: origin.to_string(),
                line,
                column,
                key: source.table_at(line),
                message: toml_message(&e),
            }
        })?;
        Validator {
            source,
            references: Default::default(),
        }
        .validate(raw)
    }
}
