//! Member health through the real proxy: HTTP, TCP and ping verifiers against real members,
//! consecutive thresholds, the live traffic test, minimum servers (panic mode), unable-to-verify
//! when a name stops resolving, and response-time alerts with a webhook. Intervals are short and
//! every wait is a bounded poll.

use std::collections::HashMap;
use std::time::Duration;

use farmgate::farm::MemberState;

use crate::support::*;

/// A farm `farm` of the backends under one rule, with `[farms.health]` lines `health`.
fn health_config(backends: &[&Backend], health: &str) -> String {
    simple_config(backends, "", "") + &format!("[farms.health]\n{health}\n")
}

/// Probes often, with a timeout long enough that a busy machine never fails a probe by it: with
/// one failure enough to take a member out (`down_after` 1), a slow probe would. The failures
/// these tests cause are refused connections and error statuses, which come at once.
const FAST_HTTP: &str =
    "check = \"http\"\nurl = \"http://*/health\"\ninterval = \"50ms\"\ntimeout = \"5s\"";

fn state_of(proxy: &Proxy, member: &str) -> MemberState {
    proxy.farm("farm").member(member).expect("member").state()
}

#[tokio::test]
async fn a_stopped_member_goes_out_of_service_and_returns_when_started() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let b_addr = b.addr;
    let proxy = Proxy::start(&health_config(&[&a, &b], FAST_HTTP)).await;
    eventually("b is probed", || {
        proxy
            .farm("farm")
            .member("b")
            .unwrap()
            .last_probe
            .load()
            .is_some()
    })
    .await;
    drop(b);
    eventually("b goes out of service", || {
        state_of(&proxy, "b") == MemberState::OutOfService
    })
    .await;
    let member = proxy.farm("farm").member("b").unwrap();
    assert!(
        member.reason().contains("failed 1 check"),
        "{}",
        member.reason()
    );
    let mut client = Client::connect(proxy.addr).await;
    let counts = spread(&mut client, 10, "/").await;
    assert_eq!(counts.get("a"), Some(&10), "{counts:?}");
    let b = Backend::start_on(b_addr, "b").await;
    eventually("b returns", || state_of(&proxy, "b") == MemberState::Active).await;
    let counts = spread(&mut client, 10, "/").await;
    assert!(counts.get("b").copied().unwrap_or(0) >= 4, "{counts:?}");
    drop(b);
}

#[tokio::test]
async fn thresholds_count_consecutive_results() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let proxy = Proxy::start(&health_config(
        &[&a, &b],
        &format!("{FAST_HTTP}\ndown_after = 3\nup_after = 2"),
    ))
    .await;
    let member = proxy.farm("farm").member("b").unwrap();
    let probes = || {
        member
            .stats
            .probes
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    b.set_healthy(false);
    eventually("b goes out of service", || {
        member.state() == MemberState::OutOfService
    })
    .await;
    assert!(
        member.reason().contains("failed 3 check(s) in a row"),
        "{}",
        member.reason()
    );
    assert!(member.reason().contains("503"), "{}", member.reason());
    let before = probes();
    b.set_healthy(true);
    eventually("b returns", || member.state() == MemberState::Active).await;
    assert!(probes() >= before + 2, "two passes are needed");
    assert!(
        member.reason().contains("passed 2 check(s)"),
        "{}",
        member.reason()
    );
}

#[tokio::test]
async fn live_traffic_failures_take_a_member_out_and_the_verifier_brings_it_back() {
    let a = Backend::start("a").await;
    let proxy = Proxy::start(&health_config(
        &[&a],
        "check = \"http\"\nurl = \"http://*/health\"\ninterval = \"200ms\"\nlive_max_failures = 3\nlive_failure_statuses = \"500-599\"\nlive_failover_period = \"1m\"",
    ))
    .await;
    let member = proxy.farm("farm").member("a").unwrap();
    let mut client = Client::connect(proxy.addr).await;
    for _ in 0..2 {
        let r = client.get("www.example.com", "/status?code=502").await;
        assert_eq!(r.status, 502);
    }
    assert_eq!(
        member.state(),
        MemberState::Active,
        "two failures are below the maximum"
    );
    let r = client.get("www.example.com", "/status?code=200").await;
    assert_eq!(r.status, 200);
    let r = client.get("www.example.com", "/status?code=500").await;
    assert_eq!(r.status, 500);
    assert_eq!(member.state(), MemberState::OutOfService);
    assert!(
        member.reason().contains("3 failures of live traffic"),
        "{}",
        member.reason()
    );
    let r = client.get("www.example.com", "/").await;
    assert_eq!(r.status, 503, "the only member is out");
    eventually("the verifier brings a back", || {
        member.state() == MemberState::Active
    })
    .await;
    let r = client.get("www.example.com", "/").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn below_minimum_servers_every_member_is_used_again() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let proxy = Proxy::start(&health_config(
        &[&a, &b, &c],
        &format!("{FAST_HTTP}\nmin_servers = 2"),
    ))
    .await;
    let farm = proxy.farm("farm");
    b.set_healthy(false);
    eventually("b goes out", || {
        state_of(&proxy, "b") == MemberState::OutOfService
    })
    .await;
    assert!(!farm.in_panic(), "two of three are still active");
    let mut client = Client::connect(proxy.addr).await;
    assert_eq!(spread(&mut client, 12, "/").await.get("b"), None);
    c.set_healthy(false);
    eventually("c goes out", || {
        state_of(&proxy, "c") == MemberState::OutOfService
    })
    .await;
    eventually("panic mode", || farm.in_panic()).await;
    let counts = spread(&mut client, 12, "/").await;
    for n in ["a", "b", "c"] {
        assert_eq!(
            counts.get(n),
            Some(&4),
            "all members serve in panic mode: {counts:?}"
        );
    }
    b.set_healthy(true);
    eventually("panic mode ends", || !farm.in_panic()).await;
    let counts = spread(&mut client, 12, "/").await;
    assert_eq!(counts.get("c"), None, "{counts:?}");
}

#[tokio::test]
async fn a_name_that_stops_resolving_is_unable_to_verify() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let config = health_config(&[&a, &b], FAST_HTTP)
        .replace(
            &format!("host = \"127.0.0.1\", port = {}", b.port()),
            &format!("host = \"b.farm.test\", port = {}", b.port()),
        )
        .replace(
            "[proxy]",
            "[hosts]\n\"b.farm.test\" = \"127.0.0.1\"\n[proxy]",
        );
    let proxy = Proxy::start(&config).await;
    let member = proxy.farm("farm").member("b").unwrap();
    eventually("b is probed healthy", || {
        member.last_probe.load().as_ref().is_some_and(|p| p.healthy)
    })
    .await;
    proxy.running().resolver.set_hosts(HashMap::new());
    eventually("b is unable to verify", || {
        member.state() == MemberState::UnableToVerify
    })
    .await;
    assert!(
        member.reason().contains("b.farm.test does not resolve"),
        "{}",
        member.reason()
    );
    let mut client = Client::connect(proxy.addr).await;
    assert_eq!(spread(&mut client, 6, "/").await.get("a"), Some(&6));
    proxy.running().resolver.set_hosts(HashMap::from([(
        "b.farm.test".to_string(),
        vec!["127.0.0.1".parse().unwrap()],
    )]));
    eventually("b verifies again", || member.state() == MemberState::Active).await;
}

#[tokio::test]
async fn tcp_checks_see_a_closed_port() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let closed = closed_port().await;
    let proxy = Proxy::start(&health_config(
        &[&a, &b],
        &format!("check = \"tcp\"\nport = {closed}\ninterval = \"50ms\"\ntimeout = \"5s\""),
    ))
    .await;
    eventually("a and b go out of service", || {
        state_of(&proxy, "a") == MemberState::OutOfService
            && state_of(&proxy, "b") == MemberState::OutOfService
    })
    .await;
    assert!(
        proxy
            .farm("farm")
            .member("a")
            .unwrap()
            .reason()
            .contains("TCP connect")
    );
    let open = Proxy::start(&health_config(
        &[&a],
        "check = \"tcp\"\ninterval = \"50ms\"",
    ))
    .await;
    let m = open.farm("farm").member("a").unwrap();
    eventually("a is probed", || m.last_probe.load().is_some()).await;
    assert!(m.last_probe.load().as_ref().is_some_and(|p| p.healthy));
    assert_eq!(m.state(), MemberState::Active);
}

#[tokio::test]
async fn ping_checks_run_or_say_which_sysctl_to_change() {
    let a = Backend::start("a").await;
    let config = farmgate::Config::parse(
        &health_config(&[&a], "check = \"ping\"\ninterval = \"50ms\""),
        "test.toml",
    )
    .unwrap();
    let allowed = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::ICMPV4),
    )
    .is_ok();
    match farmgate::start(config).await {
        Ok(running) => {
            assert!(allowed, "started although ICMP sockets are refused here");
            let farm = running.proxy.generation().farms[0].clone();
            let m = farm.member("a").unwrap();
            eventually("a is pinged", || m.last_probe.load().is_some()).await;
            assert!(m.last_probe.load().as_ref().is_some_and(|p| p.healthy));
            running.shutdown().await;
        }
        Err(e) => {
            assert!(!allowed, "refused although ICMP sockets are allowed: {e}");
            let text = e.to_string();
            assert!(text.contains("net.ipv4.ping_group_range"), "{text}");
        }
    }
}

#[tokio::test]
async fn a_slow_member_raises_an_alert_with_a_webhook() {
    let slow = Backend::start_slow("slow", Duration::from_millis(30)).await;
    let hook = Backend::start("hook").await;
    let proxy = Proxy::start(&health_config(
        &[&slow],
        &format!(
            "{FAST_HTTP}\nresponse_time_threshold = \"5ms\"\nalert_webhook = \"http://127.0.0.1:{}/alerts\"",
            hook.port()
        ),
    ))
    .await;
    let member = proxy.farm("farm").member("slow").unwrap();
    eventually("an alert is posted", || hook.requests() > 0).await;
    assert!(
        member
            .stats
            .alerts
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 1
    );
    let seen = hook.last_seen();
    assert_eq!(
        (seen.method.as_str(), seen.uri.as_str()),
        ("POST", "/alerts")
    );
    // The built-in evaluation judges the slow answer unhealthy, with the threshold as reason.
    eventually("slow goes out of service", || {
        member.state() == MemberState::OutOfService
    })
    .await;
    assert!(member.reason().contains("threshold"), "{}", member.reason());
}

#[tokio::test]
async fn a_live_traffic_take_out_restarts_the_count_of_passes() {
    let a = Backend::start("a").await;
    let proxy = Proxy::start(&health_config(
        &[&a],
        &format!(
            "{FAST_HTTP}\nup_after = 3\nlive_max_failures = 3\nlive_failure_statuses = \"500-599\"\nlive_failover_period = \"1m\""
        ),
    ))
    .await;
    let member = proxy.farm("farm").member("a").unwrap();
    let probes = || {
        member
            .stats
            .probes
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    // The status page answers 200 all along, so passes pile up beyond up_after first.
    eventually("five probes have passed", || probes() >= 5).await;
    let mut client = Client::connect(proxy.addr).await;
    for _ in 0..3 {
        let r = client.get("www.example.com", "/status?code=500").await;
        assert_eq!(r.status, 500);
    }
    assert_eq!(member.state(), MemberState::OutOfService);
    assert!(
        member.reason().contains("3 failures of live traffic"),
        "{}",
        member.reason()
    );
    let taken_out_at = probes();
    eventually("the verifier brings a back", || {
        member.state() == MemberState::Active
    })
    .await;
    assert!(
        member.reason().contains("passed 3 check(s) in a row"),
        "only passes after the take-out count: {}",
        member.reason()
    );
    assert!(
        probes() >= taken_out_at + 3,
        "back after {} probe(s); up_after is 3",
        probes() - taken_out_at
    );
}

#[tokio::test]
async fn names_for_one_server_share_one_probe() {
    let web = Backend::start("web").await;
    let port = web.port();
    let config = format!(
        r#"
[access_log]
format = "off"
[hosts]
"one.test" = "127.0.0.1"
"two.test" = "127.0.0.1"
"three.test" = "127.0.0.1"
[[listeners]]
name = "web"
bind = "127.0.0.1:0"
[[rules]]
name = "site"
public_names = ["*"]
farm = "farm"
[[farms]]
name = "farm"
members = [
  {{ name = "one.test", host = "one.test", port = {port} }},
  {{ name = "two.test", host = "two.test", port = {port} }},
  {{ name = "three.test", host = "three.test", port = {port} }},
]
[farms.health]
{FAST_HTTP}
"#
    );
    let proxy = Proxy::start(&config).await;
    let farm = proxy.farm("farm");
    let probes = |name: &str| {
        farm.member(name)
            .unwrap()
            .stats
            .probes
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    eventually("every name probed a few times", || {
        ["one.test", "two.test", "three.test"]
            .iter()
            .all(|n| probes(n) >= 4)
    })
    .await;
    let total: u64 = ["one.test", "two.test", "three.test"]
        .iter()
        .map(|n| probes(n))
        .sum();
    let hits = web
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.uri == "/health")
        .count() as u64;
    assert!(
        hits * 2 < total,
        "{hits} probes reached the server for {total} verdicts of its three names"
    );
    for name in ["one.test", "two.test", "three.test"] {
        assert_eq!(
            farm.member(name).unwrap().state(),
            MemberState::Active,
            "{name}"
        );
    }
}
