//! Every default farmgate applies when the config is silent, each a named constant with where it
//! comes from. `config/farmgate.toml` writes out those it has keys for; a test keeps the two in
//! step.
//!
//! A few defaults are applied by the built-in plugins (separate wasm crates that cannot import
//! this file), which keep their own copies: those constants say so, and tests in
//! [`crate::builtin`] read the plugins' sources and check that each copy agrees.

use std::time::Duration;

use super::raw::AccessLogFormat;

/// Listener bind address of the default config: loopback only, so a first run publishes nothing.
pub const LISTEN_ADDRESS: &str = "127.0.0.1:8080";

/// TCP connect timeout to a member. TMG and ARR both give up on a member's connection attempt in
/// well under a minute; 10 s is long enough for a busy server's accept queue and short enough that
/// a dead member does not hold the client.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Time to wait for a member's response headers once the request is sent. ARR's proxy
/// "Time-out (seconds)" setting defaults to 30 s.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an idle pooled upstream connection is kept. Below IIS's 120 s and nginx's 75 s
/// keep-alive, so the proxy, not the member, is normally the side that closes an idle connection.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Idle connections kept per upstream address (per pool key).
pub const POOL_MAX_IDLE_PER_PEER: usize = 64;

/// How often member host names are resolved again (addresses in the static host table and IP
/// literals never change; DNS names may).
pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(60);

/// How long in-flight requests may run after SIGINT/SIGTERM before farmgate exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// `Retry-After` sent with a 503 when a farm has no member to take the request.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// How many other members an idempotent request may be tried on after a connect failure.
pub const CONNECT_RETRIES: u32 = 2;

/// The pseudonym farmgate adds to `Via` (RFC 9110 §7.6.3).
pub const VIA_PSEUDONYM: &str = "farmgate";

/// Worker threads of the async runtime; 0 means one per CPU core.
pub const WORKER_THREADS: usize = 0;

/// Paths a publishing rule matches when it names none: everything.
pub const RULE_PATH: &str = "/";

/// Whether members get the client's Host header instead of the rule's internal site name. Off:
/// TMG and ARR send the internal site name by default.
pub const PRESERVE_HOST: bool = false;

/// The `Upgrade` protocols a rule passes to its members: WebSocket, as TMG and ARR do. `h2c` can
/// never be listed: an upgraded h2c connection would carry requests past the rules.
pub const UPGRADE_PROTOCOLS: &[&str] = &["websocket"];

/// How access log lines are written: the NCSA combined format (what IIS and most log tools read),
/// with the rule, farm, member and duration appended.
pub const ACCESS_LOG_FORMAT: AccessLogFormat = AccessLogFormat::Combined;

/// A member's weight when the config gives none (ARR's default weight is 100 of 100 for each
/// server; only the ratio matters, so 1 is as good).
pub const MEMBER_WEIGHT: u32 = 1;

/// Longest a single plugin call may run before it is interrupted (epoch deadline).
pub const PLUGIN_CALL_TIMEOUT: Duration = Duration::from_millis(10);

/// The longest call deadline the config accepts: a policy decision on the request path that
/// needs more than this is a bug, and the epoch ticker's idle logic relies on the bound.
pub const PLUGIN_CALL_TIMEOUT_MAX: Duration = Duration::from_secs(10);

/// The built-in plugins' call deadline, instead of [`PLUGIN_CALL_TIMEOUT`]. They are farmgate's
/// own code, and a built-in interrupted by a deadline fails open: on a loaded machine, where a
/// thread can wait more than the 10 ms meant for third-party plugins, that would let internal
/// names through untranslated. Their deadline only guards against a bug that loops.
pub const BUILTIN_CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// Linear memory one plugin instance may grow to.
pub const PLUGIN_MEMORY_LIMIT_MB: u32 = 32;

/// Consecutive failures after which a plugin is disabled (with exponential backoff, until a new
/// file arrives).
pub const PLUGIN_FAILURES_BEFORE_DISABLE: u32 = 5;

/// Whether a failing plugin answers 503 instead of being skipped. Off: a plugin fails open and
/// the chain goes on, ending with the built-in.
pub const PLUGIN_FAIL_CLOSED: bool = false;

/// Whether a plugin may open network connections and look up names. Off: a plugin reaches only
/// what the host offers unless the config grants more.
pub const PLUGIN_NETWORK: bool = false;

/// Member choice when a farm names no `balance`: least current request, ARR's default. Under
/// cookie affinity new sessions go round robin instead, as TMG spreads them.
pub const BALANCE: &str = "least-current-request";

/// Client affinity of a farm: none (ARR's default; TMG offers cookie or client-IP affinity).
pub const AFFINITY: &str = "none";

/// Name of the affinity cookie farmgate writes (ARR's is `ARRAffinity`, also configurable).
pub const AFFINITY_COOKIE: &str = "farmgate_affinity";

/// The environment variable that holds the affinity cookie signing key. Every farmgate instance
/// given the same key accepts the others' cookies; without one, a random key is made at start.
pub const AFFINITY_KEY_ENV: &str = "FARMGATE_AFFINITY_KEY";

/// Status codes a health probe may answer with and count as healthy (ARR's default range). The
/// host hands every farm's list to the built-in health plugin, whose own copy is only the
/// fallback for a farm missing from its settings.
pub const HEALTH_STATUSES: &str = "200-399";

/// A probe answered slower than this counts as unhealthy and raises an alert (TMG: 5000 ms).
/// The host hands every farm's threshold to the built-in health plugin, whose own copy is only
/// the fallback for a farm missing from its settings.
pub const RESPONSE_TIME_THRESHOLD: Duration = Duration::from_millis(5000);

/// Whether a rule translates links (TMG applies link translation to a web publishing rule by
/// default).
pub const TRANSLATE_LINKS: bool = true;

/// Media types whose bodies link translation rewrites. The host hands every rule's list to the
/// built-in link-translation plugin, whose own copy is only the fallback for a rule missing from
/// its settings.
pub const LINK_CONTENT_TYPES: &[&str] = &[
    "text/html",
    "text/css",
    "text/javascript",
    "application/javascript",
    "application/json",
    "application/xml",
];

/// Response headers link translation rewrites: those that carry URLs or cookie domains. Applied
/// by the built-in link-translation plugin (the config has no key for it, and the host passes no
/// list).
pub const LINK_HEADERS: &[&str] = &["location", "content-location", "refresh", "set-cookie"];

/// URL rewrite rules: whether the regexes ignore case (IIS URL Rewrite's default).
pub const REWRITE_IGNORE_CASE: bool = true;

/// URL rewrite rules: whether a rewrite or redirect keeps the request's query string (IIS URL
/// Rewrite's "append query string", on by default).
pub const REWRITE_APPEND_QUERY: bool = true;

/// URL rewrite rules: whether a matching rule ends the list (IIS's "stop processing of
/// subsequent rules", off by default).
pub const REWRITE_STOP: bool = false;

/// URL rewrite rules: the status of a redirect that names none, IIS's "Permanent". Applied by the
/// built-in router plugin (the host passes only a configured status).
pub const REWRITE_REDIRECT_STATUS: u16 = 301;

/// URL rewrite rules: the status of a direct response that names none. Applied by the built-in
/// router plugin.
pub const REWRITE_RESPOND_STATUS: u16 = 200;

/// URL rewrite rules: the content type of a direct response that names none. Applied by the
/// built-in router plugin.
pub const REWRITE_RESPOND_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// The connectivity verifier of a farm that names none: no check. Members are not probed; only
/// the live traffic test (when on) takes one out of service.
pub const HEALTH_CHECK: &str = "none";

/// How often a connectivity verifier checks each member (TMG: every 30 s).
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(30);

/// How long a check may take before it fails (TMG: 5000 ms).
pub const HEALTH_TIMEOUT: Duration = Duration::from_millis(5000);

/// Consecutive failed checks before a member goes out of service, and passed checks before it
/// returns (TMG acts on one).
pub const HEALTH_DOWN_AFTER: u32 = 1;
pub const HEALTH_UP_AFTER: u32 = 1;

/// HTTP check method.
pub const HEALTH_METHOD: &str = "GET";

/// Minimum servers (ARR): below this many healthy members, every member that is not removed is
/// put back in the rotation; 0 turns it off.
pub const MIN_SERVERS: usize = 0;

/// Minimum servers as a percentage of the farm's members; 0 turns it off.
pub const MIN_SERVERS_PERCENT: u32 = 0;

/// Live traffic test: the statuses that count as failures (ARR's default list is 500-599).
pub const LIVE_FAILURE_STATUSES: &str = "500-599";

/// Live traffic test: failures within the failover period that take a member out; 0 turns the
/// test off, as ARR ships it.
pub const LIVE_MAX_FAILURES: u32 = 0;

/// How long a member whose connection was refused gets no new work (passively, whatever the
/// live traffic test's settings): long enough that a client's next requests do not bounce off
/// it, short enough that a restarted member is back at once.
pub const REFUSED_HOLD_OFF: Duration = Duration::from_secs(2);

/// Live traffic test: the window failures are counted in.
pub const LIVE_FAILOVER_PERIOD: Duration = Duration::from_secs(30);

/// Body bytes of a probe response handed to health evaluation.
pub const PROBE_BODY_PREFIX: usize = 4096;

/// The environment variable holding the admin API's bearer token.
pub const ADMIN_TOKEN_ENV: &str = "FARMGATE_ADMIN_TOKEN";
// HTTPS: listeners, bridging to members, per-rule redirect and HSTS, upgraded connections.

/// Whether a listener offers HTTP/2: by ALPN (`h2`, then `http/1.1`) on TLS listeners, and as
/// h2c with prior knowledge on plain ones. Clients that do not ask for it get HTTP/1.1.
pub const LISTENER_HTTP2: bool = true;

/// Longest a client may take to complete the TLS handshake; a connection that stalls there holds
/// a socket and is closed.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an upgraded connection (WebSocket and other `Upgrade` protocols) may pass no byte in
/// either direction before farmgate closes both sides. WebSocket applications ping well within
/// this; a client that vanished without a FIN is let go.
pub const UPGRADE_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Whether a rule answers plain-HTTP requests with a redirect to HTTPS (TMG's "redirect HTTP
/// requests to HTTPS" is off until the publisher turns it on).
pub const REDIRECT_TO_HTTPS: bool = false;

/// The port in redirects to HTTPS when the rule is published on no TLS listener with a fixed
/// port; 443 is left out of the URL.
pub const HTTPS_PORT: u16 = 443;

/// Whether a rule adds `Strict-Transport-Security` to its HTTPS responses. Off: HSTS is a
/// promise browsers hold the site to for `hsts_max_age`, so it is the publisher's decision.
pub const HSTS: bool = false;

/// `max-age` of the HSTS header: one year, the value HSTS preload lists ask for.
pub const HSTS_MAX_AGE: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Whether the HSTS header covers subdomains.
pub const HSTS_INCLUDE_SUBDOMAINS: bool = false;

/// How farmgate talks to a farm's members: `http` (SSL offload when the client came over HTTPS)
/// or `https` (HTTPS bridging).
pub const FARM_SCHEME: &str = "http";

/// A member's port when the config gives none, by scheme.
pub const MEMBER_PORT_HTTP: u16 = 80;
pub const MEMBER_PORT_HTTPS: u16 = 443;

/// Whether farmgate speaks HTTP/2 to a farm's members (offered by ALPN over HTTPS, h2c with prior
/// knowledge over HTTP). Off: HTTP/1.1 with keep-alive, which every web server speaks.
pub const FARM_HTTP2: bool = false;

/// What an HTTPS member's certificate is checked against: `member-name` (the member's computer
/// name or address, TMG's first way), `internal-site-name` (the rule's internal site name, TMG's
/// second way) or `none` (no check at all; a warning is logged at start).
pub const TLS_VERIFY: &str = "member-name";

/// Time a client has to send a request's head, from its first byte (from the connection's start
/// for the first request): bounds slowloris clients.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an HTTP/1 keep-alive connection may sit idle, between the end of one response and
/// the first byte of the next request: IIS's `connectionTimeout` default.
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Largest request head (start line and headers) accepted; larger gets 431. IIS's
/// `maxRequestBytes` default is 16 KiB per header line and 16 KiB for the request line; 64 KiB
/// for the whole head is as generous.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Most headers a request may carry; more gets 431.
pub const MAX_HEADERS: usize = 100;

/// Client connections open at once across all listeners; at the limit farmgate stops accepting
/// until one closes (back-pressure in the kernel's accept queue, never a crash or fd exhaustion).
pub const MAX_CONNECTIONS: usize = 10_000;

/// Largest request body a rule accepts; larger gets 413. IIS request filtering's default
/// `maxAllowedContentLength` (30,000,000 bytes).
pub const MAX_BODY_BYTES: u64 = 30_000_000;
