//! farmgate: a reverse proxy for web server farms whose policies are WebAssembly plugins.
//!
//! The binary (`main.rs`) only parses the command line and calls [`server::start`]. Each module
//! owns one concern and says at its top what it must not do; `ARCHITECTURE.md` has the map.

pub mod access_log;
pub mod admin;
pub mod affinity;
pub mod body;
pub mod bridge;
pub mod builtin;
pub mod config;
pub mod error;
pub mod farm;
pub mod framing;
pub mod headers;
pub mod health;
pub mod https;
pub mod listeners;
pub mod names;
pub mod pem;
pub mod plugin_tool;
pub mod plugins;
pub mod policy;
pub mod pool;
pub mod proxy;
pub mod reload;
pub mod resolve;
pub mod routing;
pub mod sample;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod translate;
pub mod upgrade;

pub use config::{Config, ConfigError};
pub use server::{Running, StartError, start};
