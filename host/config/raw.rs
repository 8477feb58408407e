//! The config file exactly as written: serde structs that refuse unknown keys and keep the byte
//! span of every name and reference, so validation can point at the line that is wrong.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// The top level of `farmgate.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Format version of the file; only 1 exists.
    pub version: Option<Spanned<u32>>,
    #[serde(default)]
    pub proxy: RawProxy,
    #[serde(default)]
    pub access_log: RawAccessLog,
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    /// The static host table: name -> one address or a list of them.
    #[serde(default)]
    pub hosts: BTreeMap<String, Spanned<HostAddresses>>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
    #[serde(default)]
    pub farms: Vec<RawFarm>,
    #[serde(default)]
    pub sample_servers: Vec<RawSampleServer>,
    #[serde(default)]
    pub plugins: RawPlugins,
    #[serde(default)]
    pub admin: RawAdmin,
}

/// `[admin]`: the admin API, metrics and dashboard listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Where the admin listener binds; absent: no admin listener.
    pub bind: Option<Spanned<String>>,
    /// The bearer token, inline (prefer `token_env`).
    pub token: Option<Spanned<String>>,
    /// The environment variable holding the bearer token.
    pub token_env: Option<Spanned<String>>,
}

/// `[plugins]`: the plugin runtime and each plugin's settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlugins {
    /// The watched folder; relative paths are relative to the config file's directory.
    pub dir: Option<String>,
    pub call_timeout: Option<Spanned<Dur>>,
    pub memory_limit_mb: Option<Spanned<u32>>,
    pub failures_before_disable: Option<u32>,
    /// Where compiled plugin code is kept between runs; relative to the config file's directory.
    pub cache_dir: Option<String>,
    /// `[plugins.config.NAME]`, NAME being the file name without `.wasm`.
    #[serde(default)]
    pub config: BTreeMap<String, RawPluginConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPluginConfig {
    /// On a plugin failure, answer 503 instead of going on down the chain.
    pub fail_closed: Option<bool>,
    /// Handed to the plugin (as JSON) when it is instantiated.
    pub settings: Option<toml::Table>,
    /// Environment variables the plugin sees (none by default).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Host directories the plugin may read, visible under the same path (none by default).
    #[serde(default)]
    pub read_only_dirs: Vec<Spanned<String>>,
    /// Whether the plugin may open network connections and look up names (no by default).
    pub network: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    pub connect_timeout: Option<Dur>,
    pub response_timeout: Option<Dur>,
    pub pool_idle_timeout: Option<Dur>,
    pub pool_max_idle_per_peer: Option<usize>,
    pub resolve_interval: Option<Dur>,
    pub shutdown_grace: Option<Dur>,
    pub retry_after: Option<Dur>,
    pub connect_retries: Option<u32>,
    pub via: Option<Spanned<String>>,
    pub worker_threads: Option<usize>,
    /// Time a client has to send a request's head (slowloris).
    pub header_read_timeout: Option<Spanned<Dur>>,
    /// How long a keep-alive connection may wait for its next request.
    pub client_idle_timeout: Option<Spanned<Dur>>,
    /// Largest request head (start line and headers), in bytes; larger -> 431.
    pub max_header_bytes: Option<Spanned<usize>>,
    /// Most headers in a request; more -> 431.
    pub max_headers: Option<Spanned<usize>>,
    /// Client connections open at once; at the limit, accepting waits.
    pub max_connections: Option<Spanned<usize>>,
    /// Peers whose `X-Forwarded-For` is believed: addresses or CIDR blocks.
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
    /// The affinity cookie signing key, inline (prefer `affinity_key_env`).
    pub affinity_key: Option<Spanned<String>>,
    /// The environment variable holding the affinity cookie signing key.
    pub affinity_key_env: Option<Spanned<String>>,
    /// HTTPS: how long a client may take over the TLS handshake.
    pub tls_handshake_timeout: Option<Spanned<Dur>>,
    /// How long an upgraded connection (WebSocket) may stay silent in both directions.
    pub upgrade_idle_timeout: Option<Spanned<Dur>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    pub format: Option<AccessLogFormat>,
    /// `"-"` (standard output) or a file path.
    pub path: Option<String>,
}

/// How access log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// The NCSA combined log format, with the rule, farm, member and duration appended.
    Combined,
    /// One JSON object per line.
    Json,
    /// No access log.
    Off,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Spanned<String>,
    pub bind: Spanned<String>,
    /// HTTPS: offer HTTP/2 (ALPN on TLS, h2c with prior knowledge on plain listeners).
    pub http2: Option<bool>,
    /// HTTPS: the listener's certificates; any makes it a TLS listener.
    #[serde(default)]
    pub certificates: Vec<RawCertificate>,
}

/// One `[[listeners.certificates]]` entry: a PEM chain and its key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    /// PEM file with the certificate first, then any intermediates.
    pub cert: Spanned<String>,
    /// PEM file with the private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: Spanned<String>,
    /// SNI names this certificate answers (exact or `*.domain`); absent: the names in it.
    pub names: Option<Vec<Spanned<String>>>,
    /// Served to clients that send no SNI name, or one no certificate has.
    pub default: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum HostAddresses {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: Spanned<String>,
    /// Listener names; all listeners when absent.
    pub listeners: Option<Vec<Spanned<String>>>,
    /// Host names the clients use: exact, `*.example.com`, or `*` for any.
    pub public_names: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub paths: Vec<Spanned<String>>,
    pub farm: Spanned<String>,
    pub internal_site_name: Option<Spanned<String>>,
    /// Send the client's Host to the members instead of the internal site name.
    pub preserve_host: Option<bool>,
    /// `Upgrade` protocols passed to the members; others are refused.
    pub upgrade_protocols: Option<Vec<Spanned<String>>>,
    /// Router plugins, in order; absent = every router plugin in the watched folder.
    pub router_plugins: Option<Vec<Spanned<String>>>,
    /// Link-translation plugins, in order; absent = every one in the watched folder.
    pub link_translation_plugins: Option<Vec<Spanned<String>>>,
    /// Largest request body accepted, in bytes; larger -> 413.
    pub max_body_bytes: Option<Spanned<u64>>,
    /// Whether responses are link-translated (TMG's "apply link translation to this rule").
    pub translate_links: Option<bool>,
    /// Further `from = to` replacements beside internal site name -> public name.
    #[serde(default)]
    pub link_mappings: BTreeMap<String, Spanned<String>>,
    /// Media types whose bodies are translated.
    pub link_content_types: Option<Vec<Spanned<String>>>,
    /// URL rewrite rules, in order (IIS URL Rewrite style).
    #[serde(default)]
    pub rewrite: Vec<RawRewrite>,
    /// HTTPS: answer plain-HTTP requests with a redirect to HTTPS.
    pub redirect_to_https: Option<bool>,
    /// HTTPS: the port in those redirects.
    pub https_port: Option<Spanned<u16>>,
    /// HTTPS: add Strict-Transport-Security to HTTPS responses.
    pub hsts: Option<bool>,
    pub hsts_max_age: Option<Spanned<Dur>>,
    pub hsts_include_subdomains: Option<bool>,
}

/// One `[[rules.rewrite]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRewrite {
    pub name: Option<String>,
    /// Regex on the request's host (port removed).
    pub host: Option<Spanned<String>>,
    /// Regex on the request's path (query excluded).
    pub path: Option<Spanned<String>>,
    pub ignore_case: Option<bool>,
    pub action: Spanned<String>,
    pub url: Option<Spanned<String>>,
    pub append_query: Option<bool>,
    pub farm: Option<Spanned<String>>,
    pub status: Option<Spanned<u16>>,
    pub body: Option<String>,
    pub content_type: Option<Spanned<String>>,
    #[serde(default)]
    pub set_headers: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub remove_headers: Vec<Spanned<String>>,
    pub stop: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFarm {
    pub name: Spanned<String>,
    pub members: Spanned<Vec<RawMember>>,
    /// Affinity plugins, in order; absent = every affinity plugin in the watched folder.
    pub affinity_plugins: Option<Vec<Spanned<String>>>,
    /// Health-evaluation plugins, in order; absent = every one in the watched folder.
    pub health_evaluation_plugins: Option<Vec<Spanned<String>>>,
    /// The load-balancing algorithm.
    pub balance: Option<Spanned<String>>,
    /// With `balance = "hash"`: what is hashed.
    pub hash_on: Option<Spanned<String>>,
    /// `none`, `cookie` or `client-ip`.
    pub affinity: Option<Spanned<String>>,
    /// Name of the affinity cookie.
    pub affinity_cookie: Option<Spanned<String>>,
    #[serde(default)]
    pub health: RawHealth,
    /// HTTPS bridging: `http` or `https` to the members.
    pub scheme: Option<Spanned<String>>,
    /// HTTP/2 to the members.
    pub http2: Option<bool>,
    /// HTTPS bridging: `member-name`, `internal-site-name` or `none`.
    pub tls_verify: Option<Spanned<String>>,
    /// HTTPS bridging: PEM file of the CA certificates members' certificates must chain to;
    /// absent or empty: the system's roots.
    pub tls_ca_file: Option<Spanned<String>>,
}

/// `[farms.health]`: how a probe's response is judged (ARR's explicit health test).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// Acceptable status codes: `"200-399"`, `"200, 301-302"`.
    pub statuses: Option<Spanned<String>>,
    /// Text the response must contain.
    pub content_match: Option<String>,
    /// Slower responses count as unhealthy.
    pub response_time_threshold: Option<Spanned<Dur>>,
    /// The connectivity verifier: `none`, `http`, `tcp` or `ping`.
    pub check: Option<Spanned<String>>,
    /// HTTP check: the URL, `*` standing for the member's name.
    pub url: Option<Spanned<String>>,
    /// HTTP check: a Host header other than the URL's.
    pub host_header: Option<Spanned<String>>,
    /// HTTP check: `GET` or `HEAD`.
    pub method: Option<Spanned<String>>,
    /// TCP check: the port (the member's own when absent).
    pub port: Option<u16>,
    pub interval: Option<Spanned<Dur>>,
    pub timeout: Option<Spanned<Dur>>,
    /// Consecutive failed checks before a member goes out of service.
    pub down_after: Option<Spanned<u32>>,
    /// Consecutive passed checks before it comes back.
    pub up_after: Option<Spanned<u32>>,
    /// Where alerts are POSTed (a member missing the response-time threshold).
    pub alert_webhook: Option<Spanned<String>>,
    /// Live traffic test: statuses that count as failures.
    pub live_failure_statuses: Option<Spanned<String>>,
    /// Live traffic test: failures within the period that take a member out (0: off).
    pub live_max_failures: Option<u32>,
    pub live_failover_period: Option<Spanned<Dur>>,
    /// Minimum servers: a count, and a percentage of the members.
    pub min_servers: Option<usize>,
    pub min_servers_percent: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMember {
    /// Computer name or IP address, as in TMG's farm member list.
    pub host: Spanned<String>,
    pub port: Option<u16>,
    /// Display name; `host:port` when absent.
    pub name: Option<Spanned<String>>,
    pub weight: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSampleServer {
    pub name: Spanned<String>,
    pub bind: Spanned<String>,
}

/// A human-readable duration in the config (`"30s"`, `"5000ms"`, `"2m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let text = String::deserialize(de)?;
        parse_duration(&text)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses `"30s"`, `"5000ms"`, `"1m 30s"`; a bare number is refused because its unit would be a
/// guess.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "duration \"{text}\" has no unit; write e.g. \"{trimmed}s\" or \"{trimmed}ms\""
        ));
    }
    humantime::parse_duration(trimmed)
        .map_err(|e| format!("invalid duration \"{text}\" ({e}); write e.g. \"30s\" or \"5000ms\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5000ms"), Ok(Duration::from_millis(5000)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("30").unwrap_err().contains("no unit"));
        assert!(
            parse_duration("30x")
                .unwrap_err()
                .contains("invalid duration")
        );
        assert!(parse_duration("").is_err());
    }
}
