use super::*;
use farmgate_sdk::testing::{self, FarmBuilder};

fn plugin(json: &str) -> Balancer {
    match Balancer::new(&testing::settings(json)) {
        Ok(p) => p,
        Err(e) => panic!("settings {json} refused: {e}"),
    }
}

/// A plugin whose farm `web` has the given policy fields.
fn web(fields: &str) -> Balancer {
    plugin(&format!(r#"{{"farms": {{"web": {{{fields}}}}}}}"#))
}

fn error(json: &str) -> String {
    match Balancer::new(&testing::settings(json)) {
        Ok(_) => panic!("settings {json} accepted"),
        Err(e) => e,
    }
}

fn get() -> Request<'static> {
    testing::request("GET", "/").build()
}

/// The chosen member and whether the plugin asked for the cookie.
fn choice(d: AffinityDecision) -> (u32, bool) {
    match d {
        AffinityDecision::Member(c) => (c.id, c.stick),
        AffinityDecision::Pass => panic!("expected a member, got pass"),
    }
}

fn id(d: AffinityDecision) -> u32 {
    let (id, stick) = choice(d);
    assert!(!stick, "no cookie expected");
    id
}

/// Runs `calls` choices in the farm `farm` builds, its counter advancing from 0 as the host
/// advances it.
fn counts(p: &Balancer, farm: impl Fn() -> FarmBuilder, calls: u64) -> Vec<u64> {
    let mut counts = vec![0; farm().build().len()];
    for s in 0..calls {
        counts[id(p.choose(&get(), &farm().sequence(s).build())) as usize] += 1;
    }
    counts
}

fn within(count: u64, expected: u64, percent: u64) -> bool {
    count.abs_diff(expected) * 100 <= expected * percent
}

// Least current request.

#[test]
fn least_current_request_is_the_default() {
    let p = plugin("{}");
    let farm = testing::farm("web", 3)
        .in_flight(0, 4)
        .in_flight(1, 1)
        .in_flight(2, 2)
        .build();
    assert_eq!(id(p.choose(&get(), &farm)), 1);
}

#[test]
fn least_current_request_weighs_in_flight_by_weight() {
    let p = web(r#""balance": "least-current-request""#);
    // 5/3 < 2/1.
    let farm = testing::farm("web", 2)
        .weight(0, 3)
        .in_flight(0, 5)
        .in_flight(1, 2)
        .build();
    assert_eq!(id(p.choose(&get(), &farm)), 0);
    // 7/3 > 2/1.
    let farm = testing::farm("web", 2)
        .weight(0, 3)
        .in_flight(0, 7)
        .in_flight(1, 2)
        .build();
    assert_eq!(id(p.choose(&get(), &farm)), 1);
}

#[test]
fn least_current_request_fills_members_in_proportion_to_weight() {
    // Requests that never finish: the in-flight counts end exactly at 3:2:1.
    let p = web("");
    let mut in_flight = [0u32; 3];
    for s in 0..600 {
        let farm = (0..3)
            .fold(testing::farm("web", 3), |f, i| {
                f.in_flight(i, in_flight[i as usize])
            })
            .weight(0, 3)
            .weight(1, 2)
            .weight(2, 1)
            .sequence(s)
            .build();
        let chosen = id(p.choose(&get(), &farm)) as usize;
        in_flight[chosen] += 1;
    }
    assert_eq!(in_flight, [300, 200, 100]);
}

#[test]
fn ties_take_turns_exactly() {
    let p = web("");
    // Idle members share requests exactly evenly.
    let farm = || testing::farm("web", 3);
    assert_eq!(counts(&p, farm, 300), [100, 100, 100]);
    // Only the tied members take turns, however the others are placed.
    let farm = || {
        testing::farm("web", 4)
            .in_flight(0, 1)
            .in_flight(1, 2)
            .in_flight(2, 1)
            .state(3, MemberState::OutOfService)
    };
    assert_eq!(counts(&p, farm, 100), [50, 0, 50, 0]);
}

// Round robin.

/// The members chosen in the farm `farm` builds while its counter goes from `from` for `len`
/// choices.
fn schedule(p: &Balancer, farm: impl Fn() -> FarmBuilder, from: u64, len: u64) -> Vec<u32> {
    (from..from + len)
        .map(|s| id(p.choose(&get(), &farm().sequence(s).build())))
        .collect()
}

#[test]
fn round_robin_is_smooth() {
    let p = web(r#""balance": "round-robin""#);
    // nginx's interleaving for 5:1:1: a a b a c a a.
    let farm = || testing::farm("web", 3).weight(0, 5);
    assert_eq!(schedule(&p, farm, 0, 7), [0, 0, 1, 0, 2, 0, 0]);
    assert_eq!(schedule(&p, farm, 7, 7), [0, 0, 1, 0, 2, 0, 0]);
    // Equal weights: strict rotation, never the same member twice in a row.
    let farm = || testing::farm("web", 3);
    let order = schedule(&p, farm, 0, 300);
    assert!(order.windows(2).all(|w| w[0] != w[1]), "{order:?}");
    assert_eq!(&order[..6], [0, 1, 2, 0, 1, 2]);
    assert_eq!(counts(&p, farm, 300), [100, 100, 100]);
}

#[test]
fn round_robin_windows_hold_each_member_weight_times() {
    let p = web(r#""balance": "round-robin""#);
    let farm = || {
        testing::farm("web", 4)
            .weight(0, 3)
            .weight(1, 2)
            .weight(2, 1)
            .weight(3, 4)
    };
    let order = schedule(&p, farm, 0, 200);
    for window in order.windows(10) {
        let mut c = [0; 4];
        for &m in window {
            c[m as usize] += 1;
        }
        assert_eq!(c, [3, 2, 1, 4], "{window:?}");
    }
    // The heaviest member is spread out: never three times in a row.
    assert!(
        order
            .windows(3)
            .all(|w| !(w[0] == 3 && w[1] == 3 && w[2] == 3))
    );
}

#[test]
fn round_robin_reduces_and_scales_weights() {
    let p = web(r#""balance": "round-robin""#);
    // 10:20:30 is 1:2:3, so the schedule is 6 long.
    let farm = || {
        testing::farm("web", 3)
            .weight(0, 10)
            .weight(1, 20)
            .weight(2, 30)
    };
    let first = schedule(&p, farm, 0, 6);
    assert_eq!(schedule(&p, farm, 6, 6), first);
    assert_eq!(p.schedules.borrow()["web"].order.len(), 6);
    // Totals over 65536 are scaled down, keeping every member at least once.
    let farm = || testing::farm("web", 2).weight(0, 1_000_000).weight(1, 1);
    id(p.choose(&get(), &farm().build()));
    let order = p.schedules.borrow()["web"].order.clone();
    assert!(order.len() as u64 <= MAX_SCHEDULE, "{}", order.len());
    assert_eq!(order.iter().filter(|&&m| m == 1).count(), 1);
    assert_eq!(counts(&p, farm, order.len() as u64)[1], 1);
    // Large farms get shorter schedules, so that building one stays fast.
    let key: Vec<(u32, u32)> = (0..256).map(|i| (i, 1_000 + i)).collect();
    let s = Schedule::build(key);
    assert!(s.order.len() <= 8_192, "{}", s.order.len());
    assert!(s.order.contains(&0) && s.order.contains(&255));
}

#[test]
fn round_robin_schedule_is_cached_until_the_candidates_change() {
    let p = web(r#""balance": "round-robin""#);
    let farm = || testing::farm("web", 3).weight(0, 2);
    id(p.choose(&get(), &farm().build()));
    let built = p.schedules.borrow()["web"].order.as_ptr();
    id(p.choose(&get(), &farm().sequence(5).build()));
    assert_eq!(p.schedules.borrow()["web"].order.as_ptr(), built);
    // A member leaving rebuilds it without that member.
    let one_out = || farm().state(1, MemberState::OutOfService);
    let order = schedule(&p, one_out, 0, 30);
    assert!(!order.contains(&1));
    assert_eq!(order.iter().filter(|&&m| m == 0).count(), 20);
    assert_eq!(p.schedules.borrow()["web"].key, [(0, 2), (2, 1)]);
    // A weight change rebuilds it too.
    let order = schedule(&p, || one_out().weight(2, 2), 0, 4);
    assert_eq!(order, [0, 2, 0, 2]);
}

#[test]
fn round_robin_farms_keep_their_own_schedules() {
    let p =
        plugin(r#"{"farms": {"a": {"balance": "round-robin"}, "b": {"balance": "round-robin"}}}"#);
    let a = testing::farm("a", 2).weight(0, 3).sequence(1).build();
    let b = testing::farm("b", 3).sequence(1).build();
    for _ in 0..3 {
        assert_eq!(id(p.choose(&get(), &a)), 0);
        assert_eq!(id(p.choose(&get(), &b)), 1);
    }
    assert_eq!(p.schedules.borrow().len(), 2);
}

// Weighted total traffic and least response time.

#[test]
fn weighted_total_traffic_evens_bytes_per_weight() {
    let p = web(r#""balance": "weighted-total-traffic""#);
    let farm = testing::farm("web", 3)
        .weight(0, 2)
        .bytes(0, 3_000)
        .bytes(1, 2_000)
        .bytes(2, 1_600)
        .build();
    // 1500, 2000 and 1600 per unit of weight.
    assert_eq!(id(p.choose(&get(), &farm)), 0);
    // Simulated transfers of 1000 bytes each end in proportion to weight.
    let mut bytes = [0u64; 3];
    for s in 0..600 {
        let farm = (0..3)
            .fold(testing::farm("web", 3), |f, i| {
                f.bytes(i, bytes[i as usize])
            })
            .weight(0, 2)
            .weight(2, 3)
            .sequence(s)
            .build();
        let chosen = id(p.choose(&get(), &farm)) as usize;
        bytes[chosen] += 1_000;
    }
    assert_eq!(bytes, [200_000, 100_000, 300_000]);
}

#[test]
fn least_response_time_prefers_unmeasured_then_fastest() {
    let p = web(r#""balance": "least-response-time""#);
    let farm = testing::farm("web", 3)
        .latency_us(0, 0)
        .latency_us(1, 5_000)
        .latency_us(2, 3_000)
        .build();
    assert_eq!(id(p.choose(&get(), &farm)), 0);
    let farm = testing::farm("web", 3)
        .latency_us(0, 4_000)
        .latency_us(1, 5_000)
        .latency_us(2, 3_000)
        .build();
    assert_eq!(id(p.choose(&get(), &farm)), 2);
    // A member of weight 2 counts as half as slow: 7000/2 < 4000.
    let farm = testing::farm("web", 2)
        .weight(0, 2)
        .latency_us(0, 7_000)
        .latency_us(1, 4_000)
        .build();
    assert_eq!(id(p.choose(&get(), &farm)), 0);
    // Equally fast members take turns.
    let farm = || {
        testing::farm("web", 3)
            .latency_us(0, 1_000)
            .latency_us(1, 1_000)
            .latency_us(2, 2_000)
    };
    assert_eq!(counts(&p, farm, 100), [50, 50, 0]);
}

// Random and power of two choices.

#[test]
fn random_follows_weights() {
    let p = web(r#""balance": "random""#);
    let farm = || {
        testing::farm("web", 3)
            .weight(0, 1)
            .weight(1, 2)
            .weight(2, 3)
    };
    let c = counts(&p, farm, 30_000);
    // Within 5 % of the expected counts: over 4 standard deviations.
    for (count, expected) in c.iter().zip([5_000, 10_000, 15_000]) {
        assert!(within(*count, expected, 5), "{c:?}");
    }
    // Members that are not active are never drawn.
    let farm = || testing::farm("web", 3).state(1, MemberState::Draining);
    assert_eq!(counts(&p, farm, 1_000)[1], 0);
}

#[test]
fn power_of_two_choices_takes_the_less_busy_of_two() {
    let p = web(r#""balance": "power-of-two-choices""#);
    // With two members both are drawn every time, so the idle one always wins.
    let farm = || testing::farm("web", 2).in_flight(0, 5);
    assert_eq!(counts(&p, farm, 200), [0, 200]);
    // The busiest of three is always paired with a less busy one, so it never wins.
    let farm = || testing::farm("web", 3).in_flight(0, 9);
    let c = counts(&p, farm, 10_000);
    assert_eq!(c[0], 0);
    assert!(within(c[1], 5_000, 5) && within(c[2], 5_000, 5), "{c:?}");
    // Equal in flight: latency does not decide (it would starve the slower member when requests
    // do not overlap); the random first pick does.
    let farm = || {
        testing::farm("web", 2)
            .latency_us(0, 900)
            .latency_us(1, 100)
    };
    let c = counts(&p, farm, 2_000);
    assert!(within(c[0], 1_000, 10), "{c:?}");
    // Fully equal: the first drawn wins, so the shares follow the weights.
    let farm = || testing::farm("web", 3).weight(2, 2);
    let c = counts(&p, farm, 20_000);
    for (count, expected) in c.iter().zip([5_000, 5_000, 10_000]) {
        assert!(within(*count, expected, 5), "{c:?}");
    }
    // A lone candidate is chosen.
    let farm = testing::farm("web", 2)
        .state(0, MemberState::OutOfService)
        .build();
    assert_eq!(id(p.choose(&get(), &farm)), 1);
}

// Hash.

fn user(i: u32) -> Request<'static> {
    testing::request("GET", "/")
        .header("x-user", &format!("user-{i}"))
        .build()
}

#[test]
fn hash_spreads_keys_evenly() {
    let p = web(r#""balance": "hash", "hash_on": "header:X-User""#);
    let farm = testing::farm("web", 10).build();
    let mut c = [0u32; 10];
    for i in 0..10_000 {
        c[id(p.choose(&user(i), &farm)) as usize] += 1;
    }
    // 1000 each, within 15 % (about 5 standard deviations).
    assert!(c.iter().all(|&n| (850..=1150).contains(&n)), "{c:?}");
}

#[test]
fn hash_respects_weights() {
    let p = web(r#""balance": "hash", "hash_on": "header:x-user""#);
    let farm = testing::farm("web", 4)
        .weight(0, 1)
        .weight(1, 2)
        .weight(2, 3)
        .weight(3, 4)
        .build();
    let mut c = [0u64; 4];
    for i in 0..20_000 {
        c[id(p.choose(&user(i), &farm)) as usize] += 1;
    }
    for (count, expected) in c.iter().zip([2_000, 4_000, 6_000, 8_000]) {
        assert!(within(*count, expected, 10), "{c:?}");
    }
}

#[test]
fn hash_remaps_only_the_keys_of_a_member_that_leaves() {
    let p = web(r#""balance": "hash", "hash_on": "header:x-user""#);
    let farm = testing::farm("web", 10).build();
    let before: Vec<u32> = (0..10_000).map(|i| id(p.choose(&user(i), &farm))).collect();

    // Member web5 (id 4) goes out of service: about 1/10 of the keys move, all of them its own.
    let without = testing::farm("web", 10)
        .state(4, MemberState::OutOfService)
        .build();
    let mut moved = 0;
    for (i, &was) in (0..10_000).zip(&before) {
        let now = id(p.choose(&user(i), &without));
        assert_ne!(now, 4);
        if now != was {
            assert_eq!(was, 4, "key {i} moved from {was} to {now}");
            moved += 1;
        }
    }
    assert_eq!(moved, before.iter().filter(|&&m| m == 4).count());
    assert!((850..=1150).contains(&moved), "{moved} keys moved");

    // Members are matched by name, not id: dropping web5 from the list and renumbering the
    // others leaves every other key where it was.
    let renumbered = (4..9)
        .fold(testing::farm("web", 9), |f, id| {
            f.name(id, &format!("web{}", id + 2))
        })
        .build();
    fn name<'f>(farm: &'f Farm, id: u32) -> Option<&'f str> {
        farm.member(id).map(|m| m.name())
    }
    for (i, &was) in (0..10_000).zip(&before) {
        let now = id(p.choose(&user(i), &renumbered));
        if was != 4 {
            assert_eq!(name(&renumbered, now), name(&farm, was));
        }
    }

    // A member joining takes about 1/11 of the keys, from every member. The list starts at web4
    // (id 0 is web4, id 8 is web1), so ids say nothing about names.
    let grown = (0..11)
        .fold(testing::farm("web", 11), |f, id| {
            f.name(id, &format!("web{}", (id + 3) % 11 + 1))
        })
        .build();
    let mut joined = 0;
    for (i, &was) in (0..10_000).zip(&before) {
        let now = name(&grown, id(p.choose(&user(i), &grown)));
        if now != name(&farm, was) {
            assert_eq!(now, Some("web11"));
            joined += 1;
        }
    }
    assert!((750..=1050).contains(&joined), "{joined} keys joined web11");
}

#[test]
fn hash_keys() {
    let farm = testing::farm("web", 5).build();
    let expect = |key: &str| rendezvous(key.as_bytes(), candidates(&farm));
    let choose = |p: &Balancer, req: &Request| id(p.choose(req, &farm));

    let p = web(r#""balance": "hash", "hash_on": "url""#);
    for pq in ["/a/b?x=1", "/a/b", "/c?", "/"] {
        let req = testing::request("GET", pq).build();
        assert_eq!(Some(choose(&p, &req)), expect(pq), "{pq}");
    }

    let p = web(r#""balance": "hash", "hash_on": "query-string""#);
    let req = testing::request("GET", "/one?lang=fr").build();
    assert_eq!(Some(choose(&p, &req)), expect("lang=fr"));
    let req = testing::request("GET", "/two?lang=fr").build();
    assert_eq!(Some(choose(&p, &req)), expect("lang=fr"));
    let req = testing::request("GET", "/three").build();
    assert_eq!(Some(choose(&p, &req)), expect(""));

    let p = web(r#""balance": "hash", "hash_on": "client-address""#);
    let req = testing::request("GET", "/").client("198.51.100.7").build();
    assert_eq!(Some(choose(&p, &req)), expect("198.51.100.7"));

    let p = web(r#""balance": "hash", "hash_on": "cookie:sess""#);
    let req = testing::request("GET", "/")
        .header("cookie", "theme=dark; sess=abc123")
        .build();
    assert_eq!(Some(choose(&p, &req)), expect("abc123"));
}

#[test]
fn hash_without_the_header_or_cookie_falls_back_to_least_current_request() {
    let farm = testing::farm("web", 3)
        .in_flight(0, 3)
        .in_flight(1, 1)
        .in_flight(2, 2)
        .build();
    for fields in [
        r#""balance": "hash", "hash_on": "header:x-user""#,
        r#""balance": "hash", "hash_on": "cookie:sess""#,
    ] {
        let p = web(fields);
        let req = testing::request("GET", "/")
            .header("cookie", "other=1")
            .build();
        assert_eq!(id(p.choose(&req, &farm)), 1, "{fields}");
    }
}

// Cookie affinity.

#[test]
fn cookie_affinity_keeps_a_client_on_its_member() {
    let p = web(r#""affinity": "cookie""#);
    let farm = testing::farm("web", 3).sticky(2).sequence(7).build();
    assert_eq!(choice(p.choose(&get(), &farm)), (2, false));
    // A draining member keeps its sessions.
    let farm = testing::farm("web", 3)
        .sticky(1)
        .state(1, MemberState::Draining)
        .build();
    assert_eq!(choice(p.choose(&get(), &farm)), (1, false));
    // Even when it is the last one standing.
    let farm = testing::farm("web", 2)
        .sticky(1)
        .state(0, MemberState::OutOfService)
        .state(1, MemberState::Draining)
        .build();
    assert_eq!(choice(p.choose(&get(), &farm)), (1, false));
}

#[test]
fn cookie_affinity_spreads_new_sessions_round_robin_and_pins_them() {
    let p = web(r#""affinity": "cookie""#);
    let mut chosen = Vec::new();
    for s in 0..6 {
        let farm = testing::farm("web", 3).sequence(s).build();
        let (id, stick) = choice(p.choose(&get(), &farm));
        assert!(stick);
        chosen.push(id);
    }
    assert_eq!(chosen, [0, 1, 2, 0, 1, 2]);
    // Draining members get no new sessions.
    for s in 0..20 {
        let farm = testing::farm("web", 3)
            .state(1, MemberState::Draining)
            .sequence(s)
            .build();
        let (id, stick) = choice(p.choose(&get(), &farm));
        assert!(stick && id != 1);
    }
}

#[test]
fn cookie_affinity_fails_over_and_stays_on_the_new_member() {
    let p = web(r#""affinity": "cookie", "balance": "least-current-request""#);
    // The client's member went out of service: it moves to the next member in its own order
    // (not by load or turn, so every request of the client goes the same way) and gets a new
    // cookie.
    let lost = || {
        testing::farm("web", 3)
            .sticky(0)
            .state(0, MemberState::OutOfService)
    };
    let farm = lost().build();
    let next = failover(&get(), farm.member(0).unwrap(), &farm).unwrap();
    assert_ne!(next, 0);
    for s in 0..10 {
        let farm = lost().sequence(s).in_flight(next, 50 * s as u32).build();
        assert_eq!(choice(p.choose(&get(), &farm)), (next, true));
    }
    // Clients spread over the members left.
    let mut landed = [0; 3];
    for i in 0..200 {
        let req = testing::request("GET", "/")
            .client(&format!("198.51.100.{i}"))
            .build();
        landed[choice(p.choose(&req, &farm)).0 as usize] += 1;
    }
    assert!(
        landed[0] == 0 && landed[1] > 50 && landed[2] > 50,
        "{landed:?}"
    );
    // The old member is back; the client's cookie now names member 2 and it stays there.
    let farm = testing::farm("web", 3).sticky(2).in_flight(2, 9).build();
    assert_eq!(choice(p.choose(&get(), &farm)), (2, false));
    // Removed, unverifiable or unknown members are left the same way.
    for state in [MemberState::Removed, MemberState::UnableToVerify] {
        let farm = testing::farm("web", 2).sticky(0).state(0, state).build();
        assert_eq!(choice(p.choose(&get(), &farm)), (1, true), "{state:?}");
    }
    let farm = testing::farm("web", 2).sticky(7).in_flight(0, 1).build();
    assert_eq!(choice(p.choose(&get(), &farm)), (1, true));
    // Client-IP affinity: a member out of service (or failed just now) sends its clients to
    // the next member in each client's hash order.
    let p = web(r#""affinity": "client-ip""#);
    let req = testing::request("GET", "/").client("203.0.113.7").build();
    let farm = testing::farm("web", 4).build();
    let first = choice(p.choose(&req, &farm)).0;
    let farm = testing::farm("web", 4)
        .state(first, MemberState::OutOfService)
        .build();
    let second = choice(p.choose(&req, &farm)).0;
    assert_ne!(first, second);
    let order = rendezvous(b"203.0.113.7", candidates(&farm));
    assert_eq!(Some(second), order);
}

#[test]
fn cookie_affinity_uses_the_configured_balance_for_new_sessions() {
    let p = web(r#""affinity": "cookie", "balance": "hash", "hash_on": "client-address""#);
    let farm = testing::farm("web", 4).build();
    let req = testing::request("GET", "/").client("203.0.113.9").build();
    let expected = rendezvous(b"203.0.113.9", candidates(&farm));
    assert_eq!(
        p.choose(&req, &farm),
        AffinityDecision::stick_to(expected.unwrap_or(99))
    );
}

// Client-IP affinity.

fn client(i: u32) -> Request<'static> {
    testing::request("GET", "/")
        .client(&format!(
            "10.{}.{}.{}",
            i >> 16 & 255,
            i >> 8 & 255,
            i & 255
        ))
        .build()
}

#[test]
fn client_ip_affinity_spreads_fails_over_evenly_and_returns() {
    let p = web(r#""affinity": "client-ip""#);
    let farm = testing::farm("web", 3).build();
    let before: Vec<u32> = (0..3_000)
        .map(|i| id(p.choose(&client(i), &farm)))
        .collect();
    for m in 0..3 {
        let n = before.iter().filter(|&&x| x == m).count();
        assert!((850..=1150).contains(&n), "member {m}: {n}");
    }
    // The same client always lands on the same member, whatever the farm's counter says.
    let later = testing::farm("web", 3).sequence(12_345).build();
    assert_eq!(id(p.choose(&client(17), &later)), before[17]);

    // Member 1 goes out of service: its clients split about evenly, the others stay put.
    let down = testing::farm("web", 3)
        .state(1, MemberState::OutOfService)
        .build();
    let mut moved_to = [0u32; 3];
    for (i, &was) in (0..3_000).zip(&before) {
        let now = id(p.choose(&client(i), &down));
        if was == 1 {
            moved_to[now as usize] += 1;
        } else {
            assert_eq!(now, was, "client {i}");
        }
    }
    let moved = moved_to[0] + moved_to[2];
    assert_eq!(moved_to[1], 0);
    assert!(
        moved_to[0] * 100 >= moved * 40 && moved_to[2] * 100 >= moved * 40,
        "{moved_to:?}"
    );

    // Back in service: every client returns to where it was.
    let after: Vec<u32> = (0..3_000)
        .map(|i| id(p.choose(&client(i), &farm)))
        .collect();
    assert_eq!(after, before);
}

#[test]
fn client_ip_affinity_sends_nothing_new_to_draining_members() {
    let p = web(r#""affinity": "client-ip""#);
    let farm = testing::farm("web", 3)
        .state(0, MemberState::Draining)
        .build();
    assert!((0..1_000).all(|i| id(p.choose(&client(i), &farm)) != 0));
}

// Everything else.

#[test]
fn no_active_member_passes() {
    let farm = testing::farm("web", 2)
        .state(0, MemberState::OutOfService)
        .state(1, MemberState::Draining)
        .build();
    let empty = testing::farm("web", 0).build();
    for fields in [
        r#""balance": "least-current-request""#,
        r#""balance": "round-robin""#,
        r#""balance": "weighted-total-traffic""#,
        r#""balance": "least-response-time""#,
        r#""balance": "random""#,
        r#""balance": "power-of-two-choices""#,
        r#""balance": "hash", "hash_on": "url""#,
        r#""balance": "hash", "hash_on": "header:x-user""#,
        r#""affinity": "client-ip""#,
        r#""affinity": "cookie""#,
    ] {
        let p = web(fields);
        assert_eq!(p.choose(&get(), &farm), AffinityDecision::Pass, "{fields}");
        assert_eq!(p.choose(&get(), &empty), AffinityDecision::Pass, "{fields}");
    }
}

#[test]
fn farms_missing_from_the_settings_get_the_defaults() {
    let p = web(r#""balance": "round-robin""#);
    let farm = testing::farm("other", 3)
        .in_flight(0, 2)
        .in_flight(2, 1)
        .sequence(0)
        .build();
    assert_eq!(p.choose(&get(), &farm), AffinityDecision::member(1));
}

#[test]
fn policies_from_settings() {
    let p = plugin(
        r#"{"farms": {"a": {}, "b": {"affinity": "cookie"}, "c": {"affinity": "client-ip"},
                      "d": {"balance": "hash", "hash_on": "header:X-Tenant"},
                      "e": {"balance": "hash", "hash_on": "cookie:Session"}}}"#,
    );
    let policy = |farm: &str| p.farms[farm].clone();
    assert_eq!(policy("a").balance, Balance::LeastCurrentRequest);
    assert_eq!(policy("a").affinity, AffinityMode::None);
    assert_eq!(policy("b").balance, Balance::RoundRobin);
    assert_eq!(policy("c").affinity, AffinityMode::ClientIp);
    assert_eq!(
        policy("d").hash_on,
        Some(HashKey::Header("x-tenant".into()))
    );
    assert_eq!(policy("e").hash_on, Some(HashKey::Cookie("Session".into())));
    assert_eq!(p.default, policy("a"));
}

#[test]
fn invalid_settings_name_the_farm() {
    for (fields, expected) in [
        (r#""balance": "fastest""#, "unknown variant `fastest`"),
        (r#""balance": "hash""#, "balance \"hash\" needs hash_on"),
        (
            r#""balance": "round-robin", "hash_on": "url""#,
            "hash_on only applies to balance \"hash\"",
        ),
        (r#""hash_on": "url""#, "hash_on only applies"),
        (
            r#""balance": "hash", "hash_on": "body""#,
            "hash_on \"body\" is not one of",
        ),
        (
            r#""balance": "hash", "hash_on": "header:""#,
            "names no header",
        ),
        (
            r#""balance": "hash", "hash_on": "cookie: ""#,
            "names no cookie",
        ),
        (r#""affinity": "session""#, "unknown variant `session`"),
        (r#""affinity": true"#, "farm \"web\""),
        (r#""weights": [1, 2]"#, "unknown field `weights`"),
    ] {
        let json = format!(r#"{{"farms": {{"web": {{{fields}}}}}}}"#);
        let e = error(&json);
        assert!(
            e.contains("farm \"web\"") && e.contains(expected),
            "{json}: {e}"
        );
    }
    let e = error(r#"{"farm": {}}"#);
    assert!(e.contains("unknown field `farm`"), "{e}");
}
