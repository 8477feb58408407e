//! Which farm member serves a request: the load-balancing algorithms of IIS Application Request
//! Routing and the client affinity of Microsoft TMG web farm publishing.
//!
//! Affinity, per farm:
//! - `none` (ARR's default): every request is balanced on its own.
//! - `cookie` (TMG's cookie-based affinity): a client whose verified affinity cookie names a
//!   member that is active or draining stays on it; any other client gets a member from the
//!   balancing algorithm (round robin by default, as TMG spreads new sessions) and farmgate writes
//!   the cookie. A client whose member went out of service (or failed its request just now)
//!   moves to the next member in its own order (a rendezvous hash of its address and its old
//!   member's name), so all its requests land on one member, and stays there after the old one
//!   returns. Draining members keep their sessions but get no new ones.
//! - `client-ip` (TMG's source-IP affinity): a weighted rendezvous hash of the client's address
//!   picks among active members, so a member's clients spread evenly over the others while it is
//!   out of service and return when it comes back. `balance` has no effect under it.
//!
//! Algorithms (`balance`), all taking member weights into account:
//! - `least-current-request` (ARR's default): fewest requests in flight per unit of weight.
//! - `round-robin`: smooth weighted round robin (nginx's), driven by the farm's shared counter
//!   so that every thread and instance follows one rotation.
//! - `weighted-total-traffic` (ARR): fewest body bytes so far per unit of weight.
//! - `least-response-time` (ARR): lowest average response time per unit of weight; a member
//!   without measurements yet goes first.
//! - `random`: weighted random.
//! - `power-of-two-choices`: of two distinct weighted-random members, the one with fewer requests
//!   in flight (then the faster one).
//! - `hash` with `hash_on` (`url`, `query-string`, `client-address`, `header:NAME`,
//!   `cookie:NAME`; ARR's request, query-string and server-variable hashes): weighted
//!   rendezvous hashing on member names, so every farmgate instance agrees and a member leaving
//!   remaps only its own keys. A request without the header or cookie falls back to
//!   least-current-request.
//!
//! Equal members take turns (the farm's counter picks among them), so they share the work evenly.
//!
//! Settings: `{"farms": {"<farm>": {"balance": "round-robin", "hash_on": "cookie:user",
//! "affinity": "cookie"}}}`; every field is optional and a farm missing from the map gets the
//! defaults.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::HashMap;

use farmgate_sdk::hash::stable_hash2;
use farmgate_sdk::log::random_u64;
use farmgate_sdk::{
    Affinity, AffinityDecision, Farm, Member, MemberState, Plugin, Request, Settings, export_plugin,
};
use serde::Deserialize;

/// The longest round-robin schedule kept: 64 Ki entries of 4 bytes.
const MAX_SCHEDULE: u64 = 65_536;

/// Steps times candidates that building a schedule may take. Building costs one step per
/// candidate per entry, so large farms get shorter schedules (coarser weights) to stay within a
/// few milliseconds of the call deadline: 32 candidates still get the full 64 Ki entries.
const MAX_SCHEDULE_WORK: u64 = 1 << 21;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    #[serde(default)]
    farms: HashMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFarm {
    balance: Option<Balance>,
    hash_on: Option<String>,
    #[serde(default)]
    affinity: AffinityMode,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "kebab-case")]
enum Balance {
    LeastCurrentRequest,
    RoundRobin,
    WeightedTotalTraffic,
    LeastResponseTime,
    Random,
    PowerOfTwoChoices,
    Hash,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug, Default)]
#[serde(rename_all = "kebab-case")]
enum AffinityMode {
    #[default]
    None,
    Cookie,
    ClientIp,
}

/// What `balance = "hash"` hashes.
#[derive(Clone, PartialEq, Eq, Debug)]
enum HashKey {
    /// The path plus `?query` when there is one.
    Url,
    QueryString,
    ClientAddress,
    Header(String),
    Cookie(String),
}

impl HashKey {
    fn parse(text: &str) -> Result<HashKey, String> {
        let named = |kind: &str, name: &str| {
            if name.trim().is_empty() {
                Err(format!("hash_on \"{text}\" names no {kind}"))
            } else {
                Ok(name.trim().to_string())
            }
        };
        match text {
            "url" => Ok(HashKey::Url),
            "query-string" => Ok(HashKey::QueryString),
            "client-address" => Ok(HashKey::ClientAddress),
            _ => {
                if let Some(name) = text.strip_prefix("header:") {
                    Ok(HashKey::Header(named("header", name)?.to_ascii_lowercase()))
                } else if let Some(name) = text.strip_prefix("cookie:") {
                    Ok(HashKey::Cookie(named("cookie", name)?))
                } else {
                    Err(format!(
                        "hash_on \"{text}\" is not one of url, query-string, client-address, \
                         header:NAME, cookie:NAME"
                    ))
                }
            }
        }
    }
}

/// One farm's policy, settled.
#[derive(Clone, Debug, PartialEq)]
struct Policy {
    affinity: AffinityMode,
    balance: Balance,
    hash_on: Option<HashKey>,
}

impl Policy {
    fn from_raw(raw: RawFarm) -> Result<Policy, String> {
        let balance = raw.balance.unwrap_or(match raw.affinity {
            AffinityMode::Cookie => Balance::RoundRobin,
            AffinityMode::None | AffinityMode::ClientIp => Balance::LeastCurrentRequest,
        });
        let hash_on = match (balance, raw.hash_on) {
            (Balance::Hash, Some(key)) => Some(HashKey::parse(&key)?),
            (Balance::Hash, None) => {
                return Err("balance \"hash\" needs hash_on (url, query-string, \
                            client-address, header:NAME or cookie:NAME)"
                    .into());
            }
            (_, Some(_)) => return Err("hash_on only applies to balance \"hash\"".into()),
            (_, None) => None,
        };
        Ok(Policy {
            affinity: raw.affinity,
            balance,
            hash_on,
        })
    }
}

/// A farm's smooth weighted round-robin schedule for one set of candidates.
struct Schedule {
    /// The candidates' (id, weight) in farm order: what the schedule was built for.
    key: Vec<(u32, u32)>,
    /// Member ids, one per position.
    order: Vec<u32>,
}

impl Schedule {
    fn build(key: Vec<(u32, u32)>) -> Schedule {
        let mut weights: Vec<u64> = key.iter().map(|&(_, w)| u64::from(w.max(1))).collect();
        reduce(&mut weights);
        let total: u64 = weights.iter().sum();
        let limit = (MAX_SCHEDULE_WORK / weights.len().max(1) as u64).clamp(1, MAX_SCHEDULE);
        if total > limit {
            for w in &mut weights {
                *w = (*w * limit / total).max(1);
            }
            reduce(&mut weights);
        }
        let total: u64 = weights.iter().sum();
        // nginx's smooth weighted round robin: every step each candidate gains its weight, the
        // one with the most current weight goes and loses the total. Over `total` steps each
        // candidate goes exactly `weight` times, evenly interleaved, and the state is back at 0.
        let mut current = vec![0i64; weights.len()];
        let mut order = Vec::with_capacity(total as usize);
        for _ in 0..total {
            let (mut best, mut best_current) = (0, i64::MIN);
            for (i, (c, &w)) in current.iter_mut().zip(&weights).enumerate() {
                *c += w as i64;
                if *c > best_current {
                    (best, best_current) = (i, *c);
                }
            }
            current[best] -= total as i64;
            order.push(key[best].0);
        }
        Schedule { key, order }
    }
}

/// Divides the weights by their greatest common divisor.
fn reduce(weights: &mut [u64]) {
    let g = weights.iter().fold(0, |a, &b| gcd(a, b));
    if g > 1 {
        for w in weights {
            *w /= g;
        }
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A weight of 0 counts as 1 so that every candidate stays reachable and no division is by 0
/// (farmgate's config refuses 0 anyway).
fn weight(m: Member) -> u64 {
    u64::from(m.weight().max(1))
}

/// The members that take new requests (the active ones), in id order.
fn candidates<'f>(farm: &'f Farm) -> impl Iterator<Item = Member<'f>> {
    farm.online_members()
}

/// The candidate that `cmp` ranks lowest. Equal candidates take turns: the farm's counter picks
/// which of them goes, so each gets an equal share of the ties.
fn least_by(farm: &Farm, cmp: impl Fn(Member, Member) -> Ordering) -> Option<u32> {
    let mut best: Option<Member> = None;
    let mut ties = 0u64;
    for m in candidates(farm) {
        match best.map(|b| cmp(m, b)) {
            None | Some(Ordering::Less) => (best, ties) = (Some(m), 1),
            Some(Ordering::Equal) => ties += 1,
            Some(Ordering::Greater) => {}
        }
    }
    let best = best?;
    if ties == 1 {
        return Some(best.id());
    }
    candidates(farm)
        .filter(|&m| cmp(m, best) == Ordering::Equal)
        .nth((farm.sequence() % ties) as usize)
        .map(|m| m.id())
}

/// Compares `a_value / a_weight` with `b_value / b_weight` without division.
fn per_weight(a_value: u64, a: Member, b_value: u64, b: Member) -> Ordering {
    (u128::from(a_value) * u128::from(weight(b)))
        .cmp(&(u128::from(b_value) * u128::from(weight(a))))
}

fn least_current_request(farm: &Farm) -> Option<u32> {
    least_by(farm, |a, b| {
        per_weight(u64::from(a.in_flight()), a, u64::from(b.in_flight()), b)
    })
}

fn weighted_total_traffic(farm: &Farm) -> Option<u32> {
    least_by(farm, |a, b| per_weight(a.bytes(), a, b.bytes(), b))
}

fn least_response_time(farm: &Farm) -> Option<u32> {
    least_by(farm, |a, b| {
        per_weight(a.latency_ewma_us(), a, b.latency_ewma_us(), b)
    })
}

/// A uniform draw from `0..total` (multiply-shift: no modulo bias worth the name).
fn below(total: u64) -> u64 {
    ((u128::from(random_u64()) * u128::from(total)) >> 64) as u64
}

/// A weighted-random candidate, leaving out `except`.
fn weighted_random<'f>(farm: &'f Farm, except: Option<u32>) -> Option<Member<'f>> {
    let eligible = || candidates(farm).filter(|m| Some(m.id()) != except);
    let total: u64 = eligible().map(weight).sum();
    if total == 0 {
        return None;
    }
    let mut point = below(total);
    for m in eligible() {
        let w = weight(m);
        if point < w {
            return Some(m);
        }
        point -= w;
    }
    None
}

fn power_of_two_choices(farm: &Farm) -> Option<u32> {
    let first = weighted_random(farm, None)?;
    let Some(second) = weighted_random(farm, Some(first.id())) else {
        return Some(first.id());
    };
    // Load alone decides; a tie keeps the first pick, which is itself random. (Breaking ties by
    // latency would starve the slowest member whenever requests do not overlap.)
    Some(if second.in_flight() < first.in_flight() {
        second.id()
    } else {
        first.id()
    })
}

/// Weighted rendezvous (highest random weight) hashing: each candidate scores
/// `weight / -ln(u)` with `u` uniform in (0, 1) from the hash of the key and its name, and the
/// highest score wins. Each candidate wins a share of keys proportional to its weight, and when
/// one leaves, only the keys it won move.
fn rendezvous<'f>(key: &[u8], members: impl Iterator<Item = Member<'f>>) -> Option<u32> {
    let mut best: Option<(f64, u32)> = None;
    for m in members {
        let h = stable_hash2(key, m.name().as_bytes());
        // The top 53 bits, offset by half a step, give a float strictly inside (0, 1).
        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = weight(m) as f64 / -u.ln();
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, m.id()));
        }
    }
    best.map(|(_, id)| id)
}

/// Where a client pinned to `lost` goes instead: a rendezvous hash of its address and its
/// member's name over the active members, the same for every request of the client while
/// `lost` cannot serve it.
fn failover(req: &Request, lost: Member, farm: &Farm) -> Option<u32> {
    let client = req.client_addr();
    let mut key = Vec::with_capacity(client.len() + lost.name().len() + 1);
    key.extend_from_slice(client.as_bytes());
    key.push(0);
    key.extend_from_slice(lost.name().as_bytes());
    rendezvous(&key, candidates(farm))
}

pub struct Balancer {
    farms: HashMap<String, Policy>,
    default: Policy,
    /// Round-robin schedules by farm name, rebuilt when the candidates change.
    schedules: RefCell<HashMap<String, Schedule>>,
    /// Reused for building URL hash keys.
    key: RefCell<String>,
}

impl Plugin for Balancer {
    fn new(settings: &Settings) -> Result<Self, String> {
        let raw: RawSettings = settings.deserialize()?;
        let mut farms = HashMap::with_capacity(raw.farms.len());
        for (name, value) in raw.farms {
            let policy = serde_json::from_value::<RawFarm>(value)
                .map_err(|e| e.to_string())
                .and_then(Policy::from_raw)
                .map_err(|e| format!("farm \"{name}\": {e}"))?;
            farms.insert(name, policy);
        }
        let default = Policy::from_raw(RawFarm {
            balance: None,
            hash_on: None,
            affinity: AffinityMode::None,
        })?;
        Ok(Balancer {
            farms,
            default,
            schedules: RefCell::new(HashMap::new()),
            key: RefCell::new(String::new()),
        })
    }
}

impl Balancer {
    fn policy(&self, farm: &Farm) -> &Policy {
        self.farms.get(farm.name()).unwrap_or(&self.default)
    }

    /// A member for a request that no affinity pins: the farm's balancing algorithm over the
    /// active members.
    fn balance(&self, policy: &Policy, req: &Request, farm: &Farm) -> Option<u32> {
        match policy.balance {
            Balance::LeastCurrentRequest => least_current_request(farm),
            Balance::RoundRobin => self.round_robin(farm),
            Balance::WeightedTotalTraffic => weighted_total_traffic(farm),
            Balance::LeastResponseTime => least_response_time(farm),
            Balance::Random => weighted_random(farm, None).map(|m| m.id()),
            Balance::PowerOfTwoChoices => power_of_two_choices(farm),
            Balance::Hash => self.hash(policy.hash_on.as_ref(), req, farm),
        }
    }

    fn round_robin(&self, farm: &Farm) -> Option<u32> {
        let mut schedules = self.schedules.borrow_mut();
        let name = farm.name();
        let key = || candidates(farm).map(|m| (m.id(), m.weight()));
        let current = schedules
            .get(name)
            .is_some_and(|s| s.key.iter().copied().eq(key()));
        if !current {
            schedules.insert(name.to_string(), Schedule::build(key().collect()));
        }
        let order = &schedules.get(name)?.order;
        if order.is_empty() {
            return None;
        }
        order
            .get((farm.sequence() % order.len() as u64) as usize)
            .copied()
    }

    fn hash(&self, key: Option<&HashKey>, req: &Request, farm: &Farm) -> Option<u32> {
        let value = match key {
            Some(HashKey::Url) => {
                let mut buf = self.key.borrow_mut();
                buf.clear();
                buf.push_str(req.path());
                if let Some(q) = req.query() {
                    buf.push('?');
                    buf.push_str(q);
                }
                return rendezvous(buf.as_bytes(), candidates(farm));
            }
            Some(HashKey::QueryString) => req.query().unwrap_or_default(),
            Some(HashKey::ClientAddress) => req.client_addr(),
            Some(HashKey::Header(name)) => match req.header(name) {
                Some(v) => v,
                None => return least_current_request(farm),
            },
            Some(HashKey::Cookie(name)) => match req.cookie(name) {
                Some(v) => v,
                None => return least_current_request(farm),
            },
            None => return least_current_request(farm),
        };
        rendezvous(value.as_bytes(), candidates(farm))
    }
}

impl Affinity for Balancer {
    fn choose(&self, req: &Request, farm: &Farm) -> AffinityDecision {
        let policy = self.policy(farm);
        let chosen = match policy.affinity {
            AffinityMode::None => self.balance(policy, req, farm),
            AffinityMode::ClientIp => rendezvous(req.client_addr().as_bytes(), candidates(farm)),
            AffinityMode::Cookie => {
                let pinned = farm
                    .sticky_member()
                    .and_then(|id| farm.member(id))
                    .filter(|m| matches!(m.state(), MemberState::Active | MemberState::Draining));
                if let Some(m) = pinned {
                    // The cookie already names this member: nothing to write.
                    return AffinityDecision::member(m.id());
                }
                if let Some(lost) = farm.sticky_member().and_then(|id| farm.member(id)) {
                    // The client's member cannot serve it (out of service, or it just failed
                    // this request): the next member in the client's own order, so that every
                    // request of the client lands on the same one, noticed or not.
                    return match failover(req, lost, farm) {
                        Some(id) => AffinityDecision::stick_to(id),
                        None => AffinityDecision::Pass,
                    };
                }
                return match self.balance(policy, req, farm) {
                    Some(id) => AffinityDecision::stick_to(id),
                    None => AffinityDecision::Pass,
                };
            }
        };
        match chosen {
            Some(id) => AffinityDecision::member(id),
            None => AffinityDecision::Pass,
        }
    }
}

export_plugin!(Balancer);

#[cfg(test)]
mod tests;
