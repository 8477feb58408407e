//! The built-in default plugins through the real proxy: every balancing algorithm, cookie and
//! client-IP affinity with failover and draining, URL rewrite rules, and link translation of
//! bodies (plain, gzip, br) and headers. Member state changes are made the way the admin API
//! and health checks make them: through the farm's members.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use farmgate::farm::MemberState;
use http::Request;

use crate::support::*;

fn even<'a>(backends: &[&'a Backend]) -> Vec<(&'a Backend, u32)> {
    backends.iter().map(|b| (*b, 1)).collect()
}

fn count(counts: &HashMap<String, usize>, name: &str) -> usize {
    counts.get(name).copied().unwrap_or(0)
}

/// Asserts the built-in balance plugin made every member choice of farm `farm`: it never failed,
/// and the host never had to choose in its place. (The host's own choice, least current
/// request, would give the same answers as the default algorithm, so only this tells them
/// apart.)
fn the_builtin_chose_every_member(proxy: &Proxy) {
    let rt = &proxy.running().proxy.plugins;
    let balance = rt
        .builtins()
        .iter()
        .find(|p| p.name == "builtin-balance")
        .cloned()
        .expect("the built-in balance plugin");
    assert!(balance.stats.calls.load(Ordering::Relaxed) > 0);
    assert_eq!(balance.stats.failures.load(Ordering::Relaxed), 0);
    assert_eq!(
        proxy.farm("farm").fallbacks.load(Ordering::Relaxed),
        0,
        "the host chose members in the built-in balancer's place"
    );
}

/// Holds one request open on a member through the proxy (the member's `/hold`), waiting
/// until it is in flight. Which member took it is for the balancer to say: its name is
/// returned with the task that ends when the member's gate opens.
async fn hold_one(proxy: &Proxy) -> (String, tokio::task::JoinHandle<Answer>) {
    let farm = proxy.farm("farm");
    let in_flight = || -> u32 {
        farm.members()
            .iter()
            .map(|m| m.stats.in_flight.load(Ordering::Relaxed))
            .sum()
    };
    let before = in_flight();
    let members_before: Vec<u32> = farm
        .members()
        .iter()
        .map(|m| m.stats.in_flight.load(Ordering::Relaxed))
        .collect();
    let mut held = Client::connect(proxy.addr).await;
    let task = tokio::spawn(async move { held.get("www.example.com", "/hold").await });
    eventually("the held request is in flight", || {
        in_flight() == before + 1
    })
    .await;
    let busy = farm
        .members()
        .iter()
        .zip(members_before)
        .find(|(m, was)| m.stats.in_flight.load(Ordering::Relaxed) > *was)
        .map(|(m, _)| m.name.clone())
        .expect("a member holds the request");
    (busy, task)
}

async fn three() -> (Backend, Backend, Backend) {
    (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    )
}

#[tokio::test]
async fn least_current_request_takes_turns_and_avoids_busy_members() {
    let (a, b, c) = three().await;
    let proxy = Proxy::start(&weighted_config(&even(&[&a, &b, &c]), "", "", "")).await;
    let mut client = Client::connect(proxy.addr).await;
    let counts = spread(&mut client, 30, "/").await;
    for n in ["a", "b", "c"] {
        assert_eq!(count(&counts, n), 10, "{counts:?}");
    }
    // A request held open on "a" makes it the busiest: the next ones go elsewhere.
    let mut held = Client::connect(proxy.addr).await;
    let hold = tokio::spawn(async move { held.get("www.example.com", "/hold").await });
    eventually("a request is in flight", || {
        proxy
            .farm("farm")
            .members()
            .iter()
            .any(|m| m.stats.in_flight.load(std::sync::atomic::Ordering::Relaxed) == 1)
    })
    .await;
    let busy = proxy
        .farm("farm")
        .members()
        .iter()
        .find(|m| m.stats.in_flight.load(std::sync::atomic::Ordering::Relaxed) == 1)
        .map(|m| m.name.clone())
        .unwrap();
    let counts = spread(&mut client, 10, "/").await;
    assert_eq!(count(&counts, &busy), 0, "{counts:?}");
    for backend in [&a, &b, &c] {
        backend.open_gate();
    }
    bounded("held request ends", hold).await.unwrap();
    the_builtin_chose_every_member(&proxy);
}

#[tokio::test]
async fn round_robin_respects_weights_over_every_window() {
    let (a, b, c) = three().await;
    let proxy = Proxy::start(&weighted_config(
        &[(&a, 3), (&b, 1), (&c, 1)],
        "balance = \"round-robin\"",
        "",
        "",
    ))
    .await;
    let mut client = Client::connect(proxy.addr).await;
    // Every window of 5 consecutive choices holds a three times and b and c once each.
    let mut order = Vec::new();
    for _ in 0..25 {
        let r = client.get("www.example.com", "/").await;
        order.push(r.header("x-backend").unwrap_or("").to_string());
    }
    for window in order.windows(5) {
        let a_count = window.iter().filter(|n| *n == "a").count();
        assert_eq!(a_count, 3, "{order:?}");
    }
    // Smooth: the heavy member is never chosen three times in a row.
    assert!(
        !order.windows(3).any(|w| w.iter().all(|n| n == "a")),
        "{order:?}"
    );
}

#[tokio::test]
async fn weighted_total_traffic_balances_bytes_by_weight() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = Proxy::start(&weighted_config(
        &[(&a, 2), (&b, 1)],
        "balance = \"weighted-total-traffic\"",
        "",
        "",
    ))
    .await;
    let mut client = Client::connect(proxy.addr).await;
    let counts = spread(&mut client, 30, "/download?size=4096").await;
    // Equal responses: bytes follow request counts, so the split is 2:1 within one request.
    assert!(count(&counts, "a").abs_diff(20) <= 1, "{counts:?}");
    let farm = proxy.farm("farm");
    let bytes: Vec<u64> = farm
        .members()
        .iter()
        .map(|m| m.stats.bytes.load(std::sync::atomic::Ordering::Relaxed))
        .collect();
    assert!(bytes[0] >= 19 * 4096 && bytes[1] >= 9 * 4096, "{bytes:?}");
}

#[tokio::test]
async fn least_response_time_prefers_the_fast_member() {
    let fast = Backend::start("fast").await;
    let slow = Backend::start_slow("slow", Duration::from_millis(30)).await;
    let proxy = Proxy::start(&weighted_config(
        &even(&[&fast, &slow]),
        "balance = \"least-response-time\"",
        "",
        "",
    ))
    .await;
    let farm = proxy.farm("farm");
    let mut client = Client::connect(proxy.addr).await;
    // Each request goes to the member whose measured response time is lowest when it is asked
    // (an unmeasured one, 0, first). The measurements are the oracle, not the delays: a stall
    // of the fast member on a busy machine changes which member that is, never the rule.
    for i in 0..20 {
        let ewma: HashMap<String, u64> = farm
            .members()
            .iter()
            .map(|m| {
                let v = m.stats.latency_ewma_us.load(Ordering::Relaxed);
                (m.name.clone(), v)
            })
            .collect();
        let r = client.get("www.example.com", "/").await;
        assert_eq!(r.status, 200);
        let chosen = r.header("x-backend").unwrap_or("").to_string();
        let other = if chosen == "fast" { "slow" } else { "fast" };
        assert!(
            ewma[&chosen] <= ewma[other],
            "request {i} went to {chosen} with response times {ewma:?}"
        );
    }
    // Both were measured, and the slow member at no less than its delay.
    assert!(fast.requests() >= 1 && slow.requests() >= 1);
    let slow_ewma = farm
        .member("slow")
        .unwrap()
        .stats
        .latency_ewma_us
        .load(Ordering::Relaxed);
    assert!(slow_ewma >= 30_000, "{slow_ewma}");
    the_builtin_chose_every_member(&proxy);
}

#[tokio::test]
async fn random_ignores_load_and_spreads_evenly() {
    let (a, b, c) = three().await;
    let proxy = Proxy::start(&weighted_config(
        &even(&[&a, &b, &c]),
        "balance = \"random\"",
        "",
        "",
    ))
    .await;
    // A request in flight does not keep random balancing off its member, as it would the
    // default (least current request, which would also take the others strictly in turn).
    let (busy, held) = hold_one(&proxy).await;
    let mut client = Client::connect(proxy.addr).await;
    let counts = spread(&mut client, 300, "/").await;
    for n in ["a", "b", "c"] {
        // Expected 100 each: 5 standard deviations either way.
        assert!(
            (60..=140).contains(&count(&counts, n)),
            "busy {busy}: {counts:?}"
        );
    }
    for backend in [&a, &b, &c] {
        backend.open_gate();
    }
    bounded("the held request ends", held).await.unwrap();
    the_builtin_chose_every_member(&proxy);
}

#[tokio::test]
async fn power_of_two_choices_takes_the_idle_one_of_its_two() {
    let (a, b, c) = three().await;
    let proxy = Proxy::start(&weighted_config(
        &even(&[&a, &b, &c]),
        "balance = \"power-of-two-choices\"",
        "",
        "",
    ))
    .await;
    // Two requests in flight on two members (the second cannot join the first: of any two
    // members including the busy one, the idle one wins).
    let (first, held_first) = hold_one(&proxy).await;
    let (second, held_second) = hold_one(&proxy).await;
    assert_ne!(first, second);
    let idle = ["a", "b", "c"]
        .into_iter()
        .find(|n| *n != first && *n != second)
        .unwrap();
    let mut client = Client::connect(proxy.addr).await;
    let counts = spread(&mut client, 300, "/").await;
    // Two random members are compared and the less loaded one taken: the idle member goes
    // whenever it is one of the two (2 in 3, expected 200), a busy one only when both are busy
    // (1 in 3). Least current request would send all 300 to the idle member, random 100; the
    // bounds are 6 standard deviations either way.
    assert!(
        (150..=250).contains(&count(&counts, idle)),
        "idle {idle}: {counts:?}"
    );
    for backend in [&a, &b, &c] {
        backend.open_gate();
    }
    bounded("the first held request ends", held_first)
        .await
        .unwrap();
    bounded("the second held request ends", held_second)
        .await
        .unwrap();
    the_builtin_chose_every_member(&proxy);
}

#[tokio::test]
async fn hashing_is_consistent_and_moves_only_the_keys_of_a_removed_member() {
    let (a, b, c) = three().await;
    let proxy = Proxy::start(&weighted_config(
        &even(&[&a, &b, &c]),
        "balance = \"hash\"\nhash_on = \"url\"",
        "",
        "",
    ))
    .await;
    let mut client = Client::connect(proxy.addr).await;
    let mut first = HashMap::new();
    for i in 0..90 {
        let path = format!("/item/{i}");
        let r = client.get("www.example.com", &path).await;
        first.insert(path, r.header("x-backend").unwrap_or("").to_string());
    }
    let mut per_member: HashMap<&str, usize> = HashMap::new();
    for m in first.values() {
        *per_member.entry(m.as_str()).or_default() += 1;
    }
    assert!(per_member.values().all(|&n| n >= 15), "{per_member:?}");
    // The same URL again: the same member.
    for (path, member) in first.iter().take(20) {
        let r = client.get("www.example.com", path).await;
        assert_eq!(r.header("x-backend"), Some(member.as_str()));
    }
    // b leaves: only b's keys move.
    proxy.farm("farm").members()[1].set_state(MemberState::OutOfService);
    for (path, member) in &first {
        let now = client.get("www.example.com", path).await;
        let now = now.header("x-backend").unwrap_or("");
        if member == "b" {
            assert_ne!(now, "b");
        } else {
            assert_eq!(now, member, "{path} moved although its member stayed");
        }
    }
}

/// The affinity cookie pair (`name=value`) of a response, if it set one.
fn affinity_cookie(a: &Answer) -> Option<String> {
    a.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("farmgate_affinity="))
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
}

async fn get_with_cookie(client: &mut Client, cookie: Option<&str>) -> Answer {
    let mut req = Request::get("/").header("host", "www.example.com");
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    client.request(req.body(empty()).unwrap()).await
}

#[tokio::test]
async fn cookie_affinity_sticks_fails_over_and_stays_after_return() {
    let (a, b, c) = three().await;
    let proxy = Proxy::start(&weighted_config(
        &even(&[&a, &b, &c]),
        "affinity = \"cookie\"",
        "",
        "",
    ))
    .await;
    let farm = proxy.farm("farm");
    let mut client = Client::connect(proxy.addr).await;
    let first = get_with_cookie(&mut client, None).await;
    let cookie = affinity_cookie(&first).expect("a new session gets the affinity cookie");
    let home = first.header("x-backend").unwrap().to_string();
    // The cookie names no address.
    assert!(
        [&a, &b, &c]
            .iter()
            .all(|m| !cookie.contains(&m.port().to_string())),
        "{cookie}"
    );
    assert!(!cookie.contains("127.0.0.1"), "{cookie}");
    for _ in 0..10 {
        let r = get_with_cookie(&mut client, Some(&cookie)).await;
        assert_eq!(r.header("x-backend"), Some(home.as_str()));
        assert_eq!(
            affinity_cookie(&r),
            None,
            "an unchanged pin is not rewritten"
        );
    }
    // New sessions are spread round robin: three new clients, three members.
    let mut new_members: Vec<String> = Vec::new();
    for _ in 0..3 {
        let r = get_with_cookie(&mut client, None).await;
        assert!(affinity_cookie(&r).is_some());
        new_members.push(r.header("x-backend").unwrap().to_string());
    }
    new_members.sort();
    assert_eq!(new_members, ["a", "b", "c"]);

    // Home goes out of service: the client moves and gets a new cookie.
    let home_idx = farm.members().iter().position(|m| m.name == home).unwrap();
    farm.members()[home_idx].set_state(MemberState::OutOfService);
    let moved = get_with_cookie(&mut client, Some(&cookie)).await;
    let new_home = moved.header("x-backend").unwrap().to_string();
    assert_ne!(new_home, home);
    let new_cookie = affinity_cookie(&moved).expect("the cookie is rewritten on failover");
    // Home returns; the client stays where it moved (TMG).
    farm.members()[home_idx].set_state(MemberState::Active);
    for _ in 0..5 {
        let r = get_with_cookie(&mut client, Some(&new_cookie)).await;
        assert_eq!(r.header("x-backend"), Some(new_home.as_str()));
    }
}

#[tokio::test]
async fn a_forged_or_foreign_cookie_is_ignored_not_an_error() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let config = weighted_config(&even(&[&a, &b]), "affinity = \"cookie\"", "", "");
    let proxy = Proxy::start(&config).await;
    let mut client = Client::connect(proxy.addr).await;
    for forged in [
        "farmgate_affinity=AAAAAAAAAAAAAAAAAAAAAA",
        "farmgate_affinity=127.0.0.1:80",
        "farmgate_affinity=",
        "farmgate_affinity=%%%; other=1",
    ] {
        let r = get_with_cookie(&mut client, Some(forged)).await;
        assert_eq!(r.status, 200, "{forged}");
        assert!(
            affinity_cookie(&r).is_some(),
            "{forged}: a fresh pin is given"
        );
    }
    // A genuine cookie of another proxy with another key is foreign here.
    let other = Proxy::start(&config.replace(
        "[proxy]",
        "[proxy]\naffinity_key = \"another key of 16+ chars\"",
    ))
    .await;
    let theirs = affinity_cookie(&get_once(other.addr, "www.example.com", "/").await).unwrap();
    let r = get_with_cookie(&mut client, Some(&theirs)).await;
    assert_eq!(r.status, 200);
    assert!(affinity_cookie(&r).is_some());
}

#[tokio::test]
async fn instances_with_one_key_accept_each_others_cookies() {
    let (a, b, c) = three().await;
    let config = weighted_config(
        &even(&[&a, &b, &c]),
        "affinity = \"cookie\"",
        "",
        "affinity_key = \"shared key for every instance\"",
    );
    let one = Proxy::start(&config).await;
    let two = Proxy::start(&config).await;
    let first = get_once(one.addr, "www.example.com", "/").await;
    let cookie = affinity_cookie(&first).unwrap();
    let home = first.header("x-backend").unwrap().to_string();
    let mut client = Client::connect(two.addr).await;
    for _ in 0..5 {
        let r = get_with_cookie(&mut client, Some(&cookie)).await;
        assert_eq!(r.header("x-backend"), Some(home.as_str()));
        assert_eq!(affinity_cookie(&r), None);
    }
}

#[tokio::test]
async fn draining_under_cookie_affinity_keeps_sessions_and_takes_no_new_ones() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = Proxy::start(&weighted_config(
        &even(&[&a, &b]),
        "affinity = \"cookie\"",
        "",
        "",
    ))
    .await;
    let farm = proxy.farm("farm");
    let mut client = Client::connect(proxy.addr).await;
    // Find a session pinned to a.
    let mut on_a = None;
    for _ in 0..4 {
        let r = get_with_cookie(&mut client, None).await;
        if r.header("x-backend") == Some("a") {
            on_a = affinity_cookie(&r);
        }
    }
    let on_a = on_a.expect("round robin gave a a session");
    farm.members()[0].set_state(MemberState::Draining);
    for _ in 0..5 {
        let r = get_with_cookie(&mut client, Some(&on_a)).await;
        assert_eq!(
            r.header("x-backend"),
            Some("a"),
            "the existing session stays"
        );
    }
    for _ in 0..10 {
        let r = get_with_cookie(&mut client, None).await;
        assert_eq!(
            r.header("x-backend"),
            Some("b"),
            "no new session on a draining member"
        );
    }
}

async fn get_as(client: &mut Client, ip: &str) -> String {
    let req = Request::get("/")
        .header("host", "www.example.com")
        .header("x-forwarded-for", ip)
        .body(empty())
        .unwrap();
    let r = client.request(req).await;
    assert_eq!(r.status, 200);
    r.header("x-backend").unwrap_or("").to_string()
}

#[tokio::test]
async fn client_ip_affinity_spreads_failover_evenly_and_returns_clients() {
    let (a, b, c) = three().await;
    let proxy = Proxy::start(&weighted_config(
        &even(&[&a, &b, &c]),
        "affinity = \"client-ip\"",
        "",
        "trusted_proxies = [\"127.0.0.1\"]",
    ))
    .await;
    let farm = proxy.farm("farm");
    let mut client = Client::connect(proxy.addr).await;
    let clients: Vec<String> = (0..150)
        .map(|i| format!("10.1.{}.{}", i / 200, i % 200 + 1))
        .collect();
    let mut home = HashMap::new();
    for ip in &clients {
        home.insert(ip.clone(), get_as(&mut client, ip).await);
    }
    // Stable per client, spread over members.
    for ip in clients.iter().take(10) {
        assert_eq!(&get_as(&mut client, ip).await, &home[ip]);
    }
    let on_b: Vec<&String> = clients.iter().filter(|ip| home[*ip] == "b").collect();
    assert!(on_b.len() >= 30, "{} of 150 on b", on_b.len());
    // b fails: its clients spread over a and c; nobody else moves.
    farm.members()[1].set_state(MemberState::OutOfService);
    let mut moved_to: HashMap<String, usize> = HashMap::new();
    for ip in &clients {
        let now = get_as(&mut client, ip).await;
        if home[ip] == "b" {
            *moved_to.entry(now).or_default() += 1;
        } else {
            assert_eq!(now, home[ip]);
        }
    }
    let (to_a, to_c) = (count(&moved_to, "a"), count(&moved_to, "c"));
    assert_eq!(to_a + to_c, on_b.len());
    assert!(
        to_a.min(to_c) * 3 >= on_b.len() / 2,
        "failover spread unevenly: {moved_to:?}"
    );
    // b recovers: its clients return.
    farm.members()[1].set_state(MemberState::Active);
    for ip in &on_b {
        assert_eq!(get_as(&mut client, ip).await, "b");
    }
    // Draining: b gets no requests at all under client-IP affinity.
    farm.members()[1].set_state(MemberState::Draining);
    for ip in &on_b {
        assert_ne!(get_as(&mut client, ip).await, "b");
    }
}

#[tokio::test]
async fn forwarded_for_is_ignored_from_untrusted_peers() {
    let (a, b, c) = three().await;
    let proxy = Proxy::start(&weighted_config(
        &even(&[&a, &b, &c]),
        "affinity = \"client-ip\"",
        "",
        "",
    ))
    .await;
    let mut client = Client::connect(proxy.addr).await;
    // Every claimed address is the same client (127.0.0.1), so one member serves all.
    let mut seen = std::collections::HashSet::new();
    for i in 0..30 {
        seen.insert(get_as(&mut client, &format!("10.9.0.{}", i + 1)).await);
    }
    assert_eq!(seen.len(), 1, "{seen:?}");
}

#[tokio::test]
async fn url_rewrite_redirect_and_fixed_response() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let rules = r#"
[[rules.rewrite]]
name = "legacy"
path = '^/old/(.*)$'
action = "redirect"
url = "/new/{R:1}"
status = 308
[[rules.rewrite]]
path = '^/api/v(\d+)/(.*)$'
action = "rewrite"
url = "/{R:2}"
farm = "other"
set_headers = { "X-Api-Version" = "{R:1}" }
remove_headers = ["X-Debug"]
stop = true
[[rules.rewrite]]
host = '^(maint)\.example\.com$'
action = "respond"
status = 503
body = "{C:1}: back soon"
"#;
    let config = weighted_config(&even(&[&a]), "", rules, "").replace(
        "[[farms]]",
        &format!(
            "[[farms]]\nname = \"other\"\nmembers = [{{ name = \"b\", host = \"127.0.0.1\", port = {} }}]\n[[farms]]",
            b.port()
        ),
    );
    let proxy = Proxy::start(&config).await;
    let mut client = Client::connect(proxy.addr).await;

    let r = client.get("www.example.com", "/old/page?x=1").await;
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("/new/page?x=1"));
    assert_eq!(
        a.requests() + b.requests(),
        0,
        "a redirect reaches no member"
    );

    let req = Request::get("/API/v2/orders?id=7")
        .header("host", "www.example.com")
        .header("x-debug", "1")
        .body(empty())
        .unwrap();
    let r = client.request(req).await;
    assert_eq!(r.header("x-backend"), Some("b"));
    let seen = b.last_seen();
    assert_eq!(seen.uri, "/orders?id=7");
    assert_eq!(seen.headers.get("x-api-version").unwrap(), "2");
    assert!(seen.headers.get("x-debug").is_none());

    let r = client.get("maint.example.com", "/anything").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "maint: back soon");

    let r = client.get("www.example.com", "/plain").await;
    assert_eq!(r.header("x-backend"), Some("a"));
    assert_eq!(a.last_seen().uri, "/plain");
}

const INTERNAL: &str = "internal_site_name = \"intranet.test\"";

#[tokio::test]
async fn link_translation_of_bodies_split_anywhere_plain_gzip_and_br() {
    let a = Backend::start("a").await;
    let proxy = Proxy::start(&weighted_config(&even(&[&a]), "", INTERNAL, "")).await;
    let mut client = Client::connect(proxy.addr).await;
    let expected = links_page("a")
        .replace("http://intranet.test", "http://www.example.com")
        .replace("//intranet.test", "//www.example.com");
    assert!(expected.contains("intranet.test stays as text"));
    let page_len = links_page("a").len();
    // Split points inside the first link's internal name, and around it.
    let first = links_page("a").find("http://intranet.test").unwrap();
    let mut splits: Vec<usize> = (first..first + 22).collect();
    splits.extend([0, 1, page_len / 2, page_len - 1]);
    for enc in ["identity", "gzip", "deflate", "br"] {
        let points: Vec<usize> = if enc == "identity" {
            splits.clone()
        } else {
            // Encoded bodies: split their bytes at a spread of points.
            (0..12).map(|i| i * 37 + 1).collect()
        };
        for split in points {
            let r = client
                .get(
                    "www.example.com",
                    &format!("/links?enc={enc}&split={split}"),
                )
                .await;
            assert_eq!(r.status, 200);
            let coding = r.header("content-encoding").map(str::to_string);
            let expected_coding = (enc != "identity").then(|| enc.to_string());
            assert_eq!(coding, expected_coding, "{enc} stays {enc}");
            assert!(r.header("content-length").is_none());
            assert_eq!(r.header("etag"), Some("W/\"v1\""));
            let body = decode(coding.as_deref(), &r.body);
            assert_eq!(
                String::from_utf8_lossy(&body),
                expected,
                "{enc}, split at {split}"
            );
        }
    }
}

#[tokio::test]
async fn link_translation_ignores_case_stops_at_the_host_takes_in_ports_and_reads_json_escapes() {
    let a = Backend::start("a").await;
    let proxy = Proxy::start(&weighted_config(&even(&[&a]), "", INTERNAL, "")).await;
    let mut client = Client::connect(proxy.addr).await;
    let expected = concat!(
        "<a href=\"http://www.example.com:8443/a\">A</a> <a href='http://www.example.com:8443/b'>B</a>\n",
        "<style>body { background: URL(http://www.example.com:8443/c.png) }</style>\n",
        "<a href=\"http://intranet.test.example.org/\">other</a> http://intranet.testhost/ \n",
        "<a href=\"http://www.example.com:8443/x\">port</a> <img src=\"//www.example.com:8443/y.png\">\n",
        "<script>var u = \"http:\\/\\/www.example.com:8443\\/api\"; var v = \"http:\\/\\/intranet.tester\\/\";</script>\n",
        "See http://www.example.com:8443. Bye http://www.example.com:8443",
    );
    let len = EDGE_LINKS_PAGE.len();
    for enc in ["identity", "gzip", "deflate", "br"] {
        let points: Vec<usize> = if enc == "identity" {
            (0..=len).collect()
        } else {
            (0..12).map(|i| i * 7 + 1).collect()
        };
        for split in points {
            let r = client
                .get(
                    "www.example.com:8443",
                    &format!("/links?page=edge&enc={enc}&split={split}"),
                )
                .await;
            assert_eq!(r.status, 200);
            assert_eq!(
                r.header("location"),
                Some("http://www.example.com:8443/next"),
                "the Location header"
            );
            let body = decode(r.header("content-encoding"), &r.body);
            assert_eq!(
                String::from_utf8_lossy(&body),
                expected,
                "{enc}, split at {split}"
            );
        }
    }
}

#[tokio::test]
async fn link_translation_of_headers_and_scheme_and_opt_out() {
    let a = Backend::start("a").await;
    let proxy = Proxy::start(&weighted_config(&even(&[&a]), "", INTERNAL, "")).await;
    let mut client = Client::connect(proxy.addr).await;
    let r = client.get("www.example.com:8443", "/moved").await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some("http://www.example.com:8443/login?next=%2F")
    );
    let cookie = r.header("set-cookie").unwrap();
    assert!(cookie.contains("Domain=www.example.com;"), "{cookie}");

    // A rule that opts out passes bodies through untouched.
    let off = Proxy::start(&weighted_config(
        &even(&[&a]),
        "",
        &format!("{INTERNAL}\ntranslate_links = false"),
        "",
    ))
    .await;
    let r = get_once(off.addr, "www.example.com", "/links?split=5").await;
    assert_eq!(r.text(), links_page("a"));
    assert_eq!(r.header("etag"), Some("\"v1\""));
    // Content types outside the list pass through untouched.
    let r = client.get("www.example.com", "/download?size=100").await;
    assert_eq!(r.body.len(), 100);
    assert_eq!(r.header("content-length"), Some("100"));
}

#[tokio::test]
async fn configured_link_mappings_apply_beside_the_internal_name() {
    let a = Backend::start("a").await;
    let proxy = Proxy::start(&weighted_config(
        &even(&[&a]),
        "",
        "link_mappings = { \"<h1>\" = \"<h1 class=x>\" }",
        "",
    ))
    .await;
    let r = get_once(proxy.addr, "www.example.com", "/links?split=3").await;
    assert!(
        r.text().starts_with("<html><body><h1 class=x>a</h1>"),
        "{}",
        r.text()
    );
    // No internal site name: internal links stay as they are.
    assert!(r.text().contains("http://intranet.test/item/0"));
}

/// A probe result as the health checker hands it to the evaluation chain.
fn probe(
    farm: &str,
    status: Option<u16>,
    body: &str,
    latency_ms: u64,
) -> std::sync::Arc<farmgate::plugins::ProbeResult> {
    std::sync::Arc::new(farmgate::plugins::ProbeResult {
        farm: farm.into(),
        member: "a".into(),
        url: "http://a/status.htm".into(),
        status,
        headers: http::HeaderMap::new(),
        body_prefix: body.as_bytes().to_vec(),
        latency_us: latency_ms * 1000,
        error: status.is_none().then(|| "connection refused".to_string()),
    })
}

#[tokio::test]
async fn health_evaluation_judges_status_ranges_content_and_time() {
    use farmgate::plugins::{HealthVerdict, Hook};
    let a = Backend::start("a").await;
    let config = weighted_config(&even(&[&a]), "", "", "").replace(
        "[[farms]]\nname = \"farm\"",
        "[[farms]]\nname = \"strict\"\nmembers = [{ host = \"127.0.0.1\" }]\n[farms.health]\nstatuses = \"200, 301-302\"\ncontent_match = \"OK\"\nresponse_time_threshold = \"800ms\"\n[[farms]]\nname = \"farm\"",
    );
    let proxy = Proxy::start(&config).await;
    let rt = proxy.running().proxy.plugins.clone();
    let health = rt
        .builtin(Hook::HealthEvaluation)
        .expect("the built-in evaluator");
    let verdict = |p| {
        let rt = rt.clone();
        let health = health.clone();
        async move { rt.evaluate_health(&health, &p).await.expect("evaluates") }
    };
    // The default farm: ARR's 200-399, 5000 ms.
    assert!(matches!(
        verdict(probe("farm", Some(200), "", 10)).await,
        HealthVerdict::Healthy
    ));
    assert!(matches!(
        verdict(probe("farm", Some(399), "", 10)).await,
        HealthVerdict::Healthy
    ));
    let HealthVerdict::Unhealthy(why) = verdict(probe("farm", Some(500), "", 10)).await else {
        panic!("500 is unhealthy");
    };
    assert!(why.contains("500") && why.contains("200-399"), "{why}");
    let HealthVerdict::Unhealthy(why) = verdict(probe("farm", Some(200), "", 6000)).await else {
        panic!("too slow is unhealthy");
    };
    assert!(why.contains("5000"), "{why}");
    let HealthVerdict::Unhealthy(why) = verdict(probe("farm", None, "", 0)).await else {
        panic!("no response is unhealthy");
    };
    assert!(why.contains("refused"), "{why}");
    // The strict farm: a list with a range, a content match, a tighter threshold.
    assert!(matches!(
        verdict(probe("strict", Some(302), "all OK", 10)).await,
        HealthVerdict::Healthy
    ));
    for (status, body, ms) in [
        (303, "OK", 10),
        (200, "fine", 10),
        (200, "OK", 900),
        (204, "OK", 1),
    ] {
        assert!(
            matches!(
                verdict(probe("strict", Some(status), body, ms)).await,
                HealthVerdict::Unhealthy(_)
            ),
            "{status} {body:?} {ms} ms"
        );
    }
}
