//! Integration tests: the real proxy and real backends on 127.0.0.1 ephemeral ports, driven by a
//! real HTTP client. One test binary for all of them, to keep build time down.

mod admin;
mod builtins;
mod config_files;
mod examples;
mod failover;
mod faults;
mod forwarding;
mod health;
mod https;
mod layout;
mod lifecycle;
mod limits;
mod plugin_cli;
mod plugin_upkeep;
mod plugins;
mod pool;
mod reload;
mod smuggling;
mod support;
mod tls_support;
mod upgrades;
mod websocket;
