//! The admin listener: JSON status of farms, members, rules, plugins and the upstream pool;
//! runtime operations on members (drain, resume, remove, add, weight); Prometheus metrics at
//! `/metrics`; `/live` and `/ready`; and the dashboard page (`/dashboard`, no external assets).
//!
//! Every call but `/live`, `/ready` and the dashboard page itself needs `Authorization: Bearer
//! <token>` when a token is configured (it must be when the listener is not on loopback).
//! Operations change members only through their setters and take effect on the next request.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Binding, Config, FarmConfig, defaults};
use crate::farm::{FailureKind, Farm, Member, MemberState};
use crate::health::HealthChecker;
use crate::plugins::{HOOK_NAMES, Hook, LOG_LINES_PER_SECOND, Plugin, Runtime, hook_name};
use crate::proxy::Proxy;
use crate::resolve::Resolver;

/// The dashboard: one page, inline script and style, reading `/api/farms`.
const DASHBOARD: &str = include_str!("admin/dashboard.html");

/// Largest request body the admin API reads (member additions are tiny).
const MAX_BODY: usize = 64 * 1024;

/// What the admin handlers reach.
pub struct Admin {
    pub proxy: Arc<Proxy>,
    pub health: Arc<HealthChecker>,
    pub resolver: Resolver,
    pub reloader: Arc<crate::reload::Reloader>,
    pub token: Option<String>,
    /// True while farmgate serves; false before start-up ends and once shutdown begins.
    pub ready: Arc<AtomicBool>,
}

type Body = Full<Bytes>;

/// Serves the admin API on `listener` until `shutdown` turns true.
pub async fn serve(admin: Arc<Admin>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, peer)) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let admin = Arc::clone(&admin);
        let svc = service_fn(move |req| {
            let admin = Arc::clone(&admin);
            async move { Ok::<_, Infallible>(admin.handle(req, peer).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), svc)
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json_response(status, &json!({ "error": message.into() }))
}

impl Admin {
    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let path = req.uri().path().trim_end_matches('/').to_string();
        let method = req.method().clone();
        match (method.clone(), path.as_str()) {
            (Method::GET, "/live") => {
                return json_response(StatusCode::OK, &json!({"status": "live"}));
            }
            (Method::GET, "/ready") => {
                return if self.ready.load(Ordering::Relaxed) {
                    json_response(StatusCode::OK, &json!({"status": "ready"}))
                } else {
                    json_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &json!({"status": "not ready"}),
                    )
                };
            }
            (Method::GET, "" | "/dashboard") => {
                let mut r = Response::new(Full::new(Bytes::from_static(DASHBOARD.as_bytes())));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/html; charset=utf-8"),
                );
                r.headers_mut().insert(
                    header::CONTENT_SECURITY_POLICY,
                    header::HeaderValue::from_static(
                        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
                    ),
                );
                return r;
            }
            _ => {}
        }
        if !self.authorized(&req) {
            tracing::warn!(%peer, path = %path, "admin call without a valid bearer token refused");
            let mut r = error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"farmgate\""),
            );
            return r;
        }
        let segments: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(percent_decode)
            .collect();
        let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
        let query = req.uri().query().unwrap_or("").to_string();
        match (method, seg.as_slice()) {
            (Method::GET, ["metrics"]) => {
                let mut r = Response::new(Full::new(Bytes::from(self.metrics())));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }
            (Method::GET, ["api", "farms"]) => {
                let farms: Vec<Value> = self
                    .proxy
                    .generation()
                    .farms
                    .iter()
                    .map(|f| self.farm_json(f))
                    .collect();
                json_response(StatusCode::OK, &json!({ "farms": farms }))
            }
            (Method::GET, ["api", "farms", farm]) => match self.farm(farm) {
                Some(f) => json_response(StatusCode::OK, &self.farm_json(&f)),
                None => error(
                    StatusCode::NOT_FOUND,
                    format!("no farm is named \"{farm}\""),
                ),
            },
            (Method::GET, ["api", "rules"]) => json_response(StatusCode::OK, &self.rules_json()),
            (Method::GET, ["api", "plugins"]) => {
                json_response(StatusCode::OK, &self.plugins_json())
            }
            (Method::GET, ["api", "pool"]) => json_response(StatusCode::OK, &self.pool_json()),
            (Method::POST, ["api", "reload"]) => match self.reloader.reload_report().await {
                Ok(report) => json_response(StatusCode::OK, &reload_json(&report)),
                Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
            },
            (Method::POST, ["api", "farms", farm, "members"]) => {
                let body = match read_json(req).await {
                    Ok(v) => v,
                    Err(r) => return r,
                };
                self.add_member(farm, &body).await
            }
            (Method::POST, ["api", "farms", farm, "members", member, op]) => {
                let body = if *op == "weight" {
                    match read_json(req).await {
                        Ok(v) => v,
                        Err(r) => return r,
                    }
                } else {
                    Value::Null
                };
                self.operate(farm, member, op, &query, &body)
            }
            (m, ["api", ..]) | (m, ["metrics"]) => error(
                StatusCode::NOT_FOUND,
                format!("no such admin call: {m} {path}"),
            ),
            _ => error(StatusCode::NOT_FOUND, format!("nothing at {path}")),
        }
    }

    fn authorized<B>(&self, req: &Request<B>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let Some(given) = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        constant_time_eq(given.trim().as_bytes(), token.as_bytes())
    }

    fn farm(&self, name: &str) -> Option<Arc<Farm>> {
        self.proxy
            .generation()
            .farms
            .iter()
            .find(|f| f.name == name)
            .cloned()
    }

    fn farm_json(&self, farm: &Farm) -> Value {
        let generation = self.proxy.generation();
        let config = generation.config.farms.iter().find(|f| f.name == farm.name);
        let members: Vec<Value> = farm.members().iter().map(|m| member_json(m)).collect();
        json!({
            "name": farm.name,
            "balance": config.map(balance_in_use),
            "affinity": config.map(|c| c.affinity_mode.clone()),
            "panic": farm.in_panic(),
            "members": members,
        })
    }

    fn rules_json(&self) -> Value {
        let generation = self.proxy.generation();
        let c = &generation.config;
        let rules: Vec<Value> = c
            .rules
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "listeners": r.listeners.iter().map(|i| c.listeners[*i].name.clone()).collect::<Vec<_>>(),
                    "public_names": r.public_names.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                    "paths": r.paths,
                    "farm": c.farms[r.farm].name,
                    "internal_site_name": r.internal_site_name,
                    "preserve_host": r.preserve_host,
                    "translate_links": r.links.enabled,
                    "rewrite_rules": r.rewrites.len(),
                })
            })
            .collect();
        json!({ "rules": rules })
    }

    fn plugins_json(&self) -> Value {
        let rt = &self.proxy.plugins;
        let set = rt.plugins();
        let generation = self.proxy.generation();
        let one = |p: &Arc<Plugin>, builtin: bool| {
            let mut v = plugin_json(rt, p, builtin);
            if !builtin {
                v["bound"] = Value::Array(bindings_of(&generation.config, &set.plugins, p));
            }
            v
        };
        let folder: Vec<Value> = set.plugins.iter().map(|p| one(p, false)).collect();
        let builtins: Vec<Value> = rt.builtins().iter().map(|p| one(p, true)).collect();
        let rejected: Vec<Value> = rt
            .rejected_files()
            .into_iter()
            .map(|r| {
                json!({
                    "file": r.file,
                    "plugin": r.plugin,
                    "version": r.hash.get(..12).unwrap_or(&r.hash),
                    "reason": r.reason,
                })
            })
            .collect();
        json!({ "plugins": folder, "builtins": builtins, "rejected": rejected })
    }

    fn pool_json(&self) -> Value {
        let peers: Vec<Value> = self
            .proxy
            .pool
            .stats()
            .into_iter()
            .map(|s| {
                json!({
                    "peer": s.key.to_string(),
                    "opened": s.opened,
                    "reused": s.reused,
                    "closed": s.closed,
                    "idle": s.idle,
                })
            })
            .collect();
        json!({ "peers": peers })
    }

    /// drain, resume, remove (`?force=true` to skip draining) or weight.
    fn operate(
        &self,
        farm: &str,
        member: &str,
        op: &str,
        query: &str,
        body: &Value,
    ) -> Response<Body> {
        let Some(f) = self.farm(farm) else {
            return error(
                StatusCode::NOT_FOUND,
                format!("no farm is named \"{farm}\""),
            );
        };
        let Some(m) = f.member(member) else {
            return error(
                StatusCode::NOT_FOUND,
                format!("farm \"{farm}\" has no member named \"{member}\""),
            );
        };
        if m.admin_state() == MemberState::Removed && op != "weight" {
            return error(
                StatusCode::CONFLICT,
                format!("member \"{member}\" is removed; add it again"),
            );
        }
        match op {
            "drain" => {
                m.set_admin(MemberState::Draining, "drained through the admin API");
            }
            "resume" => {
                m.set_admin(MemberState::Active, "resumed through the admin API");
            }
            "remove" => {
                let force = query
                    .split('&')
                    .any(|kv| kv == "force=true" || kv == "force=1");
                let in_flight = m.stats.in_flight.load(Ordering::Relaxed);
                let drained = m.admin_state() == MemberState::Draining && in_flight == 0;
                if !drained && !force {
                    let why = if m.admin_state() != MemberState::Draining {
                        "drain it first, or remove it with ?force=true".to_string()
                    } else {
                        format!(
                            "it still has {in_flight} request(s) in flight; wait, or remove it with ?force=true"
                        )
                    };
                    return error(
                        StatusCode::CONFLICT,
                        format!("member \"{member}\" cannot be removed yet: {why}"),
                    );
                }
                m.set_admin(
                    MemberState::Removed,
                    if force {
                        "removed through the admin API (forced)"
                    } else {
                        "removed through the admin API after draining"
                    },
                );
            }
            "weight" => {
                let Some(w) = body
                    .get("weight")
                    .and_then(Value::as_u64)
                    .filter(|w| (1..=u64::from(u32::MAX)).contains(w))
                else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "send {\"weight\": N} with N at least 1",
                    );
                };
                f.set_weight(&m, w as u32);
                tracing::info!(farm, member, weight = w, "weight set through the admin API");
            }
            other => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("no operation \"{other}\"; use drain, resume, remove or weight"),
                );
            }
        }
        f.update_panic();
        json_response(StatusCode::OK, &member_json(&m))
    }

    async fn add_member(&self, farm: &str, body: &Value) -> Response<Body> {
        let Some(f) = self.farm(farm) else {
            return error(
                StatusCode::NOT_FOUND,
                format!("no farm is named \"{farm}\""),
            );
        };
        let host = match body.get("host").and_then(Value::as_str) {
            Some(h) if crate::names::is_host_name_or_ip(&h.trim().to_ascii_lowercase()) => {
                h.trim().to_ascii_lowercase()
            }
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "send {\"host\": NAME_OR_IP, \"port\": N, \"name\": ..., \"weight\": N}; host is required",
                );
            }
        };
        let port = match body.get("port") {
            None => 80,
            Some(p) => match p
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
            {
                Some(p) => p,
                None => return error(StatusCode::BAD_REQUEST, "port must be 1..=65535"),
            },
        };
        let weight = match body.get("weight") {
            None => crate::config::defaults::MEMBER_WEIGHT,
            Some(w) => match w
                .as_u64()
                .and_then(|w| u32::try_from(w).ok())
                .filter(|w| *w > 0)
            {
                Some(w) => w,
                None => return error(StatusCode::BAD_REQUEST, "weight must be at least 1"),
            },
        };
        let name = match body.get("name").and_then(Value::as_str) {
            Some(n)
                if !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) =>
            {
                n.to_string()
            }
            Some(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "a member name may use letters, digits, '-', '_', '.' and ':'",
                );
            }
            None => format!("{host}:{port}"),
        };
        let addrs = match self.resolver.resolve(&host, port).await {
            Ok((a, _)) => a,
            Err(e) => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("the name {host} does not resolve: {e}"),
                );
            }
        };
        let member = match f.add_member(name, host, port, weight) {
            Ok(m) => m,
            Err(e) => return error(StatusCode::CONFLICT, e),
        };
        member.set_addrs(addrs);
        let generation = self.proxy.generation();
        if let Some(fc) = generation.config.farms.iter().find(|c| c.name == f.name) {
            self.health.watch(Arc::clone(&f), Arc::clone(&member), fc);
        }
        f.update_panic();
        json_response(StatusCode::CREATED, &member_json(&member))
    }

    /// The Prometheus text exposition.
    fn metrics(&self) -> String {
        let generation = self.proxy.generation();
        let mut out = String::with_capacity(8192);
        let farms = &generation.farms;
        type Getter = fn(&Member) -> f64;
        let member_metrics: [(&str, &str, &str, Getter); 9] = [
            (
                "farmgate_member_requests_total",
                "counter",
                "Requests sent to the member.",
                |m| m.stats.requests.load(Ordering::Relaxed) as f64,
            ),
            (
                "farmgate_member_failures_total",
                "counter",
                "Requests to the member that failed, of every kind (see farmgate_member_failures_by_kind_total).",
                |m| m.stats.failures.load(Ordering::Relaxed) as f64,
            ),
            (
                "farmgate_member_in_flight",
                "gauge",
                "Requests in flight on the member.",
                |m| f64::from(m.stats.in_flight.load(Ordering::Relaxed)),
            ),
            (
                "farmgate_member_bytes_total",
                "counter",
                "Body bytes to and from the member.",
                |m| m.stats.bytes.load(Ordering::Relaxed) as f64,
            ),
            (
                "farmgate_member_response_time_seconds",
                "gauge",
                "Moving average of the member's time to response headers.",
                |m| m.stats.latency_ewma_us.load(Ordering::Relaxed) as f64 / 1e6,
            ),
            (
                "farmgate_member_weight",
                "gauge",
                "The member's weight.",
                |m| f64::from(m.weight()),
            ),
            (
                "farmgate_member_probes_total",
                "counter",
                "Health probes of the member.",
                |m| m.stats.probes.load(Ordering::Relaxed) as f64,
            ),
            (
                "farmgate_member_probe_failures_total",
                "counter",
                "Health probes of the member that failed.",
                |m| m.stats.probe_failures.load(Ordering::Relaxed) as f64,
            ),
            (
                "farmgate_member_alerts_total",
                "counter",
                "Probes slower than the response-time threshold.",
                |m| m.stats.alerts.load(Ordering::Relaxed) as f64,
            ),
        ];
        for (name, kind, help, get) in member_metrics {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for f in farms.iter() {
                for m in f.members().iter() {
                    let _ = writeln!(
                        out,
                        "{name}{{farm=\"{}\",member=\"{}\"}} {}",
                        label(&f.name),
                        label(&m.name),
                        get(m)
                    );
                }
            }
        }
        let name = "farmgate_member_failures_by_kind_total";
        let _ = writeln!(
            out,
            "# HELP {name} Requests to the member that failed, by kind: connect, tls (certificate refused), timeout (no response in time), broken (closed or invalid response), status (a live traffic failure status).\n# TYPE {name} counter"
        );
        for f in farms.iter() {
            for m in f.members().iter() {
                for kind in FailureKind::ALL {
                    let _ = writeln!(
                        out,
                        "{name}{{farm=\"{}\",member=\"{}\",kind=\"{}\"}} {}",
                        label(&f.name),
                        label(&m.name),
                        kind.as_str(),
                        m.stats.failures_of(kind)
                    );
                }
            }
        }
        let states = [
            MemberState::Active,
            MemberState::OutOfService,
            MemberState::Draining,
            MemberState::Removed,
            MemberState::UnableToVerify,
        ];
        let _ = writeln!(
            out,
            "# HELP farmgate_member_state The member's state (1 for the state it is in).\n# TYPE farmgate_member_state gauge"
        );
        for f in farms.iter() {
            for m in f.members().iter() {
                let now = m.state();
                for s in states {
                    let _ = writeln!(
                        out,
                        "farmgate_member_state{{farm=\"{}\",member=\"{}\",state=\"{}\"}} {}",
                        label(&f.name),
                        label(&m.name),
                        s.as_str(),
                        u8::from(now == s)
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP farmgate_farm_panic Whether the farm is below its minimum servers and uses every member.\n# TYPE farmgate_farm_panic gauge"
        );
        for f in farms.iter() {
            let _ = writeln!(
                out,
                "farmgate_farm_panic{{farm=\"{}\"}} {}",
                label(&f.name),
                u8::from(f.in_panic())
            );
        }
        let _ = writeln!(
            out,
            "# HELP farmgate_farm_fallback_choices_total First attempts whose member the host chose because the affinity chain (built-in balancer included) decided nothing.\n# TYPE farmgate_farm_fallback_choices_total counter"
        );
        for f in farms.iter() {
            let _ = writeln!(
                out,
                "farmgate_farm_fallback_choices_total{{farm=\"{}\"}} {}",
                label(&f.name),
                f.fallbacks.load(Ordering::Relaxed)
            );
        }
        let pool = self.proxy.pool.stats();
        type PoolGetter = fn(&crate::pool::PeerStats) -> f64;
        let pool_metrics: [(&str, &str, &str, PoolGetter); 4] = [
            (
                "farmgate_pool_connections_opened_total",
                "counter",
                "Upstream connections opened.",
                |s| s.opened as f64,
            ),
            (
                "farmgate_pool_connections_reused_total",
                "counter",
                "Requests sent on a reused upstream connection.",
                |s| s.reused as f64,
            ),
            (
                "farmgate_pool_connections_closed_total",
                "counter",
                "Upstream connections closed.",
                |s| s.closed as f64,
            ),
            (
                "farmgate_pool_connections_idle",
                "gauge",
                "Idle upstream connections kept.",
                |s| s.idle as f64,
            ),
        ];
        for (name, kind, help, get) in pool_metrics {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for s in &pool {
                let _ = writeln!(
                    out,
                    "{name}{{peer=\"{}\"}} {}",
                    label(&s.key.to_string()),
                    get(s)
                );
            }
        }
        let rt = &self.proxy.plugins;
        let all: Vec<Arc<Plugin>> = rt
            .plugins()
            .plugins
            .iter()
            .chain(rt.builtins().iter())
            .cloned()
            .collect();
        for (name, help, calls) in [
            ("farmgate_plugin_calls_total", "Calls of the plugin.", true),
            (
                "farmgate_plugin_failures_total",
                "Failed calls of the plugin (trap, deadline, memory cap, unusable decision).",
                false,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for p in &all {
                let v = if calls {
                    &p.stats.calls
                } else {
                    &p.stats.failures
                };
                let _ = writeln!(
                    out,
                    "{name}{{plugin=\"{}\",version=\"{}\"}} {}",
                    label(&p.name),
                    p.short_hash(),
                    v.load(Ordering::Relaxed)
                );
            }
        }
        let name = "farmgate_plugin_failures_by_hook_total";
        let _ = writeln!(
            out,
            "# HELP {name} Failed calls of the plugin by hook.\n# TYPE {name} counter"
        );
        for p in &all {
            for (hook, n) in HOOK_NAMES.iter().zip(&p.stats.failures_by_hook) {
                let n = n.load(Ordering::Relaxed);
                if n > 0 || p.hooks.iter().any(|h| hook_name(*h) == *hook) {
                    let _ = writeln!(
                        out,
                        "{name}{{plugin=\"{}\",version=\"{}\",hook=\"{hook}\"}} {n}",
                        label(&p.name),
                        p.short_hash(),
                    );
                }
            }
        }
        let name = "farmgate_plugin_log_lines_suppressed_total";
        let _ = writeln!(
            out,
            "# HELP {name} Log lines of the plugin (and about its failed calls) dropped over the limit of {LOG_LINES_PER_SECOND} a second.\n# TYPE {name} counter"
        );
        for p in &all {
            let _ = writeln!(
                out,
                "{name}{{plugin=\"{}\",version=\"{}\"}} {}",
                label(&p.name),
                p.short_hash(),
                p.log.suppressed.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP farmgate_tls_sni_ip_address_total TLS clients that sent an IP address as their SNI name (ignored, as RFC 6066 asks; logged at debug).\n# TYPE farmgate_tls_sni_ip_address_total counter\nfarmgate_tls_sni_ip_address_total {}",
            crate::telemetry::sni_ip_addresses()
        );
        let _ = writeln!(
            out,
            "# HELP farmgate_access_log_dropped_total Access log lines dropped because the writer fell behind.\n# TYPE farmgate_access_log_dropped_total counter\nfarmgate_access_log_dropped_total {}",
            self.proxy.access_log_dropped()
        );
        out
    }
}

/// The algorithm the built-in balance plugin uses for a farm: the configured one, else the
/// default, least current request, which under cookie affinity gives way to round robin for
/// new sessions (as TMG spreads them). Under client-ip affinity the client's address picks the
/// member (the `affinity` field says so), and a retry always goes to the least busy member.
fn balance_in_use(c: &FarmConfig) -> &str {
    match (&c.balance, c.affinity_mode.as_str()) {
        (Some(b), _) => b,
        (None, "cookie") => "round-robin",
        (None, _) => defaults::BALANCE,
    }
}

fn member_json(m: &Member) -> Value {
    let probe = m.last_probe.load();
    json!({
        "name": m.name,
        "host": m.host,
        "port": m.port,
        "weight": m.weight(),
        "state": m.state().as_str(),
        "admin_state": m.admin_state().as_str(),
        "health_state": m.health_state().as_str(),
        "reason": *m.reason(),
        "addresses": m.addrs().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "in_flight": m.stats.in_flight.load(Ordering::Relaxed),
        "requests": m.stats.requests.load(Ordering::Relaxed),
        "failures": m.stats.failures.load(Ordering::Relaxed),
        "failures_by_kind": FailureKind::ALL
            .iter()
            .map(|k| (k.as_str().to_string(), json!(m.stats.failures_of(*k))))
            .collect::<serde_json::Map<_, _>>(),
        "bytes": m.stats.bytes.load(Ordering::Relaxed),
        "response_time_ms": m.stats.latency_ewma_us.load(Ordering::Relaxed) as f64 / 1000.0,
        "alerts": m.stats.alerts.load(Ordering::Relaxed),
        "last_probe": probe.as_ref().map(|p| json!({
            "at_unix_ms": p.at_unix_ms,
            "latency_ms": p.latency.as_secs_f64() * 1000.0,
            "healthy": p.healthy,
            "detail": p.detail,
        })),
    })
}

/// Where the folder plugin `p` is asked: each rule and farm whose chain for one of its hooks
/// holds it, with its place in that chain (1 = asked first; the built-in ends every chain).
fn bindings_of(config: &Config, folder: &[Arc<Plugin>], p: &Plugin) -> Vec<Value> {
    let place = |binding: &Binding, hook: Hook| -> Option<usize> {
        if !p.hooks.contains(&hook) {
            return None;
        }
        let chain: Vec<&str> = match binding {
            Binding::Folder => folder
                .iter()
                .filter(|q| q.hooks.contains(&hook))
                .map(|q| q.name.as_str())
                .collect(),
            Binding::Named(names) => names
                .iter()
                .filter(|n| {
                    folder
                        .iter()
                        .any(|q| &q.name == *n && q.hooks.contains(&hook))
                })
                .map(String::as_str)
                .collect(),
        };
        chain.iter().position(|n| *n == p.name).map(|i| i + 1)
    };
    let mut out = Vec::new();
    for r in &config.rules {
        for (binding, hook) in [
            (&r.router, Hook::Router),
            (&r.link_translation, Hook::LinkTranslation),
        ] {
            if let Some(at) = place(binding, hook) {
                out.push(json!({ "rule": r.name, "hook": hook_name(hook), "place": at }));
            }
        }
    }
    for f in &config.farms {
        for (binding, hook) in [
            (&f.affinity, Hook::Affinity),
            (&f.health_evaluation, Hook::HealthEvaluation),
        ] {
            if let Some(at) = place(binding, hook) {
                out.push(json!({ "farm": f.name, "hook": hook_name(hook), "place": at }));
            }
        }
    }
    out
}

fn plugin_json(rt: &Runtime, p: &Arc<Plugin>, builtin: bool) -> Value {
    let hooks: Vec<&str> = p.hooks.iter().map(|h| hook_name(*h)).collect();
    let failures_by_hook: serde_json::Map<String, Value> = HOOK_NAMES
        .iter()
        .zip(&p.stats.failures_by_hook)
        .filter(|(h, n)| {
            n.load(Ordering::Relaxed) > 0 || p.hooks.iter().any(|k| hook_name(*k) == **h)
        })
        .map(|(h, n)| (h.to_string(), json!(n.load(Ordering::Relaxed))))
        .collect();
    let loaded_ms = p
        .loaded_at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let settings: Value = serde_json::from_str(&p.config.settings_json).unwrap_or(Value::Null);
    json!({
        "name": p.name,
        "builtin": builtin,
        "file": p.file.display().to_string(),
        "version": p.short_hash(),
        "hooks": hooks,
        "calls": p.stats.calls.load(Ordering::Relaxed),
        "hash": p.hash,
        "loaded_at_unix_ms": loaded_ms,
        "settings": settings,
        "failures": p.stats.failures.load(Ordering::Relaxed),
        "failures_by_hook": failures_by_hook,
        "last_failure": p.stats.last_failure().map(|(hook, reason)| json!({ "hook": hook, "reason": reason })),
        "disabled_for_ms": rt.disabled_for(p).map(|d| d.as_millis() as u64),
        "backoff_ms": p.stats.backoff_ms(),
        "log_lines_suppressed": p.log.suppressed.load(Ordering::Relaxed),
        "fail_closed": p.config.fail_closed,
    })
}

/// The answer to `POST /api/reload` when the config was applied: what it changed, which plugins
/// were loaded and which refused their file or their new settings (each keeps its previous
/// version), so `complete` is false when anything was refused.
fn reload_json(report: &crate::reload::ReloadReport) -> Value {
    let loaded: Vec<Value> = report
        .plugins_loaded
        .iter()
        .map(|(name, version)| json!({ "plugin": name, "version": version }))
        .collect();
    let refused: Vec<Value> = report
        .plugins_refused
        .iter()
        .map(|r| json!({ "plugin": r.plugin, "file": r.file, "reason": r.reason }))
        .collect();
    json!({
        "reloaded": report.text(),
        "complete": refused.is_empty(),
        "plugins": { "applied": loaded, "refused": refused },
    })
}

async fn read_json(req: Request<Incoming>) -> Result<Value, Response<Body>> {
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over {MAX_BODY} bytes or broke off"),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("the body is not JSON: {e}"),
        )
    })
}

/// A Prometheus label value: backslash, double quote and line feed escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `%XX` decoding of a path segment (member names such as `host:port` may come encoded).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Compares without an early exit, so the time taken does not tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(percent_decode("web1%3A8080"), "web1:8080");
        assert_eq!(percent_decode("a%zz"), "a%zz");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("é%41"), "éA");
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
