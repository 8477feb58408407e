//! The validated model: the immutable [`Config`] that validation builds and the rest of farmgate
//! reads, one part per section of the file (proxy, access log, listeners, rules, farms and their
//! health, sample servers, plugins, admin).
//!
//! Every value here has been checked and every default applied (an `Option` left is one the
//! file may truly leave unset, such as a rule's internal site name). This module must not parse
//! or check anything (that is `validate`); a `Config` is not changed after validation: a new
//! config is a new `Config`.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;

use super::defaults;
use super::parse::parse_status_ranges;
use super::raw::AccessLogFormat;
use crate::names::HostPattern;

/// A validated, immutable configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config came from (a path, or [`super::DEFAULT_CONFIG_NAME`]).
    pub origin: String,
    pub proxy: ProxySettings,
    pub access_log: AccessLogSettings,
    pub listeners: Vec<ListenerConfig>,
    /// The static host table, keys lower-cased.
    pub hosts: HashMap<String, Vec<IpAddr>>,
    pub rules: Vec<RuleConfig>,
    pub farms: Vec<FarmConfig>,
    pub sample_servers: Vec<SampleServerConfig>,
    pub plugins: PluginSettings,
    pub admin: AdminSettings,
}

impl Config {
    pub fn listener_index(&self, name: &str) -> Option<usize> {
        self.listeners.iter().position(|l| l.name == name)
    }

    /// A few lines for `farmgate check` and the start-up log.
    pub fn summary(&self) -> String {
        let members: usize = self.farms.iter().map(|f| f.members.len()).sum();
        let mut out = format!(
            "{}: {} listener(s), {} rule(s), {} farm(s) with {} member(s), {} host table entr{}, {} sample server(s)",
            self.origin,
            self.listeners.len(),
            self.rules.len(),
            self.farms.len(),
            members,
            self.hosts.len(),
            if self.hosts.len() == 1 { "y" } else { "ies" },
            self.sample_servers.len(),
        );
        for l in &self.listeners {
            let scheme = if l.is_tls() { "https" } else { "http" };
            out.push_str(&format!("\n  listener {} on {scheme}://{}", l.name, l.bind));
        }
        for r in &self.rules {
            let names: Vec<String> = r.public_names.iter().map(|p| p.to_string()).collect();
            out.push_str(&format!(
                "\n  rule {}: {} {} -> farm {}",
                r.name,
                names.join(","),
                r.paths.join(","),
                self.farms[r.farm].name
            ));
        }
        for f in &self.farms {
            let names: Vec<&str> = f.members.iter().map(|m| m.name.as_str()).collect();
            out.push_str(&format!("\n  farm {}: {}", f.name, names.join(", ")));
        }
        out
    }
}

// The proxy: timeouts, limits, forwarding and the affinity key.

#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_peer: usize,
    pub resolve_interval: Duration,
    pub shutdown_grace: Duration,
    pub retry_after: Duration,
    pub connect_retries: u32,
    pub via: String,
    pub worker_threads: usize,
    pub header_read_timeout: Duration,
    /// How long an HTTP/1 keep-alive connection may wait for its next request.
    pub client_idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_connections: usize,
    /// Peers whose `X-Forwarded-For` names the client (for client-IP affinity, hashing and the
    /// plugins' view of the client).
    pub trusted_proxies: Vec<IpNet>,
    pub affinity_key: AffinityKey,
    /// HTTPS: how long a client may take over the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// How long an upgraded connection may pass no byte before it is closed.
    pub upgrade_idle_timeout: Duration,
}

/// An address block: `10.0.0.0/8`, `::1/128`, or a bare address (a block of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("\"{s}\" is not an address or address/prefix block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("\"{s}\" has a prefix length outside 0..={max}"))?,
        };
        Ok(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 peer on a dual-stack socket arrives as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The key affinity cookies are signed with, and where it came from.
#[derive(Clone)]
pub struct AffinityKey {
    pub bytes: Vec<u8>,
    /// `config`, `env NAME`, or `random` (made at start: cookies do not survive a restart and
    /// other instances do not accept them).
    pub source: String,
}

impl fmt::Debug for AffinityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AffinityKey({} bytes from {})",
            self.bytes.len(),
            self.source
        )
    }
}

impl AffinityKey {
    pub(super) fn random() -> AffinityKey {
        use std::io::Read;
        let mut bytes = vec![0u8; 32];
        let from_os = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .is_ok();
        if !from_os {
            use std::hash::{BuildHasher, RandomState};
            for (i, chunk) in bytes.chunks_mut(8).enumerate() {
                chunk.copy_from_slice(&RandomState::new().hash_one(i).to_le_bytes());
            }
        }
        AffinityKey {
            bytes,
            source: "random".into(),
        }
    }
}

// The access log.

#[derive(Debug, Clone)]
pub struct AccessLogSettings {
    pub format: AccessLogFormat,
    /// `None` is standard output.
    pub path: Option<String>,
}

// Listeners and their certificates.

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub name: String,
    pub bind: SocketAddr,
    /// HTTPS: offer HTTP/2 (ALPN on TLS, h2c with prior knowledge on plain listeners).
    pub http2: bool,
    /// HTTPS: the certificates, chosen by SNI; empty for a plain-HTTP listener.
    pub certificates: Vec<CertificateConfig>,
}

impl ListenerConfig {
    pub fn is_tls(&self) -> bool {
        !self.certificates.is_empty()
    }
}

/// One certificate of a TLS listener.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificateConfig {
    /// PEM: the end-entity certificate first, then intermediates.
    pub cert: PathBuf,
    /// PEM: the private key.
    pub key: PathBuf,
    /// SNI names this certificate answers; empty: the names the certificate itself lists.
    pub names: Vec<HostPattern>,
    /// Served when the client sends no SNI name or one no certificate answers.
    pub default: bool,
}

// Publishing rules: link translation, URL rewrites, HTTPS.

#[derive(Debug, Clone)]
pub struct RuleConfig {
    pub name: String,
    /// Indexes into [`Config::listeners`].
    pub listeners: Vec<usize>,
    pub public_names: Vec<HostPattern>,
    /// Normalised path prefixes: start with `/`, no trailing `*`.
    pub paths: Vec<String>,
    /// Index into [`Config::farms`].
    pub farm: usize,
    pub internal_site_name: Option<String>,
    pub preserve_host: bool,
    /// `Upgrade` protocols passed to the members (lower case); a request asking for another is
    /// served without its upgrade. Never `h2c`.
    pub upgrade_protocols: Vec<String>,
    pub router: Binding,
    pub link_translation: Binding,
    pub links: LinkSettings,
    /// Largest request body accepted; larger gets 413.
    pub max_body_bytes: u64,
    /// URL rewrite rules, validated; the built-in router plugin applies them.
    pub rewrites: Vec<RewriteRule>,
    /// HTTPS: redirect of plain-HTTP requests, HSTS.
    pub https: RuleHttps,
}

/// Link translation of one rule.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LinkSettings {
    pub enabled: bool,
    /// Configured `from -> to` pairs beside the internal site name -> public name mapping.
    pub mappings: Vec<(String, String)>,
    pub content_types: Vec<String>,
}

/// One URL rewrite rule, in the shape the built-in router plugin reads.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RewriteRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub ignore_case: bool,
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub append_query: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub farm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    pub set_headers: Vec<(String, String)>,
    pub remove_headers: Vec<String>,
    pub stop: bool,
}

/// HTTPS behaviour of a publishing rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleHttps {
    /// Plain-HTTP requests get a redirect to `https://`.
    pub redirect: bool,
    /// The port in those redirects (443 is left out of the URL).
    pub port: u16,
    pub hsts: bool,
    pub hsts_max_age: Duration,
    pub hsts_include_subdomains: bool,
}

impl RuleHttps {
    /// The `Strict-Transport-Security` value, when the rule sends one.
    pub fn hsts_value(&self) -> Option<String> {
        self.hsts.then(|| {
            let mut v = format!("max-age={}", self.hsts_max_age.as_secs());
            if self.hsts_include_subdomains {
                v.push_str("; includeSubDomains");
            }
            v
        })
    }
}

// Farms, their members and how farmgate talks to them.

#[derive(Debug, Clone)]
pub struct FarmConfig {
    pub name: String,
    pub members: Vec<MemberConfig>,
    pub affinity: Binding,
    pub health_evaluation: Binding,
    /// The algorithm as written (`None`: the built-in default for the affinity mode).
    pub balance: Option<String>,
    pub hash_on: Option<String>,
    /// `none`, `cookie` or `client-ip`.
    pub affinity_mode: String,
    pub affinity_cookie: String,
    pub health: HealthSettings,
    /// HTTPS bridging and HTTP/2 to the members.
    pub upstream: UpstreamSettings,
}

#[derive(Debug, Clone)]
pub struct MemberConfig {
    pub name: String,
    /// Lower-cased computer name or IP literal.
    pub host: String,
    pub port: u16,
    pub weight: u32,
}

/// How farmgate talks to a farm's members.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// HTTPS bridging (`scheme = "https"`), else plain HTTP.
    pub https: bool,
    pub http2: bool,
    pub verify: TlsVerify,
    /// `None`: the system's roots.
    pub ca: Option<CaBundle>,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            https: false,
            http2: defaults::FARM_HTTP2,
            verify: TlsVerify::MemberName,
            ca: None,
        }
    }
}

/// What a member's certificate is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TlsVerify {
    /// The member's computer name or IP address (TMG's first way).
    MemberName,
    /// The publishing rule's internal site name (TMG's second way).
    InternalSiteName,
    /// Nothing: any certificate is accepted (a warning is logged at start).
    None,
}

impl TlsVerify {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVerify::MemberName => "member-name",
            TlsVerify::InternalSiteName => "internal-site-name",
            TlsVerify::None => "none",
        }
    }
}

/// The CA certificates member certificates must chain to.
#[derive(Debug, Clone)]
pub struct CaBundle {
    pub path: PathBuf,
    pub certs: Arc<Vec<CertificateDer<'static>>>,
}

// Health of a farm's members.

/// Health of a farm's members: the connectivity verifier, how its answers are judged (ARR's
/// explicit health test), the live traffic test and minimum servers.
#[derive(Debug, Clone)]
pub struct HealthSettings {
    pub statuses: String,
    pub content_match: Option<String>,
    pub response_time_threshold: Duration,
    pub check: Check,
    pub interval: Duration,
    pub timeout: Duration,
    pub down_after: u32,
    pub up_after: u32,
    pub alert_webhook: Option<http::Uri>,
    pub live_failure_statuses: Vec<(u16, u16)>,
    /// 0: the live traffic test is off.
    pub live_max_failures: u32,
    pub live_failover_period: Duration,
    pub min_servers: usize,
    pub min_servers_percent: u32,
}

/// A connectivity verifier (TMG's three kinds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    None,
    /// GET or HEAD of a URL whose `*` is the member's name; no port in the URL means the
    /// member's port.
    Http {
        url: String,
        host_header: Option<String>,
        head: bool,
    },
    /// A TCP connection to the port (`None`: the member's port).
    Tcp {
        port: Option<u16>,
    },
    /// An ICMP echo.
    Ping,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            statuses: defaults::HEALTH_STATUSES.to_string(),
            content_match: None,
            response_time_threshold: defaults::RESPONSE_TIME_THRESHOLD,
            check: Check::None,
            interval: defaults::HEALTH_INTERVAL,
            timeout: defaults::HEALTH_TIMEOUT,
            down_after: defaults::HEALTH_DOWN_AFTER,
            up_after: defaults::HEALTH_UP_AFTER,
            alert_webhook: None,
            live_failure_statuses: parse_status_ranges(defaults::LIVE_FAILURE_STATUSES)
                .unwrap_or_default(),
            live_max_failures: defaults::LIVE_MAX_FAILURES,
            live_failover_period: defaults::LIVE_FAILOVER_PERIOD,
            min_servers: defaults::MIN_SERVERS,
            min_servers_percent: defaults::MIN_SERVERS_PERCENT,
        }
    }
}

// Sample servers.

#[derive(Debug, Clone)]
pub struct SampleServerConfig {
    pub name: String,
    pub bind: SocketAddr,
}

// Plugins.

/// The plugin runtime's settings and each plugin's own.
#[derive(Debug, Clone)]
pub struct PluginSettings {
    /// The watched folder; `None` means no folder is watched.
    pub dir: Option<PathBuf>,
    pub call_timeout: Duration,
    pub memory_limit_bytes: usize,
    pub failures_before_disable: u32,
    /// Compiled-code cache; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// By plugin name (file name without `.wasm`).
    pub config: HashMap<String, PluginConfig>,
    /// Every place the config names a plugin (bindings and `[plugins.config.NAME]` tables), so
    /// `farmgate check` can hold them against the plugin folder.
    pub references: Vec<PluginReference>,
}

/// Where the config names a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginReference {
    pub name: String,
    /// `rules[0].router_plugins`, `plugins.config.NAME`, ...
    pub key: String,
    /// 1-based; 0 when the place is not known.
    pub line: usize,
    pub column: usize,
    /// A `[plugins.config.NAME]` table rather than a binding.
    pub settings: bool,
}

impl Default for PluginSettings {
    /// No watched folder, no cache, the documented defaults (used by `farmgate plugin test`).
    fn default() -> Self {
        PluginSettings {
            dir: None,
            call_timeout: defaults::PLUGIN_CALL_TIMEOUT,
            memory_limit_bytes: defaults::PLUGIN_MEMORY_LIMIT_MB as usize * 1024 * 1024,
            failures_before_disable: defaults::PLUGIN_FAILURES_BEFORE_DISABLE,
            cache_dir: None,
            config: HashMap::new(),
            references: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginConfig {
    pub fail_closed: bool,
    /// A deadline of its own instead of `plugins.call_timeout` (the built-in plugins').
    pub call_timeout: Option<Duration>,
    /// The settings table as JSON, handed to the plugin's `init`.
    pub settings_json: String,
    /// What the plugin's WASI may reach beyond what Rust's std needs; nothing by default.
    pub env: Vec<(String, String)>,
    pub read_only_dirs: Vec<PathBuf>,
    pub network: bool,
}

/// Plugins bound to a hook: an explicit list, or every plugin in the folder that has the hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    Folder,
    Named(Vec<String>),
}

// The admin listener.

/// The admin listener.
#[derive(Clone, Default)]
pub struct AdminSettings {
    /// `None`: no admin listener.
    pub bind: Option<SocketAddr>,
    /// The bearer token every API call must carry; required off loopback.
    pub token: Option<String>,
}

impl fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminSettings")
            .field("bind", &self.bind)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}
