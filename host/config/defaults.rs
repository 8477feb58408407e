//! Every default farmgate applies when the config is silent, each a named constant with where it
//! comes from. `config/farmgate.toml` writes all of them out; a test keeps the two in step.

use std::time::Duration;

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

/// A member's weight when the config gives none (ARR's default weight is 100 of 100 for each
/// server; only the ratio matters, so 1 is as good).
pub const MEMBER_WEIGHT: u32 = 1;

/// Longest a single plugin call may run before it is interrupted (epoch deadline).
pub const PLUGIN_CALL_TIMEOUT: Duration = Duration::from_millis(10);

/// The longest call deadline the config accepts: a policy decision on the request path that
/// needs more than this is a bug, and the epoch ticker's idle logic relies on the bound.
pub const PLUGIN_CALL_TIMEOUT_MAX: Duration = Duration::from_secs(10);

/// Linear memory one plugin instance may grow to.
pub const PLUGIN_MEMORY_LIMIT_MB: u32 = 32;

/// Consecutive failures after which a plugin is disabled (with exponential backoff, until a new
/// file arrives).
pub const PLUGIN_FAILURES_BEFORE_DISABLE: u32 = 5;

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

/// Status codes a health probe may answer with and count as healthy (ARR's default range).
pub const HEALTH_STATUSES: &str = "200-399";

/// A probe answered slower than this counts as unhealthy and raises an alert (TMG: 5000 ms).
pub const RESPONSE_TIME_THRESHOLD: Duration = Duration::from_millis(5000);

/// Whether a rule translates links (TMG applies link translation to a web publishing rule by
/// default).
pub const TRANSLATE_LINKS: bool = true;

/// Media types whose bodies link translation rewrites.
pub const LINK_CONTENT_TYPES: &[&str] = &[
    "text/html",
    "text/css",
    "text/javascript",
    "application/javascript",
    "application/json",
    "application/xml",
];

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

/// Live traffic test: the statuses that count as failures (ARR's default list is 500-599).
pub const LIVE_FAILURE_STATUSES: &str = "500-599";

/// Live traffic test: failures within the failover period that take a member out; 0 turns the
/// test off, as ARR ships it.
pub const LIVE_MAX_FAILURES: u32 = 0;

/// Live traffic test: the window failures are counted in.
pub const LIVE_FAILOVER_PERIOD: Duration = Duration::from_secs(30);

/// Body bytes of a probe response handed to health evaluation.
pub const PROBE_BODY_PREFIX: usize = 4096;

/// The environment variable holding the admin API's bearer token.
pub const ADMIN_TOKEN_ENV: &str = "FARMGATE_ADMIN_TOKEN";
