//! farmgate: a reverse proxy for web server farms whose policies are WebAssembly plugins.
//!
//! The binary (`main.rs`) only parses the command line and calls [`start`]. Each module owns one
//! concern and says at its top what it must not do; `ARCHITECTURE.md` has the map.
//!
//! The public API is what the binary, the integration tests, the benches and the fuzz targets
//! need: starting the proxy ([`start`], [`Running`]), the config ([`config`]), farms and their
//! members ([`farm`]), the plugin runtime ([`plugins`], [`builtin`], [`plugin_tool`]), and the
//! pure parts worth testing and measuring on their own ([`routing`], [`headers`], [`framing`],
//! [`translate`], [`affinity`], [`tls`]'s crypto provider, [`telemetry`]). Everything else is
//! private to the crate.

mod access_log;
mod admin;
pub mod affinity;
mod body;
mod bridge;
pub mod builtin;
pub mod config;
mod error;
pub mod farm;
pub mod framing;
mod generation;
pub mod headers;
mod health;
mod https;
mod listeners;
mod names;
mod pem;
pub mod plugin_tool;
pub mod plugins;
mod policy;
mod pool;
mod preface;
mod proxy;
mod reload;
mod resolve;
pub mod routing;
mod sample;
mod server;
pub mod telemetry;
pub mod tls;
pub mod translate;
mod upgrade;
mod upstream;
pub mod views;

pub use config::{Config, ConfigError};
pub use server::{Running, StartError, start};
