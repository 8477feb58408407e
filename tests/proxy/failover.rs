//! Affinity failover before the farm notices: a client pinned to a member that refuses
//! connections lands, every time, on the next member in its own order, and a cookie client is
//! pinned to it; the refused member gets no new work for a while. The farm's verifier and live
//! traffic test are at their defaults (none, off), so nothing else notices the member is gone.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// A GET over a new connection from `from`, read whole (the proxy closes it): the status
/// line, the member that answered (`x-backend`) and the `Set-Cookie` value, if any.
async fn get_from(
    from: IpAddr,
    proxy: SocketAddr,
    cookie: Option<&str>,
) -> (String, String, Option<String>) {
    bounded("a request", async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from, 0)).unwrap();
        let mut s = socket.connect(proxy).await.unwrap();
        let cookie = cookie
            .map(|c| format!("Cookie: {c}\r\n"))
            .unwrap_or_default();
        s.write_all(
            format!("GET / HTTP/1.1\r\nHost: www.example.com\r\n{cookie}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        let head = text
            .split("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .to_string();
        let header = |name: &str| {
            head.lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
        };
        let status = head.lines().next().unwrap_or_default().to_string();
        (
            status,
            header("x-backend").unwrap_or_default(),
            header("set-cookie"),
        )
    })
    .await
}

/// The `name=token` part of a member's affinity Set-Cookie.
fn cookie_of(proxy: &Proxy, member: &str) -> String {
    let m = proxy.farm("farm").member(member).expect("member");
    let value = m.affinity.set_cookie[0].to_str().unwrap().to_string();
    value.split(';').next().unwrap().to_string()
}

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[tokio::test]
async fn a_cookie_client_whose_member_refuses_is_pinned_to_one_next_member_at_once() {
    let web1 = Backend::start("web1").await;
    let web2 = Backend::start("web2").await;
    let web3 = Backend::start("web3").await;
    let config = simple_config(&[&web1, &web2, &web3], "", "")
        .replace("name = \"farm\"", "name = \"farm\"\naffinity = \"cookie\"");
    let proxy = Proxy::start(&config).await;
    let pinned = cookie_of(&proxy, "web1");
    let (status, served, _) = get_from(LOCAL, proxy.addr, Some(&pinned)).await;
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(served, "web1");

    drop(web1);
    let (status, first, set_cookie) = get_from(LOCAL, proxy.addr, Some(&pinned)).await;
    assert!(status.contains(" 200 "), "{status}");
    assert_ne!(first, "web1");
    // Pinned to the member that served it.
    let new_cookie = cookie_of(&proxy, &first);
    assert!(
        set_cookie
            .as_deref()
            .is_some_and(|c| c.starts_with(&new_cookie)),
        "{set_cookie:?} should pin to {first}"
    );
    // The refused member takes no new work for now: neither this client's nor new sessions.
    let web1_member = proxy.farm("farm").member("web1").unwrap();
    assert!(web1_member.held_off(), "a refused member is held off");
    // A client still sending the old cookie lands on the same member every time.
    for _ in 0..5 {
        let (status, served, set_cookie) = get_from(LOCAL, proxy.addr, Some(&pinned)).await;
        assert!(status.contains(" 200 "), "{status}");
        assert_eq!(served, first);
        assert!(set_cookie.is_some_and(|c| c.starts_with(&new_cookie)));
    }
    // With its new cookie it stays there, and nothing more to write.
    let (_, served, set_cookie) = get_from(LOCAL, proxy.addr, Some(&new_cookie)).await;
    assert_eq!(served, first);
    assert_eq!(set_cookie, None);
}

#[tokio::test]
async fn a_client_ip_client_whose_member_refuses_lands_on_one_next_member() {
    let web1 = Backend::start("web1").await;
    let web2 = Backend::start("web2").await;
    let web3 = Backend::start("web3").await;
    let config = simple_config(&[&web1, &web2, &web3], "", "").replace(
        "name = \"farm\"",
        "name = \"farm\"\naffinity = \"client-ip\"",
    );
    let proxy = Proxy::start(&config).await;
    // Clients (by their loopback address) that the hash sends to web1.
    let mut on_web1 = Vec::new();
    for n in 2..60u8 {
        let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, n));
        let (status, served, _) = get_from(from, proxy.addr, None).await;
        assert!(status.contains(" 200 "), "{status}");
        if served == "web1" {
            on_web1.push(from);
        }
    }
    assert!(on_web1.len() >= 3, "{on_web1:?}");

    drop(web1);
    for from in on_web1 {
        let (status, first, _) = get_from(from, proxy.addr, None).await;
        assert!(status.contains(" 200 "), "{from}: {status}");
        assert_ne!(first, "web1");
        for _ in 0..3 {
            let (_, served, _) = get_from(from, proxy.addr, None).await;
            assert_eq!(served, first, "{from} moved twice");
        }
    }
}
