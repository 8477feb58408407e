//! Logging into farmgate's log under the plugin's name (standard error when run natively, as in
//! unit tests), plus the host's clock and randomness.

/// How important a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Writes one log line.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        use crate::bindings::farmgate::plugin::host::{LogLevel, log};
        let level = match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        log(level, message);
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

pub fn trace(message: &str) {
    log(Level::Trace, message)
}
pub fn debug(message: &str) {
    log(Level::Debug, message)
}
pub fn info(message: &str) {
    log(Level::Info, message)
}
pub fn warn(message: &str) {
    log(Level::Warn, message)
}
pub fn error(message: &str) {
    log(Level::Error, message)
}

/// Nanoseconds on a monotonic clock (from an arbitrary start).
pub fn now_ns() -> u64 {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::farmgate::plugin::host::monotonic_now_ns()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::sync::OnceLock;
        static START: OnceLock<std::time::Instant> = OnceLock::new();
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_nanos() as u64
    }
}

/// A random number from the host.
pub fn random_u64() -> u64 {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::farmgate::plugin::host::random_u64()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::hash::{BuildHasher, RandomState};
        RandomState::new().hash_one(now_ns())
    }
}

/// Sends panic messages to farmgate's log (the plugin's standard error goes nowhere). Called by
/// [`export_plugin!`](crate::export_plugin) when an instance starts.
pub fn route_panics_to_host_log() {
    #[cfg(target_arch = "wasm32")]
    std::panic::set_hook(Box::new(|info| error(&format!("plugin panicked: {info}"))));
}
