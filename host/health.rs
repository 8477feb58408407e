//! Member health: connectivity verifiers (HTTP GET/HEAD, TCP connect, ping), the live traffic
//! test, consecutive-result thresholds, response-time alerts and minimum servers.
//!
//! One task per member probes it every `interval`; members of a farm that resolve to the same
//! addresses (several names for one server) share one probe per interval and its result, so a
//! server is not probed once per name. An HTTP probe's outcome goes through the
//! health-evaluation chain (plugins of the folder, then the built-in ARR test) to a verdict; TCP
//! and ping probes are healthy when they connect or answer. A verifier that cannot run at all
//! (the name no longer resolves) puts the member in unable-to-verify. Probes use the resolver but
//! their own connections, never the request pool.
//!
//! This module changes member state only through the member's setters and the farm's
//! minimum-servers evaluation; it decides nothing about balancing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;

use crate::config::{Binding, Check, Config, FarmConfig, HealthSettings, defaults};
use crate::farm::{FailureKind, Farm, Member, MemberState, ProbeRecord};
use crate::plugins::{HealthVerdict, Hook, ProbeResult, Runtime};
use crate::resolve::Resolver;

/// Starts and keeps the verifier tasks.
pub struct HealthChecker {
    runtime: Arc<Runtime>,
    resolver: Resolver,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    shared: Arc<SharedProbes>,
}

/// The latest probe of each farm's address set, shared by the members that resolve to it.
#[derive(Default)]
struct SharedProbes {
    slots: std::sync::Mutex<HashMap<(String, Vec<SocketAddr>), Slot>>,
}

/// One address set's latest outcome and when its probe began; the lock is held while a probe
/// runs, so members probing at once wait for it instead of probing again.
type Slot = Arc<tokio::sync::Mutex<Option<(Instant, Outcome)>>>;

impl SharedProbes {
    /// The slot of `member`'s addresses in `farm`; none while it has no address.
    fn slot(&self, farm: &Farm, member: &Member) -> Option<Slot> {
        let mut addrs = member.addrs().as_ref().clone();
        if addrs.is_empty() {
            return None;
        }
        addrs.sort();
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        Some(Arc::clone(
            slots.entry((farm.name.clone(), addrs)).or_default(),
        ))
    }
}

impl HealthChecker {
    /// Checks that every configured verifier can run here (ping needs unprivileged ICMP
    /// sockets), then starts one task per member of every farm with a verifier.
    pub fn start(
        config: &Config,
        farms: &[Arc<Farm>],
        runtime: Arc<Runtime>,
        resolver: Resolver,
    ) -> Result<Arc<HealthChecker>, String> {
        check_runnable(config)?;
        let checker = Arc::new(HealthChecker {
            runtime,
            resolver,
            tasks: std::sync::Mutex::new(Vec::new()),
            shared: Arc::default(),
        });
        checker.watch_all(config, farms);
        Ok(checker)
    }

    /// Starts verifying every member of `farms` (configured by `config`).
    fn watch_all(&self, config: &Config, farms: &[Arc<Farm>]) {
        for (farm, fc) in farms.iter().zip(&config.farms) {
            for member in farm.members().iter() {
                self.watch(Arc::clone(farm), Arc::clone(member), fc);
            }
        }
    }

    /// After a config reload: the verifiers of the old generation stop, those of the new one
    /// start (members that persist keep their state; only their check counters start over).
    pub fn replace(&self, config: &Config, farms: &[Arc<Farm>]) -> Result<(), String> {
        check_runnable(config)?;
        self.stop();
        self.shared
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.watch_all(config, farms);
        Ok(())
    }

    /// Starts verifying one member (at start, or when the admin API adds one). Nothing happens
    /// when the farm has no verifier.
    pub fn watch(&self, farm: Arc<Farm>, member: Arc<Member>, fc: &FarmConfig) {
        if fc.health.check == Check::None {
            return;
        }
        let task = tokio::spawn(verify_loop(
            farm,
            member,
            fc.health.clone(),
            fc.health_evaluation.clone(),
            Arc::clone(&self.runtime),
            self.resolver.clone(),
            Arc::clone(&self.shared),
        ));
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.retain(|t| !t.is_finished());
            tasks.push(task);
        }
    }

    /// Stops every verifier task.
    pub fn stop(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What one probe found.
#[derive(Clone)]
enum Outcome {
    /// The verifier ran; `probe.error` says why there was no response, if there was none.
    Probed(Arc<ProbeResult>),
    /// The verifier could not run (the name does not resolve).
    Unverifiable(String),
}

async fn verify_loop(
    farm: Arc<Farm>,
    member: Arc<Member>,
    settings: HealthSettings,
    binding: Binding,
    runtime: Arc<Runtime>,
    resolver: Resolver,
    shared: Arc<SharedProbes>,
) {
    let mut fails = 0u32;
    let mut passes = 0u32;
    // The take-outs the pass count has seen: a take-out since (by the live traffic test on the
    // request path) starts the count again, so `up_after` guards every return.
    let mut counted = member.take_outs();
    loop {
        if member.admin_state() == MemberState::Removed {
            return;
        }
        let probed_from = member.take_outs();
        let outcome = shared_probe(&shared, &farm, &member, &settings, &resolver).await;
        member
            .stats
            .probes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match outcome {
            Outcome::Unverifiable(reason) => {
                fails = 0;
                passes = 0;
                member
                    .stats
                    .probe_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                record(&member, Duration::ZERO, false, reason.clone());
                member.set_health(MemberState::UnableToVerify, &reason);
            }
            Outcome::Probed(p) => {
                let latency = Duration::from_micros(p.latency_us);
                if p.error.is_none() && latency > settings.response_time_threshold {
                    alert(&farm, &member, &settings, latency);
                }
                let verdict = judge(&runtime, &binding, &settings, &p).await;
                let (healthy, detail) = match &verdict {
                    Ok(()) => (
                        true,
                        p.status
                            .map_or("answered".into(), |s| format!("status {s}")),
                    ),
                    Err(why) => (false, why.clone()),
                };
                record(&member, latency, healthy, detail);
                // The state first, then the count: a take-out the state shows is counted.
                let down = member.health_state() != MemberState::Active;
                let take_outs = member.take_outs();
                if take_outs != counted {
                    passes = 0;
                    counted = take_outs;
                }
                if healthy {
                    fails = 0;
                    // A probe that began before the latest take-out says nothing after it.
                    if take_outs == probed_from {
                        passes = passes.saturating_add(1);
                    }
                    if down && passes >= settings.up_after {
                        member.clear_live_failures();
                        member.set_health(
                            MemberState::Active,
                            &format!("passed {passes} check(s) in a row"),
                        );
                    }
                } else {
                    passes = 0;
                    fails = fails.saturating_add(1);
                    member
                        .stats
                        .probe_failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if fails >= settings.down_after {
                        let why = verdict.err().unwrap_or_default();
                        member.set_health(
                            MemberState::OutOfService,
                            &format!("failed {fails} check(s) in a row: {why}"),
                        );
                    }
                }
            }
        }
        farm.update_panic();
        tokio::time::sleep(settings.interval).await;
    }
}

fn record(member: &Member, latency: Duration, healthy: bool, detail: String) {
    let at_unix_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    member.last_probe.store(Some(Arc::new(ProbeRecord {
        at_unix_ms,
        latency,
        healthy,
        detail,
    })));
}

/// The verdict on a probe: TCP and ping probes are healthy when they got through; an HTTP probe
/// is asked of the health-evaluation chain (the folder's plugins, then the built-in test). When
/// every plugin passes or fails, a response with a status below 400 is healthy.
async fn judge(
    runtime: &Runtime,
    binding: &Binding,
    settings: &HealthSettings,
    p: &Arc<ProbeResult>,
) -> Result<(), String> {
    if let Some(e) = &p.error {
        return Err(e.clone());
    }
    if !matches!(settings.check, Check::Http { .. }) {
        return Ok(());
    }
    let mut chain = runtime.chain(Hook::HealthEvaluation, binding);
    chain.extend(runtime.builtin(Hook::HealthEvaluation));
    for plugin in &chain {
        match runtime.evaluate_health(plugin, p).await {
            Ok(HealthVerdict::Pass) | Err(_) => continue,
            Ok(HealthVerdict::Healthy) => return Ok(()),
            Ok(HealthVerdict::Unhealthy(why)) => return Err(why),
        }
    }
    match p.status {
        Some(s) if s < 400 => Ok(()),
        Some(s) => Err(format!("status {s}")),
        None => Err("no response".into()),
    }
}

/// The outcome of a probe of `member`'s addresses: the one another member of the farm with the
/// same addresses started within the last interval, else a new one.
async fn shared_probe(
    shared: &SharedProbes,
    farm: &Farm,
    member: &Member,
    s: &HealthSettings,
    resolver: &Resolver,
) -> Outcome {
    let Some(slot) = shared.slot(farm, member) else {
        return probe(farm, member, s, resolver).await;
    };
    let mut latest = slot.lock().await;
    if let Some((at, outcome)) = latest.as_ref()
        && at.elapsed() < s.interval
    {
        return match outcome {
            Outcome::Probed(p) => Outcome::Probed(Arc::new(ProbeResult {
                member: member.name.clone(),
                ..ProbeResult::clone(p)
            })),
            Outcome::Unverifiable(why) => Outcome::Unverifiable(why.clone()),
        };
    }
    let at = Instant::now();
    let outcome = probe(farm, member, s, resolver).await;
    *latest = Some((at, outcome.clone()));
    outcome
}

/// One probe of `member` by the farm's verifier.
async fn probe(farm: &Farm, member: &Member, s: &HealthSettings, resolver: &Resolver) -> Outcome {
    match &s.check {
        Check::None => Outcome::Unverifiable("no verifier".into()),
        Check::Http {
            url,
            host_header,
            head,
        } => {
            http_probe(
                farm,
                member,
                s,
                url,
                host_header.as_deref(),
                *head,
                resolver,
            )
            .await
        }
        Check::Tcp { port } => {
            let port = port.unwrap_or(member.port);
            let addrs = match resolver.resolve(&member.host, port).await {
                Ok((a, _)) => a,
                Err(e) => return unresolved(&member.host, &e),
            };
            let start = Instant::now();
            let error = match tokio::time::timeout(s.timeout, connect_any(&addrs)).await {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(format!("TCP connect to port {port} failed: {e}")),
                Err(_) => Some(format!(
                    "TCP connect to port {port}: no answer within {:?}",
                    s.timeout
                )),
            };
            Outcome::Probed(Arc::new(bare_result(
                farm,
                member,
                format!("tcp://{}:{port}", member.host),
                start,
                error,
            )))
        }
        Check::Ping => {
            let addrs = match resolver.resolve(&member.host, 0).await {
                Ok((a, _)) => a,
                Err(e) => return unresolved(&member.host, &e),
            };
            let start = Instant::now();
            let error = match addrs.first() {
                None => Some("the name has no address".into()),
                Some(a) => match tokio::time::timeout(s.timeout, ping(a.ip())).await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(format!("ping failed: {e}")),
                    Err(_) => Some(format!("no echo reply within {:?}", s.timeout)),
                },
            };
            Outcome::Probed(Arc::new(bare_result(
                farm,
                member,
                format!("icmp://{}", member.host),
                start,
                error,
            )))
        }
    }
}

fn unresolved(host: &str, e: &std::io::Error) -> Outcome {
    Outcome::Unverifiable(format!("the name {host} does not resolve: {e}"))
}

fn bare_result(
    farm: &Farm,
    member: &Member,
    url: String,
    start: Instant,
    error: Option<String>,
) -> ProbeResult {
    ProbeResult {
        farm: farm.name.clone(),
        member: member.name.clone(),
        url,
        status: None,
        headers: http::HeaderMap::new(),
        body_prefix: Vec::new(),
        latency_us: start.elapsed().as_micros() as u64,
        error,
    }
}

async fn connect_any(addrs: &[SocketAddr]) -> std::io::Result<tokio::net::TcpStream> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for a in addrs {
        match tokio::net::TcpStream::connect(a).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// GET (or HEAD) of the verifier URL, `*` replaced by the member's name, on a connection of
/// its own. The first [`defaults::PROBE_BODY_PREFIX`] bytes of the body are kept.
async fn http_probe(
    farm: &Farm,
    member: &Member,
    s: &HealthSettings,
    template: &str,
    host_header: Option<&str>,
    head: bool,
    resolver: &Resolver,
) -> Outcome {
    let text = template.replacen('*', &member.host, 1);
    let uri: http::Uri = match text.parse() {
        Ok(u) => u,
        Err(e) => return Outcome::Unverifiable(format!("the check URL {text} is not valid: {e}")),
    };
    let Some(authority) = uri.authority() else {
        return Outcome::Unverifiable(format!("the check URL {text} names no host"));
    };
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(member.port);
    let addrs = match resolver.resolve(host, port).await {
        Ok((a, _)) => a,
        Err(e) => return unresolved(host, &e),
    };
    let host_value = host_header.map(str::to_string).unwrap_or_else(|| {
        if port == 80 {
            authority.host().to_string()
        } else {
            format!("{}:{port}", authority.host())
        }
    });
    let shown = format!(
        "http://{host_value}{}",
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let start = Instant::now();
    let exchange = async {
        let stream = connect_any(&addrs)
            .await
            .map_err(|e| format!("connect failed: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake failed: {e}"))?;
        let driver = tokio::spawn(conn);
        let req = Request::builder()
            .method(if head {
                http::Method::HEAD
            } else {
                http::Method::GET
            })
            .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(http::header::HOST, host_value.as_str())
            .header(http::header::USER_AGENT, "farmgate-health-check")
            .header(http::header::CONNECTION, "close")
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("cannot build the check request: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("no response: {e}"))?;
        let latency = start.elapsed();
        let (parts, mut body) = resp.into_parts();
        let mut prefix = Vec::new();
        while prefix.len() < defaults::PROBE_BODY_PREFIX {
            match body.frame().await {
                Some(Ok(f)) => {
                    if let Some(d) = f.data_ref() {
                        let room = defaults::PROBE_BODY_PREFIX - prefix.len();
                        prefix.extend_from_slice(&d[..d.len().min(room)]);
                    }
                }
                Some(Err(_)) | None => break,
            }
        }
        driver.abort();
        Ok::<_, String>((parts.status, parts.headers, prefix, latency))
    };
    let (status, headers, body_prefix, latency, error) =
        match tokio::time::timeout(s.timeout, exchange).await {
            Ok(Ok((status, headers, body, latency))) => {
                (Some(status.as_u16()), headers, body, latency, None)
            }
            Ok(Err(e)) => (
                None,
                http::HeaderMap::new(),
                Vec::new(),
                start.elapsed(),
                Some(e),
            ),
            Err(_) => (
                None,
                http::HeaderMap::new(),
                Vec::new(),
                start.elapsed(),
                Some(format!("no response within {} ms", s.timeout.as_millis())),
            ),
        };
    Outcome::Probed(Arc::new(ProbeResult {
        farm: farm.name.clone(),
        member: member.name.clone(),
        url: shown,
        status,
        headers,
        body_prefix,
        latency_us: latency.as_micros() as u64,
        error,
    }))
}

/// A member answered slower than the response-time threshold: a WARN event, a counter, and the
/// webhook if one is configured (posted in the background; its failure is only logged).
fn alert(farm: &Farm, member: &Member, s: &HealthSettings, latency: Duration) {
    member
        .stats
        .alerts
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (ms, threshold_ms) = (
        latency.as_millis() as u64,
        s.response_time_threshold.as_millis() as u64,
    );
    tracing::warn!(
        farm = %farm.name, member = %member.name, latency_ms = ms, threshold_ms,
        "alert: member missed the response-time threshold"
    );
    let Some(url) = s.alert_webhook.clone() else {
        return;
    };
    let body = serde_json::json!({
        "alert": "response-time-threshold",
        "farm": farm.name,
        "member": member.name,
        "latency_ms": ms,
        "threshold_ms": threshold_ms,
    })
    .to_string();
    let timeout = s.timeout;
    tokio::spawn(async move {
        match tokio::time::timeout(timeout, post_json(&url, body)).await {
            Ok(Ok(status)) if status.is_success() => {}
            Ok(Ok(status)) => tracing::warn!(%url, %status, "alert webhook refused the alert"),
            Ok(Err(e)) => tracing::warn!(%url, error = %e, "alert webhook failed"),
            Err(_) => tracing::warn!(%url, "alert webhook did not answer in time"),
        }
    });
}

async fn post_json(url: &http::Uri, body: String) -> Result<StatusCode, String> {
    let authority = url.authority().ok_or("the webhook URL names no host")?;
    let port = authority.port_u16().unwrap_or(80);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((authority.host(), port))
        .await
        .map_err(|e| e.to_string())?
        .collect();
    let stream = connect_any(&addrs).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let req = Request::post(url.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string());
    driver.abort();
    resp.map(|r| r.status())
}

/// The live traffic test (ARR) on one request's `outcome`: a member's answer, or the kind of
/// failure that left it without one (refused connection, refused certificate, timeout, broken
/// response). Every failure, and while the test is on (`live_max_failures` above 0) every
/// answer with one of `live_failure_statuses`, is counted as the member's failure by kind;
/// `live_max_failures` of them within `live_failover_period` take an active member out of
/// service. The explicit verifier brings it back after `up_after` passed checks, counted from
/// the take-out; a farm without one gets the member back after one failover period.
pub fn live_traffic(
    farm: &Arc<Farm>,
    member: &Arc<Member>,
    s: &HealthSettings,
    outcome: Result<StatusCode, FailureKind>,
) {
    let kind = match outcome {
        Err(FailureKind::Connect) => {
            // A refused connection is evidence enough: no new work for a short while.
            if !member.held_off() {
                tracing::info!(farm = %farm.name, member = %member.name, hold = ?crate::config::defaults::REFUSED_HOLD_OFF, "connection refused: the member gets no new requests for a moment");
            }
            member.hold_off(crate::config::defaults::REFUSED_HOLD_OFF);
            FailureKind::Connect
        }
        Err(kind) => kind,
        Ok(status) if s.live_max_failures > 0 && failure_status(s, status) => FailureKind::Status,
        Ok(_) => return,
    };
    member.stats.count_failure(kind);
    if s.live_max_failures == 0 || member.health_state() != MemberState::Active {
        return;
    }
    let n = member.live_failure(s.live_failover_period);
    if n < s.live_max_failures as usize {
        return;
    }
    member.clear_live_failures();
    let period = s.live_failover_period;
    if member.set_health(
        MemberState::OutOfService,
        &format!(
            "{n} failures of live traffic within {}",
            humantime::format_duration(period)
        ),
    ) {
        farm.update_panic();
        if s.check == Check::None {
            let (farm, member) = (Arc::clone(farm), Arc::clone(member));
            tokio::spawn(async move {
                tokio::time::sleep(period).await;
                if member.health_state() == MemberState::OutOfService {
                    member.set_health(
                        MemberState::Active,
                        "the failover period ended (the farm has no verifier to ask)",
                    );
                    farm.update_panic();
                }
            });
        }
    }
}

/// Whether the live traffic test counts `status` as a failure.
fn failure_status(s: &HealthSettings, status: StatusCode) -> bool {
    let code = status.as_u16();
    s.live_failure_statuses
        .iter()
        .any(|(lo, hi)| (*lo..=*hi).contains(&code))
}

/// Whether every verifier `config` asks for can run here (ping needs unprivileged ICMP).
fn check_runnable(config: &Config) -> Result<(), String> {
    match config.farms.iter().find(|f| f.health.check == Check::Ping) {
        Some(f) => ping_available().map_err(|e| format!("farm \"{}\": {e}", f.name)),
        None => Ok(()),
    }
}

/// Whether this kernel lets this process open unprivileged ICMP echo sockets.
fn ping_available() -> Result<(), String> {
    use socket2::{Domain, Protocol, Socket, Type};
    match Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::ICMPV4)) {
        Ok(_) => Ok(()),
        Err(e) => {
            let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range")
                .map(|r| r.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_else(|_| "unknown".into());
            Err(format!(
                "check = \"ping\" needs unprivileged ICMP echo sockets, which this kernel refuses ({e}); \
                 net.ipv4.ping_group_range is \"{range}\": allow farmgate's group with \
                 `sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"`, or use check = \"tcp\""
            ))
        }
    }
}

/// One ICMP echo to `ip` over an unprivileged datagram socket; Ok when the reply arrives.
async fn ping(ip: std::net::IpAddr) -> std::io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let (domain, proto, request, reply) = match ip {
        std::net::IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4, 8u8, 0u8),
        std::net::IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6, 128u8, 129u8),
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(proto))?;
    socket.set_nonblocking(true)?;
    let socket = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(socket))?;
    socket.connect(SocketAddr::new(ip, 0)).await?;
    // Type, code, checksum (the kernel fills it in for ICMP datagram sockets), identifier (the
    // kernel sets it), sequence, and a payload.
    let mut packet = vec![request, 0, 0, 0, 0, 0, 0, 1];
    packet.extend_from_slice(b"farmgate");
    socket.send(&packet).await?;
    let mut buf = [0u8; 256];
    loop {
        let n = socket.recv(&mut buf).await?;
        if n >= 8 && buf[0] == reply {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_availability_is_reported_with_the_sysctl() {
        match ping_available() {
            Ok(()) => {}
            Err(e) => assert!(e.contains("net.ipv4.ping_group_range"), "{e}"),
        }
    }
}
