//! Farms and their members at run time: addresses, state and live statistics, all in atomics or
//! arc-swapped snapshots so the request path takes no lock. Choosing a member is pure logic over
//! those; this module does no I/O (the resolver writes addresses in through [`Member::set_addrs`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;

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
    pub name: String,
    /// Lower-cased computer name or IP literal from the config.
    pub host: String,
    pub port: u16,
    pub weight: u32,
    /// The Host value that names this member: `host`, or `host:port` when the port is not 80.
    pub authority: http::HeaderValue,
    /// Resolved addresses in resolver order; connections try them in that order. Empty until the
    /// name resolves.
    addrs: ArcSwap<Vec<SocketAddr>>,
    state: AtomicU8,
    pub stats: MemberStats,
}

/// Live counters of a member.
#[derive(Debug, Default)]
pub struct MemberStats {
    pub in_flight: AtomicU32,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    /// Exponentially weighted moving average of time to response headers, in microseconds.
    pub latency_ewma_us: AtomicU64,
    /// Body bytes to and from the member (requests by their Content-Length).
    pub bytes: AtomicU64,
}

impl Member {
    pub fn new(name: String, host: String, port: u16, weight: u32) -> Member {
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
        Member {
            authority: http::HeaderValue::from_str(&authority)
                .unwrap_or_else(|_| http::HeaderValue::from_static("invalid-member-name")),
            name,
            host,
            port,
            weight,
            addrs: ArcSwap::from_pointee(Vec::new()),
            state: AtomicU8::new(MemberState::Active as u8),
            stats: MemberStats::default(),
        }
    }

    pub fn addrs(&self) -> Arc<Vec<SocketAddr>> {
        self.addrs.load_full()
    }

    pub fn set_addrs(&self, addrs: Vec<SocketAddr>) {
        self.addrs.store(Arc::new(addrs));
    }

    pub fn state(&self) -> MemberState {
        MemberState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub fn set_state(&self, s: MemberState) {
        self.state.store(s as u8, Ordering::Relaxed);
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
    pub members: Vec<Arc<Member>>,
    /// Where the search for the least busy member starts, so ties rotate.
    cursor: AtomicUsize,
    /// Member choices asked of the affinity chain so far: what round-robin policies rotate by.
    pub sequence: AtomicU64,
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
    pub fn new(config: &FarmConfig) -> Farm {
        Farm {
            name: config.name.clone(),
            members: config
                .members
                .iter()
                .map(|m| {
                    Arc::new(Member::new(
                        m.name.clone(),
                        m.host.clone(),
                        m.port,
                        m.weight,
                    ))
                })
                .collect(),
            cursor: AtomicUsize::new(0),
            sequence: AtomicU64::new(0),
        }
    }

    /// Least current request (ARR's default): the online member with the fewest requests in
    /// flight, skipping those in `tried` (a bit per member index); ties are broken by rotating
    /// the starting point, so equal members take turns.
    pub fn pick_least_current(&self, tried: u64) -> Result<Arc<Member>, Unavailable> {
        let n = self.members.len();
        if n == 0 {
            return Err(self.unavailable(tried));
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(usize, u32)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if i < 64 && tried & (1 << i) != 0 {
                continue;
            }
            let m = &self.members[i];
            if m.state() != MemberState::Active || m.addrs.load().is_empty() {
                continue;
            }
            let load = m.stats.in_flight.load(Ordering::Relaxed);
            if best.is_none_or(|(_, l)| load < l) {
                best = Some((i, load));
            }
        }
        match best {
            Some((i, _)) => Ok(Arc::clone(&self.members[i])),
            None => Err(self.unavailable(tried)),
        }
    }

    pub fn index_of(&self, member: &Member) -> Option<usize> {
        self.members
            .iter()
            .position(|m| std::ptr::eq(m.as_ref(), member))
    }

    fn unavailable(&self, tried: u64) -> Unavailable {
        let mut counts = [0usize; 5];
        let mut unresolved = Vec::new();
        for m in &self.members {
            let s = m.state();
            counts[s as usize] += 1;
            if s == MemberState::Active && m.addrs.load().is_empty() {
                unresolved.push(m.name.clone());
            }
        }
        let tried_count = tried.count_ones() as usize;
        if tried_count > 0 {
            Unavailable::AllTried { tried: tried_count }
        } else if !unresolved.is_empty() {
            Unavailable::Unresolved { names: unresolved }
        } else {
            Unavailable::NoneOnline {
                total: self.members.len(),
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
        let f = Farm::new(&FarmConfig {
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
            health: crate::config::HealthSettings {
                statuses: "200-399".into(),
                content_match: None,
                response_time_threshold: Duration::from_secs(5),
            },
            upstream: Default::default(),
        });
        for m in &f.members {
            m.set_addrs(vec![SocketAddr::from(([127, 0, 0, 1], m.port))]);
        }
        f
    }

    #[test]
    fn ties_rotate_and_busy_members_are_avoided() {
        let f = farm(3);
        let mut counts = [0; 3];
        for _ in 0..30 {
            let m = f.pick_least_current(0).unwrap();
            counts[f.index_of(&m).unwrap()] += 1;
        }
        assert_eq!(counts, [10, 10, 10]);

        let _busy = f.members[0].begin();
        let _busy2 = f.members[1].begin();
        for _ in 0..5 {
            assert_eq!(f.pick_least_current(0).unwrap().name, "m2");
        }
    }

    #[test]
    fn tried_and_offline_members_are_skipped() {
        let f = farm(3);
        f.members[1].set_state(MemberState::OutOfService);
        assert_eq!(f.pick_least_current(0b001).unwrap().name, "m2");
        assert_eq!(
            f.pick_least_current(0b101).unwrap_err(),
            Unavailable::AllTried { tried: 2 }
        );
        f.members[0].set_state(MemberState::Draining);
        f.members[2].set_state(MemberState::OutOfService);
        let e = f.pick_least_current(0).unwrap_err();
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
        f.members[0].set_addrs(Vec::new());
        assert_eq!(f.pick_least_current(0).unwrap().name, "m1");
        f.members[1].set_addrs(Vec::new());
        assert_eq!(
            f.pick_least_current(0).unwrap_err(),
            Unavailable::Unresolved {
                names: vec!["m0".into(), "m1".into()]
            }
        );
    }

    #[test]
    fn in_flight_guard_and_ewma() {
        let f = farm(1);
        let m = &f.members[0];
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
