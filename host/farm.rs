//! Farms and their members at run time: addresses, state and live statistics, all in atomics or
//! arc-swapped snapshots so the request path takes no lock. Choosing a member is pure logic over
//! those; this module does no I/O (the resolver writes addresses in through [`Member::set_addrs`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::config::FarmConfig;

/// A member's lifecycle state (TMG's states; the health issue drives the transitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MemberState {
    Active = 0,
    OutOfService = 1,
    Draining = 2,
    Removed = 3,
    UnableToVerify = 4,
}

impl MemberState {
    fn from_u8(v: u8) -> MemberState {
        match v {
            1 => MemberState::OutOfService,
            2 => MemberState::Draining,
            3 => MemberState::Removed,
            4 => MemberState::UnableToVerify,
            _ => MemberState::Active,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Active => "active",
            MemberState::OutOfService => "out-of-service",
            MemberState::Draining => "draining",
            MemberState::Removed => "removed",
            MemberState::UnableToVerify => "unable-to-verify",
        }
    }
}

/// One farm member.
#[derive(Debug)]
pub struct Member {
    /// The farm's name, for logs.
    pub farm: Arc<str>,
    pub name: String,
    /// Lower-cased computer name or IP literal from the config.
    pub host: String,
    pub port: u16,
    weight: AtomicU32,
    /// The Host value that names this member: `host`, or `host:port` when the port is not 80.
    pub authority: http::HeaderValue,
    /// Resolved addresses in resolver order; connections try them in that order. Empty until the
    /// name resolves.
    addrs: ArcSwap<Vec<SocketAddr>>,
    /// What operators asked for: active, draining or removed (the admin API's side).
    admin: AtomicU8,
    /// What the verifiers found: active (healthy), out of service or unable to verify.
    health: AtomicU8,
    /// How many times the health side went from healthy to a problem (a verifier or the live
    /// traffic test took the member out). A verifier counts passes toward `up_after` only
    /// within one take-out, so one taken out by the request path starts its count again.
    take_outs: AtomicU64,
    /// Why the member is in its state, for logs and the admin API.
    reason: ArcSwap<String>,
    /// The affinity cookie that pins a client to this member.
    pub affinity: MemberAffinity,
    pub stats: MemberStats,
    /// The last health probe, if any has run.
    pub last_probe: ArcSwapOption<ProbeRecord>,
    /// Times of recent live-traffic failures (touched only when a request fails).
    live_failures: std::sync::Mutex<std::collections::VecDeque<std::time::Instant>>,
    /// Until when (milliseconds on [`clock_ms`]) the member gets no new work because a
    /// connection to it was refused; 0: not held off.
    held_until_ms: AtomicU64,
}

/// Milliseconds since the first call (never 0), for hold-offs.
fn clock_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
}

/// A member's affinity cookie token and its Set-Cookie values (plain, and with `Secure`).
#[derive(Debug)]
pub struct MemberAffinity {
    pub token: String,
    pub set_cookie: [http::HeaderValue; 2],
}

/// What the last health probe of a member saw.
#[derive(Debug, Clone)]
pub struct ProbeRecord {
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    pub latency: Duration,
    pub healthy: bool,
    /// The verdict's reason, or the status seen.
    pub detail: String,
}

/// Why a request failed on a member; each is counted in [`MemberStats`] and judged by the live
/// traffic test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No connection: refused, unreachable, timed out, or the HTTP handshake failed.
    Connect,
    /// HTTPS bridging: the TLS handshake failed, usually because the certificate was refused.
    Tls,
    /// No response headers within the response timeout.
    Timeout,
    /// The member closed the exchange or sent an invalid response.
    Broken,
    /// The member answered with a status the live traffic test counts as a failure.
    Status,
}

impl FailureKind {
    pub const ALL: [FailureKind; 5] = [
        FailureKind::Connect,
        FailureKind::Tls,
        FailureKind::Timeout,
        FailureKind::Broken,
        FailureKind::Status,
    ];

    /// The name in the admin JSON and the `kind` label of the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Tls => "tls",
            FailureKind::Timeout => "timeout",
            FailureKind::Broken => "broken",
            FailureKind::Status => "status",
        }
    }
}

/// Live counters of a member.
#[derive(Debug, Default)]
pub struct MemberStats {
    pub in_flight: AtomicU32,
    pub requests: AtomicU64,
    /// Failed requests of every kind (the sum of `failures_by_kind`).
    pub failures: AtomicU64,
    /// Failed requests by [`FailureKind`], in the order of [`FailureKind::ALL`].
    failures_by_kind: [AtomicU64; FailureKind::ALL.len()],
    /// Exponentially weighted moving average of time to response headers, in microseconds.
    pub latency_ewma_us: AtomicU64,
    /// Body bytes to and from the member (requests by their Content-Length).
    pub bytes: AtomicU64,
    pub probes: AtomicU64,
    pub probe_failures: AtomicU64,
    /// Probes slower than the response-time threshold (each raised an alert).
    pub alerts: AtomicU64,
}

impl MemberStats {
    /// Counts one failed request of `kind`.
    pub fn count_failure(&self, kind: FailureKind) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.failures_by_kind[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Failed requests of `kind` so far.
    pub fn failures_of(&self, kind: FailureKind) -> u64 {
        self.failures_by_kind[kind as usize].load(Ordering::Relaxed)
    }
}

/// How a member is given to [`Member::new`].
pub struct MemberSpec<'a> {
    pub farm: &'a str,
    pub name: String,
    pub host: String,
    pub port: u16,
    pub weight: u32,
    pub cookie_name: &'a str,
    pub key: &'a [u8],
}

impl Member {
    pub fn new(spec: MemberSpec<'_>) -> Member {
        let MemberSpec {
            farm,
            name,
            host,
            port,
            weight,
            cookie_name,
            key,
        } = spec;
        let bracketed = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let authority = if port == 80 {
            bracketed
        } else {
            format!("{bracketed}:{port}")
        };
        let token = crate::affinity::token(key, farm, &name);
        Member {
            farm: Arc::from(farm),
            authority: http::HeaderValue::from_str(&authority)
                .unwrap_or_else(|_| http::HeaderValue::from_static("invalid-member-name")),
            affinity: MemberAffinity {
                set_cookie: crate::affinity::set_cookie_values(cookie_name, &token),
                token,
            },
            name,
            host,
            port,
            weight: AtomicU32::new(weight.max(1)),
            addrs: ArcSwap::from_pointee(Vec::new()),
            admin: AtomicU8::new(MemberState::Active as u8),
            health: AtomicU8::new(MemberState::Active as u8),
            take_outs: AtomicU64::new(0),
            reason: ArcSwap::from_pointee("in the config".to_string()),
            stats: MemberStats::default(),
            last_probe: ArcSwapOption::empty(),
            live_failures: std::sync::Mutex::new(std::collections::VecDeque::new()),
            held_until_ms: AtomicU64::new(0),
        }
    }

    /// Gives the member no new work for `d` (a connection to it was refused): it counts as
    /// out of service for choosing members, whatever the verifiers say.
    pub fn hold_off(&self, d: Duration) {
        let until = clock_ms().saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.held_until_ms.fetch_max(until, Ordering::Relaxed);
    }

    /// Whether the member is held off now (see [`Member::hold_off`]).
    pub fn held_off(&self) -> bool {
        let until = self.held_until_ms.load(Ordering::Relaxed);
        until != 0 && clock_ms() < until
    }

    pub fn addrs(&self) -> Arc<Vec<SocketAddr>> {
        self.addrs.load_full()
    }

    pub fn set_addrs(&self, addrs: Vec<SocketAddr>) {
        self.addrs.store(Arc::new(addrs));
    }

    pub fn has_addrs(&self) -> bool {
        !self.addrs.load().is_empty()
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Sets the weight (at least 1); effective on the next request.
    pub fn set_weight(&self, w: u32) {
        self.weight.store(w.max(1), Ordering::Relaxed);
    }

    /// The member's state: removed, then what the verifiers found, then draining, else active.
    /// A draining member that fails its checks is out of service (its sessions move), and
    /// draining again when it recovers.
    pub fn state(&self) -> MemberState {
        let admin = MemberState::from_u8(self.admin.load(Ordering::Relaxed));
        let health = MemberState::from_u8(self.health.load(Ordering::Relaxed));
        match (admin, health) {
            (MemberState::Removed, _) => MemberState::Removed,
            (_, MemberState::OutOfService | MemberState::UnableToVerify) => health,
            (admin, _) => admin,
        }
    }

    /// What operators asked for: active, draining or removed.
    pub fn admin_state(&self) -> MemberState {
        MemberState::from_u8(self.admin.load(Ordering::Relaxed))
    }

    /// What the verifiers found: active (healthy), out of service or unable to verify.
    pub fn health_state(&self) -> MemberState {
        MemberState::from_u8(self.health.load(Ordering::Acquire))
    }

    /// How many times the member was taken out by its health (see [`Member::set_health`]).
    /// Read after [`Member::health_state`], it counts every take-out that state reflects.
    pub fn take_outs(&self) -> u64 {
        self.take_outs.load(Ordering::Acquire)
    }

    pub fn reason(&self) -> Arc<String> {
        self.reason.load_full()
    }

    /// Sets a state the way its owner would: active clears both sides (as a recovered, resumed
    /// member); out of service and unable to verify are health states; draining and removed
    /// are operator states. Logs the change with `reason`. Returns whether the state changed.
    pub fn set_state_because(&self, s: MemberState, reason: &str) -> bool {
        let before = self.state();
        match s {
            MemberState::Active => {
                self.admin
                    .store(MemberState::Active as u8, Ordering::Relaxed);
                self.health
                    .store(MemberState::Active as u8, Ordering::Relaxed);
            }
            MemberState::OutOfService | MemberState::UnableToVerify => self.store_health(s),
            MemberState::Draining | MemberState::Removed => {
                self.admin.store(s as u8, Ordering::Relaxed)
            }
        }
        self.transitioned(before, reason)
    }

    /// The verifiers' verdict: healthy (`Active`), `OutOfService` or `UnableToVerify`; the
    /// operator's side is untouched. Going from healthy to a problem counts a take-out.
    pub fn set_health(&self, s: MemberState, reason: &str) -> bool {
        let before = self.state();
        self.store_health(s);
        self.transitioned(before, reason)
    }

    /// Stores the health side; a take-out is counted before the state that shows it, so whoever
    /// sees the state also sees the count.
    fn store_health(&self, s: MemberState) {
        if s != MemberState::Active && self.health_state() == MemberState::Active {
            self.take_outs.fetch_add(1, Ordering::AcqRel);
        }
        self.health.store(s as u8, Ordering::Release);
    }

    /// The operator's side: `Active` (resume), `Draining` or `Removed`.
    pub fn set_admin(&self, s: MemberState, reason: &str) -> bool {
        let before = self.state();
        self.admin.store(s as u8, Ordering::Relaxed);
        self.transitioned(before, reason)
    }

    fn transitioned(&self, before: MemberState, reason: &str) -> bool {
        let after = self.state();
        if after == before {
            return false;
        }
        self.reason.store(Arc::new(reason.to_string()));
        let (farm, member) = (&*self.farm, self.name.as_str());
        let (from, to) = (before.as_str(), after.as_str());
        if matches!(
            after,
            MemberState::OutOfService | MemberState::UnableToVerify
        ) {
            tracing::warn!(farm, member, from, to, reason, "member state changed");
        } else {
            tracing::info!(farm, member, from, to, reason, "member state changed");
        }
        true
    }

    /// Shorthand for tests and tools: [`Member::set_state_because`] with a generic reason.
    pub fn set_state(&self, s: MemberState) {
        self.set_state_because(s, "set directly");
    }

    /// Records one live-traffic failure; returns how many fell within `period`, this one included.
    pub fn live_failure(&self, period: Duration) -> usize {
        let now = std::time::Instant::now();
        let Ok(mut times) = self.live_failures.lock() else {
            return 0;
        };
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) > period)
        {
            times.pop_front();
        }
        times.push_back(now);
        times.len()
    }

    /// Forgets live-traffic failures (the member was judged again).
    pub fn clear_live_failures(&self) {
        if let Ok(mut times) = self.live_failures.lock() {
            times.clear();
        }
    }

    /// Counts a request as started; the guard ends it and records latency and failure.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        InFlight {
            member: Arc::clone(self),
        }
    }

    /// Folds one response-header latency into the EWMA (weight 1/8, as TCP's SRTT).
    pub fn record_latency(&self, d: Duration) {
        let sample = d.as_micros().min(u64::MAX as u128) as u64;
        let _ =
            self.stats
                .latency_ewma_us
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                    Some(if old == 0 {
                        sample.max(1)
                    } else {
                        (old * 7 + sample) / 8
                    })
                });
    }
}

/// A request in flight on a member; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight {
    member: Arc<Member>,
}

impl InFlight {
    pub fn member(&self) -> &Arc<Member> {
        &self.member
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.member.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A farm: its members and the state used to spread requests fairly.
#[derive(Debug)]
pub struct Farm {
    pub name: String,
    /// Members by index (what plugins name). Members are added at the end and never taken out
    /// (a removed member stays, in state removed), so indexes stay valid.
    members: ArcSwap<Vec<Arc<Member>>>,
    /// Where the search for the least busy member starts, so ties rotate.
    cursor: AtomicUsize,
    /// Member choices asked of the affinity chain so far: what round-robin policies rotate by.
    pub sequence: AtomicU64,
    /// First attempts the affinity chain was asked about and left to the host's own choice
    /// (every plugin passed or failed open, or one chose a member that cannot take requests).
    /// The built-in balance plugin decides whenever a member can take requests, so outside
    /// those cases this stays 0; the metrics show it, so a broken balancer cannot hide behind
    /// the host's choice.
    pub fallbacks: AtomicU64,
    /// The affinity cookie's name.
    pub cookie_name: String,
    /// The affinity cookie signing key (for members added later).
    key: Arc<[u8]>,
    /// Minimum servers: a count and a percentage of the members that are not removed.
    min_servers: usize,
    min_servers_percent: u32,
    /// Below the minimum, every member that is not removed takes requests again.
    panic: AtomicBool,
    /// The number of the member table (names, weights, order) as plugins know it: new whenever
    /// the table changes, unique in the process.
    table: AtomicU64,
}

/// The next member-table number; numbers are never reused, so a plugin holding a table by
/// number never mistakes another farm's, or an older one, for it.
fn next_table_number() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The members (by index) a request has been tried on. Retries are few, so a short list does;
/// it has no cap on member indexes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tried(Vec<usize>);

impl Tried {
    pub fn contains(&self, index: usize) -> bool {
        self.0.contains(&index)
    }

    /// Notes `index` as tried (once).
    pub fn insert(&mut self, index: usize) {
        if !self.contains(index) {
            self.0.push(index);
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<const N: usize> From<[usize; N]> for Tried {
    fn from(indexes: [usize; N]) -> Tried {
        let mut t = Tried::default();
        for i in indexes {
            t.insert(i);
        }
        t
    }
}

/// Why a farm cannot take a request; becomes the body of the 503.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// Every member is in a state that takes no requests.
    NoneOnline {
        total: usize,
        out_of_service: usize,
        draining: usize,
        unverified: usize,
    },
    /// Members are online but none of their names has resolved.
    Unresolved { names: Vec<String> },
    /// Every online member was tried for this request already.
    AllTried { tried: usize },
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unavailable::NoneOnline {
                total,
                out_of_service,
                draining,
                unverified,
            } => write!(
                f,
                "none of its {total} member(s) is online ({out_of_service} out of service, {draining} draining, {unverified} unable to verify)"
            ),
            Unavailable::Unresolved { names } => {
                write!(
                    f,
                    "no address is known for its member(s): {}",
                    names.join(", ")
                )
            }
            Unavailable::AllTried { tried } => {
                write!(
                    f,
                    "all {tried} online member(s) failed to accept a connection"
                )
            }
        }
    }
}

impl Farm {
    /// The farm of `config`, its affinity cookies signed with `key`.
    pub fn new(config: &FarmConfig, key: &[u8]) -> Farm {
        Farm::carrying(config, key, None)
    }

    /// The farm of `config`, keeping the members of `previous` (the same farm in the config
    /// before a reload) that still exist with the same host, port and cookie: their state
    /// (draining, removed, health), statistics and addresses carry over. A weight changed in
    /// the config applies; otherwise a weight set at run time stays.
    pub fn carrying(
        config: &FarmConfig,
        key: &[u8],
        previous: Option<(&Farm, &FarmConfig)>,
    ) -> Farm {
        let members = config
            .members
            .iter()
            .map(|m| {
                let kept = previous.and_then(|(farm, old_config)| {
                    let old = farm.member(&m.name)?;
                    let same = old.host == m.host
                        && old.port == m.port
                        && farm.cookie_name == config.affinity_cookie
                        && *farm.key == *key;
                    if !same {
                        return None;
                    }
                    let old_weight = old_config
                        .members
                        .iter()
                        .find(|o| o.name == m.name)
                        .map(|o| o.weight);
                    if old_weight != Some(m.weight) {
                        old.set_weight(m.weight);
                    }
                    Some(old)
                });
                if let Some(kept) = kept {
                    return kept;
                }
                Arc::new(Member::new(MemberSpec {
                    farm: &config.name,
                    name: m.name.clone(),
                    host: m.host.clone(),
                    port: m.port,
                    weight: m.weight,
                    cookie_name: &config.affinity_cookie,
                    key,
                }))
            })
            .collect();
        Farm {
            name: config.name.clone(),
            members: ArcSwap::from_pointee(members),
            cursor: AtomicUsize::new(0),
            sequence: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            cookie_name: config.affinity_cookie.clone(),
            key: Arc::from(key),
            min_servers: config.health.min_servers,
            min_servers_percent: config.health.min_servers_percent,
            panic: AtomicBool::new(false),
            table: AtomicU64::new(next_table_number()),
        }
    }

    /// The number of the member table now (see the `table` field).
    pub fn table_number(&self) -> u64 {
        self.table.load(Ordering::Acquire)
    }

    /// Sets a member's weight (at least 1), effective on the next request; plugins get the new
    /// member table.
    pub fn set_weight(&self, member: &Member, weight: u32) {
        member.set_weight(weight);
        self.table.store(next_table_number(), Ordering::Release);
    }

    /// The members now, by index.
    pub fn members(&self) -> Arc<Vec<Arc<Member>>> {
        self.members.load_full()
    }

    pub fn member(&self, name: &str) -> Option<Arc<Member>> {
        self.members.load().iter().find(|m| m.name == name).cloned()
    }

    /// Adds a member at the end (its index is the old length). Refused when the name is taken
    /// by a member that is not removed; a removed member of that name is replaced in place
    /// (same index), so its old affinity cookies name the new one.
    pub fn add_member(
        &self,
        name: String,
        host: String,
        port: u16,
        weight: u32,
    ) -> Result<Arc<Member>, String> {
        let member = Arc::new(Member::new(MemberSpec {
            farm: &self.name,
            name,
            host,
            port,
            weight,
            cookie_name: &self.cookie_name,
            key: &self.key,
        }));
        let current = self.members.load_full();
        let mut next: Vec<Arc<Member>> = current.as_ref().clone();
        match next.iter().position(|m| m.name == member.name) {
            Some(i) if next[i].admin_state() != MemberState::Removed => {
                return Err(format!(
                    "farm \"{}\" already has a member named \"{}\"",
                    self.name, member.name
                ));
            }
            Some(i) => next[i] = Arc::clone(&member),
            None if next.len() >= 64 => {
                return Err(format!(
                    "farm \"{}\" has 64 members, the most it can have",
                    self.name
                ));
            }
            None => next.push(Arc::clone(&member)),
        }
        // Admin operations are rare and serialised by the caller; a lost race only loses an add,
        // which the compare-and-swap below detects.
        let prev = self.members.compare_and_swap(&current, Arc::new(next));
        if !Arc::ptr_eq(&prev, &current) {
            return Err("the farm changed at the same moment; try again".into());
        }
        self.table.store(next_table_number(), Ordering::Release);
        tracing::info!(farm = %self.name, member = %member.name, "member added");
        Ok(member)
    }

    /// The member a request's genuine affinity cookie names.
    pub fn sticky_member(&self, headers: &http::HeaderMap) -> Option<u32> {
        let members = self.members.load();
        crate::affinity::cookie_values(headers, &self.cookie_name).find_map(|v| {
            members
                .iter()
                .position(|m| m.affinity.token == v && m.admin_state() != MemberState::Removed)
                .map(|i| i as u32)
        })
    }

    /// Whether the farm is below its minimum servers and so uses every member not removed.
    pub fn in_panic(&self) -> bool {
        self.panic.load(Ordering::Relaxed)
    }

    /// The state a member is treated as for requests: in panic mode, every member that is not
    /// removed counts as active.
    pub fn effective_state(&self, m: &Member) -> MemberState {
        let s = m.state();
        if s != MemberState::Removed && self.in_panic() {
            MemberState::Active
        } else if matches!(s, MemberState::Active | MemberState::Draining) && m.held_off() {
            MemberState::OutOfService
        } else {
            s
        }
    }

    /// Re-evaluates minimum servers after a state change; logs entering and leaving panic mode.
    pub fn update_panic(&self) {
        if self.min_servers == 0 && self.min_servers_percent == 0 {
            return;
        }
        let members = self.members.load();
        let listed = members
            .iter()
            .filter(|m| m.admin_state() != MemberState::Removed)
            .count();
        let active = members
            .iter()
            .filter(|m| m.state() == MemberState::Active)
            .count();
        let by_percent = (listed * self.min_servers_percent as usize).div_ceil(100);
        let minimum = self.min_servers.max(by_percent);
        let panic = active < minimum;
        if self.panic.swap(panic, Ordering::Relaxed) != panic {
            if panic {
                tracing::warn!(farm = %self.name, active, minimum, "below minimum servers: every member that is not removed takes requests again");
            } else {
                tracing::info!(farm = %self.name, active, minimum, "back at minimum servers: members are used by their state again");
            }
        }
    }

    /// Least current request (ARR's default): the online member with the fewest requests in
    /// flight, skipping those in `tried`; ties are broken by rotating the starting point, so
    /// equal members take turns. Gives the member's index with it.
    pub fn pick_least_current(&self, tried: &Tried) -> Result<(usize, Arc<Member>), Unavailable> {
        let members = self.members.load();
        let n = members.len();
        if n == 0 {
            return Err(self.unavailable(tried));
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(usize, u32)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if tried.contains(i) {
                continue;
            }
            let m = &members[i];
            if self.effective_state(m) != MemberState::Active || m.addrs.load().is_empty() {
                continue;
            }
            let load = m.stats.in_flight.load(Ordering::Relaxed);
            if best.is_none_or(|(_, l)| load < l) {
                best = Some((i, load));
            }
        }
        match best {
            Some((i, _)) => Ok((i, Arc::clone(&members[i]))),
            None => Err(self.unavailable(tried)),
        }
    }

    pub fn index_of(&self, member: &Member) -> Option<usize> {
        self.members
            .load()
            .iter()
            .position(|m| std::ptr::eq(m.as_ref(), member))
    }

    fn unavailable(&self, tried: &Tried) -> Unavailable {
        let mut counts = [0usize; 5];
        let mut unresolved = Vec::new();
        let members = self.members.load();
        for m in members.iter() {
            let s = self.effective_state(m);
            counts[s as usize] += 1;
            if s == MemberState::Active && m.addrs.load().is_empty() {
                unresolved.push(m.name.clone());
            }
        }
        let tried_count = tried.len();
        if tried_count > 0 {
            Unavailable::AllTried { tried: tried_count }
        } else if !unresolved.is_empty() {
            Unavailable::Unresolved { names: unresolved }
        } else {
            Unavailable::NoneOnline {
                total: members.len(),
                out_of_service: counts[MemberState::OutOfService as usize],
                draining: counts[MemberState::Draining as usize],
                unverified: counts[MemberState::UnableToVerify as usize],
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MemberConfig;

    fn farm(n: usize) -> Farm {
        let f = Farm::new(
            &FarmConfig {
                name: "f".into(),
                members: (0..n)
                    .map(|i| MemberConfig {
                        name: format!("m{i}"),
                        host: "127.0.0.1".into(),
                        port: 8000 + i as u16,
                        weight: 1,
                    })
                    .collect(),
                affinity: crate::config::Binding::Folder,
                health_evaluation: crate::config::Binding::Folder,
                balance: None,
                hash_on: None,
                affinity_mode: "none".into(),
                affinity_cookie: "c".into(),
                health: crate::config::HealthSettings::default(),
                upstream: Default::default(),
            },
            b"test key",
        );
        for m in f.members().iter() {
            m.set_addrs(vec![SocketAddr::from(([127, 0, 0, 1], m.port))]);
        }
        f
    }

    #[test]
    fn tried_members_are_skipped_past_sixty_four() {
        let f = farm(70);
        let mut tried = Tried::default();
        for i in (0..70).filter(|i| *i != 66) {
            tried.insert(i);
        }
        tried.insert(3);
        assert_eq!(tried.len(), 69);
        for _ in 0..5 {
            assert_eq!(f.pick_least_current(&tried).unwrap().0, 66);
        }
        tried.insert(66);
        assert_eq!(
            f.pick_least_current(&tried).unwrap_err(),
            Unavailable::AllTried { tried: 70 }
        );
    }

    #[test]
    fn ties_rotate_and_busy_members_are_avoided() {
        let f = farm(3);
        let mut counts = [0; 3];
        for _ in 0..30 {
            let (i, m) = f.pick_least_current(&Tried::default()).unwrap();
            assert_eq!(f.index_of(&m), Some(i));
            counts[i] += 1;
        }
        assert_eq!(counts, [10, 10, 10]);

        let _busy = f.members()[0].begin();
        let _busy2 = f.members()[1].begin();
        for _ in 0..5 {
            assert_eq!(
                f.pick_least_current(&Tried::default()).unwrap().1.name,
                "m2"
            );
        }
    }

    #[test]
    fn tried_and_offline_members_are_skipped() {
        let f = farm(3);
        f.members()[1].set_state(MemberState::OutOfService);
        assert_eq!(
            f.pick_least_current(&Tried::from([0])).unwrap().1.name,
            "m2"
        );
        assert_eq!(
            f.pick_least_current(&Tried::from([0, 2])).unwrap_err(),
            Unavailable::AllTried { tried: 2 }
        );
        f.members()[0].set_state(MemberState::Draining);
        f.members()[2].set_state(MemberState::OutOfService);
        let e = f.pick_least_current(&Tried::default()).unwrap_err();
        assert_eq!(
            e,
            Unavailable::NoneOnline {
                total: 3,
                out_of_service: 2,
                draining: 1,
                unverified: 0
            }
        );
        assert!(e.to_string().contains("2 out of service"));
    }

    #[test]
    fn unresolved_members_are_named() {
        let f = farm(2);
        f.members()[0].set_addrs(Vec::new());
        assert_eq!(
            f.pick_least_current(&Tried::default()).unwrap().1.name,
            "m1"
        );
        f.members()[1].set_addrs(Vec::new());
        assert_eq!(
            f.pick_least_current(&Tried::default()).unwrap_err(),
            Unavailable::Unresolved {
                names: vec!["m0".into(), "m1".into()]
            }
        );
    }

    #[test]
    fn failures_are_counted_by_kind_and_in_total() {
        for (i, k) in FailureKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i, "{}", k.as_str());
        }
        let f = farm(1);
        let stats = &f.members()[0].stats;
        stats.count_failure(FailureKind::Status);
        stats.count_failure(FailureKind::Status);
        stats.count_failure(FailureKind::Tls);
        assert_eq!(stats.failures.load(Ordering::Relaxed), 3);
        assert_eq!(stats.failures_of(FailureKind::Status), 2);
        assert_eq!(stats.failures_of(FailureKind::Tls), 1);
        assert_eq!(stats.failures_of(FailureKind::Connect), 0);
    }

    #[test]
    fn only_going_from_healthy_to_a_problem_is_a_take_out() {
        let f = farm(1);
        let m = &f.members()[0];
        assert_eq!(m.take_outs(), 0);
        m.set_health(MemberState::OutOfService, "test");
        m.set_health(MemberState::UnableToVerify, "test");
        assert_eq!(m.take_outs(), 1, "already out");
        m.set_admin(MemberState::Draining, "test");
        m.set_health(MemberState::Active, "test");
        assert_eq!(m.take_outs(), 1);
        m.set_state(MemberState::OutOfService);
        assert_eq!(m.take_outs(), 2);
    }

    #[test]
    fn in_flight_guard_and_ewma() {
        let f = farm(1);
        let members = f.members();
        let m = &members[0];
        {
            let _g = m.begin();
            assert_eq!(m.stats.in_flight.load(Ordering::Relaxed), 1);
        }
        assert_eq!(m.stats.in_flight.load(Ordering::Relaxed), 0);
        m.record_latency(Duration::from_micros(800));
        m.record_latency(Duration::from_micros(0));
        assert_eq!(m.stats.latency_ewma_us.load(Ordering::Relaxed), 700);
    }
}
