//! Configuration: file -> raw serde structs ([`raw`]) -> validation -> an immutable [`Config`].
//!
//! This module owns the meaning of every key and every default ([`defaults`]). It does no network
//! I/O: names are checked for form here and resolved by [`crate::resolve`]. A [`ConfigError`]
//! always names the file, the line and column, the key, and what is wrong.

pub mod defaults;
mod https;
pub mod raw;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

pub use https::{CaBundle, CertificateConfig, RuleHttps, TlsVerify, UpstreamSettings};
pub use raw::AccessLogFormat;
use raw::{Dur, HostAddresses, RawConfig};

use crate::names::{HostPattern, is_host_name_or_ip, split_host_port};

/// The default config, embedded so `farmgate run` works with no file at all.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/farmgate.toml");

/// Name under which the embedded default config reports errors.
pub const DEFAULT_CONFIG_NAME: &str = "<embedded config/farmgate.toml>";

/// A validated, immutable configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config came from (a path, or [`DEFAULT_CONFIG_NAME`]).
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

/// The plugin runtime's settings and each plugin's own.
#[derive(Debug, Clone)]
pub struct PluginSettings {
    /// The watched folder; `None` means no folder is watched.
    pub dir: Option<std::path::PathBuf>,
    pub call_timeout: Duration,
    pub memory_limit_bytes: usize,
    pub failures_before_disable: u32,
    /// Compiled-code cache; `None` compiles every time.
    pub cache_dir: Option<std::path::PathBuf>,
    /// By plugin name (file name without `.wasm`).
    pub config: HashMap<String, PluginConfig>,
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
    pub read_only_dirs: Vec<std::path::PathBuf>,
    pub network: bool,
}

/// Plugins bound to a hook: an explicit list, or every plugin in the folder that has the hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    Folder,
    Named(Vec<String>),
}

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
    fn random() -> AffinityKey {
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

#[derive(Debug, Clone)]
pub struct AccessLogSettings {
    pub format: AccessLogFormat,
    /// `None` is standard output.
    pub path: Option<String>,
}

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
            min_servers: 0,
            min_servers_percent: 0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct MemberConfig {
    pub name: String,
    /// Lower-cased computer name or IP literal.
    pub host: String,
    pub port: u16,
    pub weight: u32,
}

#[derive(Debug, Clone)]
pub struct SampleServerConfig {
    pub name: String,
    pub bind: SocketAddr,
}

/// What is wrong with a config, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based; 0 when the problem has no place in the file (it could not be read).
    pub line: usize,
    pub column: usize,
    /// The key or table the problem is in, e.g. `rules[2].farm`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else if self.key.is_empty() {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        } else {
            write!(
                f,
                "{}:{}:{}: {}: {}",
                self.file, self.line, self.column, self.key, self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

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
        Validator { source }.validate(raw)
    }

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

/// What toml says is wrong. Some of its errors carry no message of their own (a value missing at
/// the end of the text, a control character in a comment); their display text is used then.
fn toml_message(e: &toml::de::Error) -> String {
    let own = e.message().trim();
    if !own.is_empty() {
        return own.to_string();
    }
    let shown = e.to_string();
    let last = shown
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with('|') && !l.starts_with("-->"))
        .unwrap_or("")
        .trim_start_matches(|c: char| c == '^' || c == '|' || c.is_whitespace());
    if last.is_empty() {
        "the file is not valid TOML here".to_string()
    } else {
        last.to_string()
    }
}

/// The config text, for turning byte offsets into lines.
#[derive(Clone, Copy)]
struct Source<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Source<'_> {
    fn line_col(&self, offset: usize) -> (usize, usize) {
        // Spans are token boundaries, but never trust an offset to be a char boundary.
        let mut end = offset.min(self.text.len());
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        let before = &self.text[..end];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
        (line, column)
    }

    /// The `[table]` or `[[array]]` header in force at `line`, for errors that toml reports
    /// without a key.
    fn table_at(&self, line: usize) -> String {
        self.text
            .lines()
            .take(line)
            .filter_map(|l| {
                let t = l.trim();
                t.starts_with('[')
                    .then(|| t.split('#').next().unwrap_or(t).trim().to_string())
            })
            .last()
            .unwrap_or_default()
    }

    fn error<T>(
        &self,
        at: &Spanned<T>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = self.line_col(at.span().start);
        ConfigError {
            file: self.origin.to_string(),
            line,
            column,
            key: key.into(),
            message: message.into(),
        }
    }
}

struct Validator<'a> {
    source: Source<'a>,
}

impl Validator<'_> {
    fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let src = self.source;
        if let Some(v) = &raw.version
            && *v.get_ref() != 1
        {
            return Err(src.error(
                v,
                "version",
                format!(
                    "config version {} is not known; this farmgate reads version 1",
                    v.get_ref()
                ),
            ));
        }

        let p = raw.proxy;
        let dur = |d: Option<Dur>, default: Duration| d.map(|d| d.0).unwrap_or(default);
        let via = match p.via {
            Some(v) => {
                let s = v.get_ref().trim();
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(src.error(
                        &v,
                        "proxy.via",
                        "must be one token of visible ASCII characters",
                    ));
                }
                s.to_string()
            }
            None => defaults::VIA_PSEUDONYM.to_string(),
        };
        let proxy = ProxySettings {
            connect_timeout: dur(p.connect_timeout, defaults::CONNECT_TIMEOUT),
            response_timeout: dur(p.response_timeout, defaults::RESPONSE_TIMEOUT),
            pool_idle_timeout: dur(p.pool_idle_timeout, defaults::POOL_IDLE_TIMEOUT),
            pool_max_idle_per_peer: p
                .pool_max_idle_per_peer
                .unwrap_or(defaults::POOL_MAX_IDLE_PER_PEER),
            resolve_interval: dur(p.resolve_interval, defaults::RESOLVE_INTERVAL),
            shutdown_grace: dur(p.shutdown_grace, defaults::SHUTDOWN_GRACE),
            retry_after: dur(p.retry_after, defaults::RETRY_AFTER),
            connect_retries: p.connect_retries.unwrap_or(defaults::CONNECT_RETRIES),
            via,
            worker_threads: p.worker_threads.unwrap_or(defaults::WORKER_THREADS),
            header_read_timeout: match &p.header_read_timeout {
                Some(t) if t.get_ref().0 < Duration::from_millis(1) => {
                    return Err(src.error(t, "proxy.header_read_timeout", "must be at least 1ms"));
                }
                t => t
                    .as_ref()
                    .map(|t| t.get_ref().0)
                    .unwrap_or(defaults::HEADER_READ_TIMEOUT),
            },
            max_header_bytes: match &p.max_header_bytes {
                Some(n) if *n.get_ref() < 8192 => {
                    return Err(src.error(n, "proxy.max_header_bytes", "must be at least 8192"));
                }
                n => n
                    .as_ref()
                    .map(|n| *n.get_ref())
                    .unwrap_or(defaults::MAX_HEADER_BYTES),
            },
            max_headers: match &p.max_headers {
                Some(n) if *n.get_ref() == 0 => {
                    return Err(src.error(n, "proxy.max_headers", "must be at least 1"));
                }
                n => n
                    .as_ref()
                    .map(|n| *n.get_ref())
                    .unwrap_or(defaults::MAX_HEADERS),
            },
            max_connections: match &p.max_connections {
                Some(n) if *n.get_ref() == 0 => {
                    return Err(src.error(n, "proxy.max_connections", "must be at least 1"));
                }
                n => n
                    .as_ref()
                    .map(|n| *n.get_ref())
                    .unwrap_or(defaults::MAX_CONNECTIONS),
            },
            trusted_proxies: {
                let mut nets = Vec::new();
                for n in p.trusted_proxies.iter().flatten() {
                    nets.push(
                        IpNet::parse(n.get_ref())
                            .map_err(|m| src.error(n, "proxy.trusted_proxies", m))?,
                    );
                }
                nets
            },
            affinity_key: self.affinity_key(p.affinity_key, p.affinity_key_env)?,
            tls_handshake_timeout: https::duration(
                &p.tls_handshake_timeout,
                defaults::TLS_HANDSHAKE_TIMEOUT,
            ),
            upgrade_idle_timeout: https::duration(
                &p.upgrade_idle_timeout,
                defaults::UPGRADE_IDLE_TIMEOUT,
            ),
            client_idle_timeout: https::duration(
                &p.client_idle_timeout,
                defaults::CLIENT_IDLE_TIMEOUT,
            ),
        };
        for (d, key) in [
            (&p.tls_handshake_timeout, "proxy.tls_handshake_timeout"),
            (&p.upgrade_idle_timeout, "proxy.upgrade_idle_timeout"),
            (&p.client_idle_timeout, "proxy.client_idle_timeout"),
        ] {
            if let Some(d) = d
                && d.get_ref().0 < Duration::from_millis(1)
            {
                return Err(src.error(d, key, "must be at least 1ms"));
            }
        }

        let access_log = AccessLogSettings {
            format: raw.access_log.format.unwrap_or(AccessLogFormat::Combined),
            path: raw.access_log.path.filter(|p| p != "-"),
        };

        let mut listeners = Vec::new();
        let mut listener_names = HashSet::new();
        for (i, l) in raw.listeners.iter().enumerate() {
            let key = format!("listeners[{i}]");
            self.check_name(
                &l.name,
                &format!("{key}.name"),
                "listener",
                &mut listener_names,
            )?;
            let bind = parse_socket_addr(&l.bind)
                .map_err(|m| src.error(&l.bind, format!("{key}.bind"), m))?;
            listeners.push(ListenerConfig {
                name: l.name.get_ref().clone(),
                bind,
                http2: l.http2.unwrap_or(defaults::LISTENER_HTTP2),
                certificates: self.listener_certificates(l, &key)?,
            });
        }

        let mut hosts = HashMap::new();
        for (name, addrs) in &raw.hosts {
            let key = format!("hosts.\"{name}\"");
            let list: Vec<&String> = match addrs.get_ref() {
                HostAddresses::One(a) => vec![a],
                HostAddresses::Many(v) => v.iter().collect(),
            };
            if list.is_empty() {
                return Err(src.error(addrs, key, "lists no address"));
            }
            let mut ips = Vec::new();
            for a in list {
                let ip: IpAddr = a.trim().parse().map_err(|_| {
                    src.error(addrs, key.clone(), format!("\"{a}\" is not an IP address"))
                })?;
                ips.push(ip);
            }
            if hosts.insert(name.to_ascii_lowercase(), ips).is_some() {
                return Err(src.error(
                    addrs,
                    key,
                    "is listed twice (host names are not case-sensitive)",
                ));
            }
        }

        let mut farms = Vec::new();
        let mut farm_names = HashSet::new();
        for (i, f) in raw.farms.iter().enumerate() {
            let key = format!("farms[{i}]");
            self.check_name(&f.name, &format!("{key}.name"), "farm", &mut farm_names)?;
            if f.members.get_ref().is_empty() {
                return Err(src.error(
                    &f.members,
                    format!("{key}.members"),
                    "a farm needs at least one member",
                ));
            }
            let upstream = self.farm_upstream(f, &key)?;
            let mut members = Vec::new();
            let mut member_names = HashSet::new();
            for (j, m) in f.members.get_ref().iter().enumerate() {
                let mkey = format!("{key}.members[{j}]");
                let host = m.host.get_ref().trim().to_ascii_lowercase();
                if !is_host_name_or_ip(&host) {
                    return Err(src.error(
                        &m.host,
                        format!("{mkey}.host"),
                        format!(
                            "\"{}\" is neither a host name nor an IP address",
                            m.host.get_ref()
                        ),
                    ));
                }
                let port = m.port.unwrap_or(if upstream.https {
                    defaults::MEMBER_PORT_HTTPS
                } else {
                    defaults::MEMBER_PORT_HTTP
                });
                let name = match &m.name {
                    Some(n) => n.get_ref().clone(),
                    None => format!("{host}:{port}"),
                };
                if !member_names.insert(name.clone()) {
                    let at = m.name.as_ref().map(|n| n.span()).unwrap_or(m.host.span());
                    let (line, column) = src.line_col(at.start);
                    return Err(ConfigError {
                        file: src.origin.to_string(),
                        line,
                        column,
                        key: mkey,
                        message: format!(
                            "member \"{name}\" appears twice in farm \"{}\"",
                            f.name.get_ref()
                        ),
                    });
                }
                let weight = match &m.weight {
                    Some(w) if *w.get_ref() == 0 => {
                        return Err(src.error(
                            w,
                            format!("{mkey}.weight"),
                            "weight must be at least 1",
                        ));
                    }
                    Some(w) => *w.get_ref(),
                    None => defaults::MEMBER_WEIGHT,
                };
                members.push(MemberConfig {
                    name,
                    host,
                    port,
                    weight,
                });
            }
            let (balance, hash_on) = self.balance(f, &key)?;
            let affinity_mode = match &f.affinity {
                None => defaults::AFFINITY.to_string(),
                Some(a) => {
                    let v = a.get_ref().trim().to_ascii_lowercase();
                    if !AFFINITY_MODES.contains(&v.as_str()) {
                        return Err(src.error(
                            a,
                            format!("{key}.affinity"),
                            format!(
                                "\"{}\" is not an affinity; use one of {}",
                                a.get_ref(),
                                AFFINITY_MODES.join(", ")
                            ),
                        ));
                    }
                    v
                }
            };
            let affinity_cookie = match &f.affinity_cookie {
                None => defaults::AFFINITY_COOKIE.to_string(),
                Some(c) => {
                    if !is_token(c.get_ref()) {
                        return Err(src.error(
                            c,
                            format!("{key}.affinity_cookie"),
                            "a cookie name is one token: letters, digits and !#$%&'*+-.^_`|~",
                        ));
                    }
                    c.get_ref().clone()
                }
            };
            let health = self.health(&f.health, &format!("{key}.health"))?;
            farms.push(FarmConfig {
                name: f.name.get_ref().clone(),
                members,
                affinity: self.binding(&f.affinity_plugins, &format!("{key}.affinity_plugins"))?,
                health_evaluation: self.binding(
                    &f.health_evaluation_plugins,
                    &format!("{key}.health_evaluation_plugins"),
                )?,
                balance,
                hash_on,
                affinity_mode,
                affinity_cookie,
                health,
                upstream,
            });
        }

        let mut rules = Vec::new();
        let mut rule_names = HashSet::new();
        for (i, r) in raw.rules.iter().enumerate() {
            let key = format!("rules[{i}]");
            self.check_name(&r.name, &format!("{key}.name"), "rule", &mut rule_names)?;
            let rule_listeners = match &r.listeners {
                None => (0..listeners.len()).collect(),
                Some(names) => {
                    let mut idx = Vec::new();
                    for n in names {
                        let Some(pos) = listeners.iter().position(|l| &l.name == n.get_ref())
                        else {
                            return Err(src.error(
                                n,
                                format!("{key}.listeners"),
                                format!("no listener is named \"{}\"", n.get_ref()),
                            ));
                        };
                        idx.push(pos);
                    }
                    idx
                }
            };
            let farm = farms
                .iter()
                .position(|f| &f.name == r.farm.get_ref())
                .ok_or_else(|| {
                    src.error(
                        &r.farm,
                        format!("{key}.farm"),
                        format!("no farm is named \"{}\"", r.farm.get_ref()),
                    )
                })?;
            if r.public_names.get_ref().is_empty() {
                return Err(src.error(
                    &r.public_names,
                    format!("{key}.public_names"),
                    "list at least one public name (or \"*\" for any)",
                ));
            }
            let mut public_names = Vec::new();
            for n in r.public_names.get_ref() {
                let pattern = HostPattern::parse(n.get_ref())
                    .map_err(|m| src.error(n, format!("{key}.public_names"), m))?;
                public_names.push(pattern);
            }
            let mut paths = Vec::new();
            for p in &r.paths {
                paths.push(
                    normalize_path_prefix(p.get_ref())
                        .map_err(|m| src.error(p, format!("{key}.paths"), m))?,
                );
            }
            if paths.is_empty() {
                paths.push(defaults::RULE_PATH.to_string());
            }
            let internal_site_name = match &r.internal_site_name {
                Some(n) => {
                    let name = n.get_ref().trim().to_ascii_lowercase();
                    let host_part = split_host_port(&name).0;
                    if !is_host_name_or_ip(host_part) {
                        return Err(src.error(
                            n,
                            format!("{key}.internal_site_name"),
                            format!("\"{}\" is not a host name", n.get_ref()),
                        ));
                    }
                    Some(name)
                }
                None => None,
            };
            self.check_internal_name(&farms[farm], r, internal_site_name.is_some(), &key)?;
            let https = self.rule_https(r, &rule_listeners, &listeners, &key)?;
            rules.push(RuleConfig {
                name: r.name.get_ref().clone(),
                listeners: rule_listeners,
                public_names,
                paths,
                farm,
                internal_site_name,
                preserve_host: r.preserve_host,
                router: self.binding(&r.router_plugins, &format!("{key}.router_plugins"))?,
                link_translation: self.binding(
                    &r.link_translation_plugins,
                    &format!("{key}.link_translation_plugins"),
                )?,
                links: self.links(r, &key)?,
                max_body_bytes: r
                    .max_body_bytes
                    .as_ref()
                    .map(|n| *n.get_ref())
                    .unwrap_or(defaults::MAX_BODY_BYTES),
                rewrites: self.rewrites(r, &key, &farms)?,
                https,
            });
        }

        let mut sample_servers = Vec::new();
        let mut sample_names = HashSet::new();
        let mut binds: BTreeMap<SocketAddr, String> = BTreeMap::new();
        for l in &listeners {
            if l.bind.port() != 0 {
                binds.insert(l.bind, format!("listener \"{}\"", l.name));
            }
        }
        for (i, s) in raw.sample_servers.iter().enumerate() {
            let key = format!("sample_servers[{i}]");
            self.check_name(
                &s.name,
                &format!("{key}.name"),
                "sample server",
                &mut sample_names,
            )?;
            let bind = parse_socket_addr(&s.bind)
                .map_err(|m| src.error(&s.bind, format!("{key}.bind"), m))?;
            if bind.port() != 0
                && let Some(other) =
                    binds.insert(bind, format!("sample server \"{}\"", s.name.get_ref()))
            {
                return Err(src.error(
                    &s.bind,
                    format!("{key}.bind"),
                    format!("{bind} is already used by {other}"),
                ));
            }
            sample_servers.push(SampleServerConfig {
                name: s.name.get_ref().clone(),
                bind,
            });
        }

        let plugins = self.plugins(raw.plugins)?;
        let admin = self.admin(raw.admin, &binds)?;

        Ok(Config {
            origin: src.origin.to_string(),
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

    fn admin(
        &self,
        raw: raw::RawAdmin,
        binds: &BTreeMap<SocketAddr, String>,
    ) -> Result<AdminSettings, ConfigError> {
        let src = self.source;
        let Some(b) = raw.bind.filter(|b| !b.get_ref().trim().is_empty()) else {
            return Ok(AdminSettings::default());
        };
        let bind = parse_socket_addr(&b).map_err(|m| src.error(&b, "admin.bind", m))?;
        if bind.port() != 0
            && let Some(other) = binds.get(&bind)
        {
            return Err(src.error(
                &b,
                "admin.bind",
                format!("{bind} is already used by {other}"),
            ));
        }
        let var = raw
            .token_env
            .as_ref()
            .map(|e| e.get_ref().clone())
            .unwrap_or_else(|| defaults::ADMIN_TOKEN_ENV.to_string());
        let token = match std::env::var(&var) {
            Ok(v) if !v.is_empty() => Some(v),
            _ => match &raw.token {
                Some(t) if t.get_ref().len() < 16 => {
                    return Err(src.error(
                        t,
                        "admin.token",
                        "is too short; use at least 16 characters",
                    ));
                }
                t => t.as_ref().map(|t| t.get_ref().clone()),
            },
        };
        if token.is_none() && !bind.ip().is_loopback() {
            return Err(src.error(
                &b,
                "admin.bind",
                format!(
                    "the admin listener on {bind} is reachable from other hosts, so it needs a bearer token: set {var} (or admin.token)"
                ),
            ));
        }
        Ok(AdminSettings {
            bind: Some(bind),
            token,
        })
    }

    fn affinity_key(
        &self,
        inline: Option<Spanned<String>>,
        env: Option<Spanned<String>>,
    ) -> Result<AffinityKey, ConfigError> {
        let var = env
            .as_ref()
            .map(|e| e.get_ref().clone())
            .unwrap_or_else(|| defaults::AFFINITY_KEY_ENV.to_string());
        if let Ok(v) = std::env::var(&var)
            && !v.is_empty()
        {
            return Ok(AffinityKey {
                bytes: v.into_bytes(),
                source: format!("env {var}"),
            });
        }
        match inline {
            Some(k) if k.get_ref().len() < 16 => Err(self.source.error(
                &k,
                "proxy.affinity_key",
                "is too short to sign cookies with; use at least 16 characters (32 random ones are better)",
            )),
            Some(k) => Ok(AffinityKey {
                bytes: k.get_ref().clone().into_bytes(),
                source: "config".into(),
            }),
            None => Ok(AffinityKey::random()),
        }
    }

    /// `balance` and `hash_on` of a farm.
    fn balance(
        &self,
        f: &raw::RawFarm,
        key: &str,
    ) -> Result<(Option<String>, Option<String>), ConfigError> {
        let src = self.source;
        let balance = match &f.balance {
            None => None,
            Some(b) => {
                let v = b.get_ref().trim().to_ascii_lowercase();
                if !BALANCE_ALGORITHMS.contains(&v.as_str()) {
                    return Err(src.error(
                        b,
                        format!("{key}.balance"),
                        format!(
                            "\"{}\" is not a balancing algorithm; use one of {}",
                            b.get_ref(),
                            BALANCE_ALGORITHMS.join(", ")
                        ),
                    ));
                }
                Some(v)
            }
        };
        let hash_on = match (&f.hash_on, balance.as_deref()) {
            (None, Some("hash")) => {
                let b = f
                    .balance
                    .as_ref()
                    .map(|b| b.span())
                    .unwrap_or(f.name.span());
                let (line, column) = src.line_col(b.start);
                return Err(ConfigError {
                    file: src.origin.to_string(),
                    line,
                    column,
                    key: format!("{key}.hash_on"),
                    message: "balance = \"hash\" needs hash_on: url, query-string, client-address, header:NAME or cookie:NAME".into(),
                });
            }
            (None, _) => None,
            (Some(h), Some("hash")) => {
                let v = h.get_ref().trim();
                let ok = match v.split_once(':') {
                    Some((kind, name)) => {
                        matches!(kind, "header" | "cookie") && is_token(name.trim())
                    }
                    None => matches!(v, "url" | "query-string" | "client-address"),
                };
                if !ok {
                    return Err(src.error(
                        h,
                        format!("{key}.hash_on"),
                        format!(
                            "\"{v}\" is not a hash key; use url, query-string, client-address, header:NAME or cookie:NAME"
                        ),
                    ));
                }
                Some(match v.split_once(':') {
                    Some((kind, name)) => format!("{kind}:{}", name.trim()),
                    None => v.to_string(),
                })
            }
            (Some(h), _) => {
                return Err(src.error(
                    h,
                    format!("{key}.hash_on"),
                    "applies only with balance = \"hash\"",
                ));
            }
        };
        Ok((balance, hash_on))
    }

    fn health(&self, h: &raw::RawHealth, key: &str) -> Result<HealthSettings, ConfigError> {
        let statuses = match &h.statuses {
            None => defaults::HEALTH_STATUSES.to_string(),
            Some(s) => {
                parse_status_ranges(s.get_ref())
                    .map_err(|m| self.source.error(s, format!("{key}.statuses"), m))?;
                s.get_ref().trim().to_string()
            }
        };
        let response_time_threshold = match &h.response_time_threshold {
            None => defaults::RESPONSE_TIME_THRESHOLD,
            Some(t) if t.get_ref().0 < Duration::from_millis(1) => {
                return Err(self.source.error(
                    t,
                    format!("{key}.response_time_threshold"),
                    "must be at least 1ms",
                ));
            }
            Some(t) => t.get_ref().0,
        };
        let src = self.source;
        let dur = |d: &Option<Spanned<raw::Dur>>, what: &str, default: Duration| match d {
            None => Ok(default),
            Some(t) if t.get_ref().0 < Duration::from_millis(1) => {
                Err(src.error(t, format!("{key}.{what}"), "must be at least 1ms"))
            }
            Some(t) => Ok(t.get_ref().0),
        };
        let interval = dur(&h.interval, "interval", defaults::HEALTH_INTERVAL)?;
        let timeout = dur(&h.timeout, "timeout", defaults::HEALTH_TIMEOUT)?;
        let live_failover_period = dur(
            &h.live_failover_period,
            "live_failover_period",
            defaults::LIVE_FAILOVER_PERIOD,
        )?;
        let count = |c: &Option<Spanned<u32>>, what: &str, default: u32| match c {
            None => Ok(default),
            Some(n) if *n.get_ref() == 0 => {
                Err(src.error(n, format!("{key}.{what}"), "must be at least 1"))
            }
            Some(n) => Ok(*n.get_ref()),
        };
        let down_after = count(&h.down_after, "down_after", defaults::HEALTH_DOWN_AFTER)?;
        let up_after = count(&h.up_after, "up_after", defaults::HEALTH_UP_AFTER)?;
        let kind = h
            .check
            .as_ref()
            .map(|c| c.get_ref().trim().to_ascii_lowercase())
            .unwrap_or_else(|| "none".into());
        let check = match kind.as_str() {
            "none" => Check::None,
            "http" => {
                let Some(url) = &h.url else {
                    let at = h.check.as_ref().map(|c| c.span()).unwrap_or(0..0);
                    let (line, column) = src.line_col(at.start);
                    return Err(ConfigError {
                        file: src.origin.to_string(),
                        line,
                        column,
                        key: format!("{key}.url"),
                        message: "check = \"http\" needs a url such as \"http://*/status.htm\""
                            .into(),
                    });
                };
                let text = url.get_ref().trim();
                let probe = text.replacen('*', "member.invalid", 1);
                let parsed: Result<http::Uri, _> = probe.parse();
                let ok = parsed
                    .as_ref()
                    .is_ok_and(|u| u.scheme_str() == Some("http") && u.authority().is_some());
                if !ok {
                    return Err(src.error(
                        url,
                        format!("{key}.url"),
                        "must be an http:// URL; `*` stands for the member's name, e.g. \"http://*/status.htm\"",
                    ));
                }
                let head = match &h.method {
                    None => false,
                    Some(m) => match m.get_ref().trim().to_ascii_uppercase().as_str() {
                        "GET" => false,
                        "HEAD" => true,
                        _ => {
                            return Err(src.error(
                                m,
                                format!("{key}.method"),
                                "must be GET or HEAD",
                            ));
                        }
                    },
                };
                let host_header = match &h.host_header {
                    Some(v)
                        if http::HeaderValue::from_str(v.get_ref()).is_err()
                            || v.get_ref().is_empty() =>
                    {
                        return Err(src.error(
                            v,
                            format!("{key}.host_header"),
                            "is not a valid Host value",
                        ));
                    }
                    v => v.as_ref().map(|v| v.get_ref().clone()),
                };
                Check::Http {
                    url: text.to_string(),
                    host_header,
                    head,
                }
            }
            "tcp" => Check::Tcp { port: h.port },
            "ping" => Check::Ping,
            _ => {
                let c = h
                    .check
                    .as_ref()
                    .expect("a kind other than none came from the file");
                return Err(src.error(
                    c,
                    format!("{key}.check"),
                    format!(
                        "\"{}\" is not a check; use none, http, tcp or ping",
                        c.get_ref()
                    ),
                ));
            }
        };
        let alert_webhook = match &h.alert_webhook {
            None => None,
            Some(u) => {
                let uri: http::Uri =
                    u.get_ref().trim().parse().map_err(|_| {
                        src.error(u, format!("{key}.alert_webhook"), "is not a URL")
                    })?;
                if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                    return Err(src.error(
                        u,
                        format!("{key}.alert_webhook"),
                        "must be an http:// URL",
                    ));
                }
                Some(uri)
            }
        };
        let live_failure_statuses = match &h.live_failure_statuses {
            None => parse_status_ranges(defaults::LIVE_FAILURE_STATUSES).unwrap_or_default(),
            Some(s) => parse_status_ranges(s.get_ref())
                .map_err(|m| src.error(s, format!("{key}.live_failure_statuses"), m))?,
        };
        let min_servers_percent = match &h.min_servers_percent {
            Some(p) if *p.get_ref() > 100 => {
                return Err(src.error(p, format!("{key}.min_servers_percent"), "must be 0..=100"));
            }
            p => p.as_ref().map(|p| *p.get_ref()).unwrap_or(0),
        };
        Ok(HealthSettings {
            statuses,
            content_match: h.content_match.clone().filter(|m| !m.is_empty()),
            response_time_threshold,
            check,
            interval,
            timeout,
            down_after,
            up_after,
            alert_webhook,
            live_failure_statuses,
            live_max_failures: h.live_max_failures.unwrap_or(defaults::LIVE_MAX_FAILURES),
            live_failover_period,
            min_servers: h.min_servers.unwrap_or(0),
            min_servers_percent,
        })
    }

    fn links(&self, r: &raw::RawRule, key: &str) -> Result<LinkSettings, ConfigError> {
        let mut mappings = Vec::new();
        for (from, to) in &r.link_mappings {
            if from.is_empty() {
                return Err(self.source.error(
                    to,
                    format!("{key}.link_mappings"),
                    "a mapping needs a non-empty text to replace",
                ));
            }
            mappings.push((from.clone(), to.get_ref().clone()));
        }
        let content_types = match &r.link_content_types {
            None => defaults::LINK_CONTENT_TYPES
                .iter()
                .map(|t| t.to_string())
                .collect(),
            Some(list) => {
                let mut types = Vec::new();
                for t in list {
                    let v = t.get_ref().trim().to_ascii_lowercase();
                    if v.split_once('/')
                        .is_none_or(|(a, b)| !is_token(a) || !is_token(b))
                    {
                        return Err(self.source.error(
                            t,
                            format!("{key}.link_content_types"),
                            format!("\"{}\" is not a media type such as text/html", t.get_ref()),
                        ));
                    }
                    types.push(v);
                }
                types
            }
        };
        Ok(LinkSettings {
            enabled: r.translate_links.unwrap_or(defaults::TRANSLATE_LINKS),
            mappings,
            content_types,
        })
    }

    fn rewrites(
        &self,
        r: &raw::RawRule,
        key: &str,
        farms: &[FarmConfig],
    ) -> Result<Vec<RewriteRule>, ConfigError> {
        let src = self.source;
        let mut out = Vec::new();
        for (i, w) in r.rewrite.iter().enumerate() {
            let key = format!("{key}.rewrite[{i}]");
            let ignore_case = w.ignore_case.unwrap_or(true);
            let compile = |p: &Option<Spanned<String>>, what: &str| -> Result<usize, ConfigError> {
                let Some(p) = p else { return Ok(0) };
                regex_lite::RegexBuilder::new(p.get_ref())
                    .case_insensitive(ignore_case)
                    .build()
                    .map(|re| re.captures_len() - 1)
                    .map_err(|e| {
                        let first = e.to_string();
                        let first = first.lines().last().unwrap_or("invalid").trim().to_string();
                        src.error(
                            p,
                            format!("{key}.{what}"),
                            format!("invalid regex: {first}"),
                        )
                    })
            };
            let path_groups = compile(&w.path, "path")?;
            let host_groups = compile(&w.host, "host")?;
            let action = w.action.get_ref().trim().to_ascii_lowercase();
            if !matches!(action.as_str(), "rewrite" | "redirect" | "respond" | "none") {
                return Err(src.error(
                    &w.action,
                    format!("{key}.action"),
                    format!(
                        "\"{}\" is not an action; use rewrite, redirect, respond or none",
                        w.action.get_ref()
                    ),
                ));
            }
            let needs_url = matches!(action.as_str(), "rewrite" | "redirect");
            if needs_url && w.url.is_none() {
                return Err(src.error(
                    &w.action,
                    format!("{key}.url"),
                    format!("action \"{action}\" needs a url"),
                ));
            }
            if let Some(u) = &w.url {
                if u.get_ref().trim().is_empty() {
                    return Err(src.error(u, format!("{key}.url"), "is empty"));
                }
                check_references(u.get_ref(), path_groups, host_groups)
                    .map_err(|m| src.error(u, format!("{key}.url"), m))?;
            }
            // Line breaks would split a header or a request line.
            let one_line = |t: &Spanned<String>, what: &str| {
                if t.get_ref().contains(['\r', '\n', '\0']) {
                    Err(src.error(
                        t,
                        format!("{key}.{what}"),
                        "may not contain line breaks or NUL",
                    ))
                } else {
                    Ok(())
                }
            };
            if let Some(u) = &w.url {
                one_line(u, "url")?;
            }
            for v in w.set_headers.values() {
                one_line(v, "set_headers")?;
            }
            if action == "rewrite"
                && let Some(u) = &w.url
                && !u.get_ref().starts_with('/')
            {
                return Err(src.error(
                    u,
                    format!("{key}.url"),
                    "a rewrite url is a path starting with '/' (use action = \"redirect\" to send clients elsewhere)",
                ));
            }
            let status = match (&w.status, action.as_str()) {
                (Some(s), "redirect") if !matches!(*s.get_ref(), 301 | 302 | 303 | 307 | 308) => {
                    return Err(src.error(
                        s,
                        format!("{key}.status"),
                        "a redirect status is 301, 302, 303, 307 or 308",
                    ));
                }
                (Some(s), "respond") if !(200..=599).contains(s.get_ref()) => {
                    return Err(src.error(s, format!("{key}.status"), "must be 200..=599"));
                }
                (Some(s), "rewrite" | "none") => {
                    return Err(src.error(
                        s,
                        format!("{key}.status"),
                        "applies only to redirect and respond",
                    ));
                }
                (s, _) => s.as_ref().map(|s| *s.get_ref()),
            };
            let farm = match &w.farm {
                None => None,
                Some(f) if !farms.iter().any(|x| &x.name == f.get_ref()) => {
                    return Err(src.error(
                        f,
                        format!("{key}.farm"),
                        format!("no farm is named \"{}\"", f.get_ref()),
                    ));
                }
                Some(f) => Some(f.get_ref().clone()),
            };
            let mut set_headers = Vec::new();
            for (n, v) in &w.set_headers {
                if http::HeaderName::from_bytes(n.as_bytes()).is_err() {
                    return Err(src.error(
                        v,
                        format!("{key}.set_headers"),
                        format!("\"{n}\" is not a header name"),
                    ));
                }
                check_references(v.get_ref(), path_groups, host_groups)
                    .map_err(|m| src.error(v, format!("{key}.set_headers"), m))?;
                set_headers.push((n.to_ascii_lowercase(), v.get_ref().clone()));
            }
            let mut remove_headers = Vec::new();
            for n in &w.remove_headers {
                if http::HeaderName::from_bytes(n.get_ref().as_bytes()).is_err() {
                    return Err(src.error(
                        n,
                        format!("{key}.remove_headers"),
                        format!("\"{}\" is not a header name", n.get_ref()),
                    ));
                }
                remove_headers.push(n.get_ref().to_ascii_lowercase());
            }
            if let Some(ct) = &w.content_type
                && http::HeaderValue::from_str(ct.get_ref()).is_err()
            {
                return Err(src.error(
                    ct,
                    format!("{key}.content_type"),
                    "is not a valid header value",
                ));
            }
            out.push(RewriteRule {
                name: w.name.clone(),
                host: w.host.as_ref().map(|h| h.get_ref().clone()),
                path: w.path.as_ref().map(|p| p.get_ref().clone()),
                ignore_case,
                action,
                url: w.url.as_ref().map(|u| u.get_ref().clone()),
                append_query: w.append_query.unwrap_or(true),
                farm,
                status,
                body: w.body.clone(),
                content_type: w.content_type.as_ref().map(|c| c.get_ref().clone()),
                set_headers,
                remove_headers,
                stop: w.stop.unwrap_or(false),
            });
        }
        Ok(out)
    }

    fn binding(
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
        }
        Ok(Binding::Named(
            names.iter().map(|n| n.get_ref().clone()).collect(),
        ))
    }

    fn plugins(&self, raw: raw::RawPlugins) -> Result<PluginSettings, ConfigError> {
        let base = self.config_dir();
        let in_base = |d: Option<String>| {
            d.filter(|d| !d.trim().is_empty())
                .map(|d| base.join(d.trim()))
        };
        let dir = in_base(raw.dir);
        let cache_dir = in_base(raw.cache_dir);
        let memory_limit_mb = match raw.memory_limit_mb {
            Some(m) if *m.get_ref() == 0 => {
                return Err(self
                    .source
                    .error(&m, "plugins.memory_limit_mb", "must be at least 1"));
            }
            Some(m) => *m.get_ref(),
            None => defaults::PLUGIN_MEMORY_LIMIT_MB,
        };
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
        for (name, c) in raw.config {
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
            config.insert(
                name,
                PluginConfig {
                    fail_closed: c.fail_closed,
                    call_timeout: None,
                    settings_json,
                    env: c.env.into_iter().collect(),
                    read_only_dirs,
                    network: c.network,
                },
            );
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
        })
    }

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
}

/// The balancing algorithms a farm may name.
pub const BALANCE_ALGORITHMS: &[&str] = &[
    "least-current-request",
    "round-robin",
    "weighted-total-traffic",
    "least-response-time",
    "random",
    "power-of-two-choices",
    "hash",
];

/// The affinity modes a farm may name.
pub const AFFINITY_MODES: &[&str] = &["none", "cookie", "client-ip"];

/// An RFC 9110 token (header names, cookie names, media type parts).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `"200-399"`, `"200, 301-302"`: status codes and ranges, each within 100..=599.
pub fn parse_status_ranges(s: &str) -> Result<Vec<(u16, u16)>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let code = |t: &str| {
            t.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
        };
        match (code(lo), code(hi)) {
            (Some(lo), Some(hi)) if lo <= hi => out.push((lo, hi)),
            _ => {
                return Err(format!(
                    "\"{part}\" is not a status code or range such as 200-399 (codes are 100..=599)"
                ));
            }
        }
    }
    Ok(out)
}

/// Checks `{R:n}` and `{C:n}` references against the capture groups of the path and host regexes.
fn check_references(text: &str, path_groups: usize, host_groups: usize) -> Result<(), String> {
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else { break };
        let inner = &after[..end];
        if let Some((kind, n)) = inner.split_once(':')
            && let Ok(n) = n.parse::<usize>()
        {
            let (have, what) = match kind {
                "R" => (path_groups, "path"),
                "C" => (host_groups, "host"),
                _ => (usize::MAX, ""),
            };
            if n > have {
                return Err(format!(
                    "{{{inner}}} refers to capture {n}, but the {what} regex has {have} group(s)"
                ));
            }
        }
        rest = &after[end + 1..];
    }
    Ok(())
}

fn parse_socket_addr(s: &Spanned<String>) -> Result<SocketAddr, String> {
    s.get_ref().trim().parse().map_err(|_| {
        format!(
            "\"{}\" is not an address:port such as \"127.0.0.1:8080\"",
            s.get_ref()
        )
    })
}

/// `/app/*`, `/app/` and `/app` all mean "the `/app` subtree"; `/*` and `/` mean everything.
fn normalize_path_prefix(p: &str) -> Result<String, String> {
    let p = p.trim();
    if !p.starts_with('/') {
        return Err(format!("path \"{p}\" must start with '/'"));
    }
    let mut prefix = p.strip_suffix('*').unwrap_or(p);
    if prefix.contains('*') || prefix.contains('?') || prefix.contains('#') {
        return Err(format!(
            "path \"{p}\" may end in '*' but contain no other '*', '?' or '#'"
        ));
    }
    while prefix.len() > 1 && prefix.ends_with('/') {
        prefix = &prefix[..prefix.len() - 1];
    }
    Ok(prefix.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[listeners]]
name = "web"
bind = "127.0.0.1:0"

[[farms]]
name = "f"
members = [{ host = "127.0.0.1", port = 9 }]

[[rules]]
name = "r"
public_names = ["*"]
farm = "f"
"#;

    fn err(text: &str) -> ConfigError {
        Config::parse(text, "t.toml").expect_err("config should be refused")
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MINIMAL, "t.toml").unwrap();
        assert_eq!(c.proxy.response_timeout, defaults::RESPONSE_TIMEOUT);
        assert_eq!(c.rules[0].paths, vec!["/".to_string()]);
        assert_eq!(c.rules[0].listeners, vec![0]);
        assert_eq!(c.farms[0].members[0].name, "127.0.0.1:9");
        assert_eq!(c.farms[0].members[0].weight, 1);
    }

    #[test]
    fn unknown_key_names_line_and_table() {
        let e = err(&MINIMAL.replace("port = 9 }]", "port = 9 }]\nbogus = 1"));
        assert_eq!(e.line, 9);
        assert_eq!(e.key, "[[farms]]");
        assert!(e.message.contains("unknown field `bogus`"), "{e}");
        assert!(e.to_string().starts_with("t.toml:9:1: [[farms]]:"), "{e}");
    }

    #[test]
    fn bad_duration_names_the_line() {
        let e = err(&format!(
            "[proxy]\nconnect_timeout = \"10 parsecs\"\n{MINIMAL}"
        ));
        assert_eq!(e.line, 2);
        assert!(e.message.contains("invalid duration"), "{e}");
    }

    #[test]
    fn dangling_farm_reference() {
        let e = err(&MINIMAL.replace("farm = \"f\"", "farm = \"nope\""));
        assert_eq!((e.line, e.key.as_str()), (13, "rules[0].farm"));
        assert!(e.message.contains("no farm is named \"nope\""), "{e}");
    }

    #[test]
    fn dangling_listener_reference() {
        let e = err(&MINIMAL.replace(
            "farm = \"f\"",
            "farm = \"f\"\nlisteners = [\"web\", \"tls\"]",
        ));
        assert_eq!(e.key, "rules[0].listeners");
        assert_eq!(e.line, 14);
        assert!(e.message.contains("\"tls\""), "{e}");
    }

    #[test]
    fn duplicate_names() {
        let twice = format!("{MINIMAL}\n[[farms]]\nname = \"f\"\nmembers = [{{ host = \"a\" }}]\n");
        let e = err(&twice);
        assert_eq!((e.line, e.key.as_str()), (16, "farms[1].name"));
        assert!(e.message.contains("two farms named \"f\""), "{e}");
    }

    #[test]
    fn host_table_and_members() {
        let c = Config::parse(
            &format!("[hosts]\n\"Web1.Local\" = \"10.0.0.1\"\n\"multi\" = [\"10.0.0.2\", \"::1\"]\n{MINIMAL}"),
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            c.hosts["web1.local"],
            vec!["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(c.hosts["multi"].len(), 2);
        let e = err(&format!("[hosts]\n\"web1\" = \"not-an-ip\"\n{MINIMAL}"));
        assert_eq!(e.line, 2);
        assert!(e.message.contains("not an IP address"), "{e}");
    }

    #[test]
    fn plugin_call_timeout_is_bounded() {
        let e = err(&format!("[plugins]\ncall_timeout = \"1m\"\n{MINIMAL}"));
        assert_eq!((e.line, e.key.as_str()), (2, "plugins.call_timeout"));
        assert!(e.message.contains("between 1ms and 10s"), "{e}");
        let c = Config::parse(
            &format!("[plugins]\ncall_timeout = \"250ms\"\n{MINIMAL}"),
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.plugins.call_timeout, Duration::from_millis(250));
    }

    #[test]
    fn paths_normalise() {
        assert_eq!(normalize_path_prefix("/app/*").unwrap(), "/app");
        assert_eq!(normalize_path_prefix("/app/").unwrap(), "/app");
        assert_eq!(normalize_path_prefix("/*").unwrap(), "/");
        assert!(normalize_path_prefix("app").is_err());
        assert!(normalize_path_prefix("/a*b").is_err());
    }

    #[test]
    fn toml_errors_always_say_something() {
        for text in ["a = ", "#\0\n", "#\r It runs"] {
            let e = err(text);
            assert!(!e.message.trim().is_empty(), "{text:?}: {e}");
            assert!(e.line >= 1, "{text:?}: {e}");
        }
    }

    #[test]
    fn farm_policy_keys_are_checked() {
        let farm = |extra: &str| MINIMAL.replace("port = 9 }]", &format!("port = 9 }}]\n{extra}"));
        let c = Config::parse(
            &farm("balance = \"hash\"\nhash_on = \"header: X-User\"\naffinity = \"client-ip\""),
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.farms[0].balance.as_deref(), Some("hash"));
        assert_eq!(c.farms[0].hash_on.as_deref(), Some("header:X-User"));
        assert_eq!(c.farms[0].affinity_mode, "client-ip");
        let e = err(&farm("balance = \"fastest\""));
        assert_eq!((e.line, e.key.as_str()), (9, "farms[0].balance"));
        assert!(e.message.contains("round-robin"), "{e}");
        let e = err(&farm("balance = \"hash\""));
        assert_eq!(e.key, "farms[0].hash_on");
        let e = err(&farm("hash_on = \"url\""));
        assert!(e.message.contains("only with balance"), "{e}");
        let e = err(&farm("balance = \"hash\"\nhash_on = \"body\""));
        assert_eq!((e.line, e.key.as_str()), (10, "farms[0].hash_on"));
        let e = err(&farm("affinity = \"sticky\""));
        assert_eq!(e.key, "farms[0].affinity");
        let e = err(&farm("affinity_cookie = \"a b\""));
        assert_eq!(e.key, "farms[0].affinity_cookie");
        let e = err(&farm("[farms.health]\nstatuses = \"200-99\""));
        assert_eq!((e.line, e.key.as_str()), (10, "farms[0].health.statuses"));
        assert_eq!(
            parse_status_ranges("200, 301-302").unwrap(),
            [(200, 200), (301, 302)]
        );
        assert!(parse_status_ranges("600").is_err());
    }

    #[test]
    fn rewrite_rules_are_checked() {
        let rule = |extra: &str| format!("{MINIMAL}[[rules.rewrite]]\n{extra}\n");
        let c = Config::parse(
            &rule("path = '^/old/(.*)'\naction = \"redirect\"\nurl = \"/new/{R:1}\"\nstatus = 302"),
            "t.toml",
        )
        .unwrap();
        let w = &c.rules[0].rewrites[0];
        assert_eq!((w.action.as_str(), w.status), ("redirect", Some(302)));
        assert!(w.ignore_case && w.append_query && !w.stop);
        let e = err(&rule(
            "path = '^/old/(.*'\naction = \"rewrite\"\nurl = \"/x\"",
        ));
        assert_eq!((e.line, e.key.as_str()), (15, "rules[0].rewrite[0].path"));
        assert!(e.message.starts_with("invalid regex"), "{e}");
        let e = err(&rule(
            "path = '^/(a)'\naction = \"rewrite\"\nurl = \"/{R:2}\"",
        ));
        assert_eq!(e.key, "rules[0].rewrite[0].url");
        assert!(e.message.contains("1 group(s)"), "{e}");
        let e = err(&rule("action = \"redirect\"\nurl = \"/x\"\nstatus = 200"));
        assert_eq!(e.key, "rules[0].rewrite[0].status");
        let e = err(&rule("action = \"rewrite\""));
        assert!(e.message.contains("needs a url"), "{e}");
        let e = err(&rule("action = \"rewrite\"\nurl = \"/x\"\nfarm = \"nope\""));
        assert_eq!(e.key, "rules[0].rewrite[0].farm");
        let e = err(&rule("action = \"jump\""));
        assert_eq!(e.key, "rules[0].rewrite[0].action");
    }

    #[test]
    fn trusted_proxies_and_affinity_key() {
        let c = Config::parse(
            &format!("[proxy]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\naffinity_key = \"0123456789abcdef\"\n{MINIMAL}"),
            "t.toml",
        )
        .unwrap();
        let t = &c.proxy.trusted_proxies;
        assert!(t[0].contains("10.9.8.7".parse().unwrap()));
        assert!(!t[0].contains("11.0.0.1".parse().unwrap()));
        assert!(t[1].contains("::1".parse().unwrap()));
        assert!(t[0].contains("::ffff:10.0.0.1".parse().unwrap()));
        assert_eq!(c.proxy.affinity_key.source, "config");
        let e = err(&format!(
            "[proxy]\ntrusted_proxies = [\"10.0.0.0/33\"]\n{MINIMAL}"
        ));
        assert_eq!((e.line, e.key.as_str()), (2, "proxy.trusted_proxies"));
        let e = err(&format!("[proxy]\naffinity_key = \"short\"\n{MINIMAL}"));
        assert_eq!(e.key, "proxy.affinity_key");
        let random = Config::parse(MINIMAL, "t.toml").unwrap();
        assert_eq!(random.proxy.affinity_key.bytes.len(), 32);
    }

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::embedded_default().unwrap();
        assert_eq!(c.listeners[0].bind.to_string(), defaults::LISTEN_ADDRESS);
        assert!(!c.sample_servers.is_empty());
    }
}
