//! Process logging: `tracing` to standard error, human-readable or JSON. `RUST_LOG`, when set,
//! overrides the level given on the command line. Human-readable lines are coloured only when
//! standard error is a terminal: a file or a pipe gets plain text.
//!
//! rustls warns about every ClientHello whose SNI extension is not a host name (an IP address,
//! which RFC 6066 forbids and scanners send all the time, a duplicate or malformed name). Those
//! are the client's doing and change nothing (the name is ignored), so they are logged at debug
//! instead, and the IP-address ones are counted ([`sni_ip_addresses`], a metric).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Where rustls reports a ClientHello's SNI extension it ignored.
const RUSTLS_SNI_TARGET: &str = "rustls::msgs::handshake";

/// ClientHellos that named an IP address as their SNI name, since start.
static SNI_IP_ADDRESSES: AtomicU64 = AtomicU64::new(0);

/// How many ClientHellos named an IP address as their SNI name (ignored, as RFC 6066 asks).
pub fn sni_ip_addresses() -> u64 {
    SNI_IP_ADDRESSES.load(Ordering::Relaxed)
}

/// rustls's warning about an SNI extension it ignored.
fn is_sni_warning(meta: &Metadata<'_>) -> bool {
    *meta.level() == Level::WARN && meta.target() == RUSTLS_SNI_TARGET
}

/// Installs the global subscriber; later calls (tests) are ignored.
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let lines = match format {
        LogFormat::Pretty => lines.boxed(),
        LogFormat::Json => lines.json().flatten_event(true).boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(lines.with_filter(filter_fn(|meta| !is_sni_warning(meta))))
        .with(SniWarnings)
        .try_init();
}

/// Counts rustls's SNI warnings and logs them again at debug.
struct SniWarnings;

impl<S: tracing::Subscriber> Layer<S> for SniWarnings {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() != Level::WARN {
            return;
        }
        // A `log` record (rustls logs through `log`) carries its target as a field; the
        // event's own metadata is the bridge's.
        let mut fields = Fields::default();
        event.record(&mut fields);
        if meta.target() != RUSTLS_SNI_TARGET && fields.log_target != RUSTLS_SNI_TARGET {
            return;
        }
        if fields.message.contains("IP address") {
            SNI_IP_ADDRESSES.fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(target: "farmgate::tls", "ignored the SNI extension of a ClientHello: {}", fields.message);
    }
}

/// The message of an event, and the target of a `log` record.
#[derive(Default)]
struct Fields {
    message: String,
    log_target: String,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "log.target" => self.log_target = format!("{value:?}"),
            _ => {}
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "log.target" => self.log_target = value.to_string(),
            _ => {}
        }
    }
}
