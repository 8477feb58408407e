//! Forwarding through the real proxy to real backends: spread, streaming bodies, header
//! rewriting, and the failure statuses.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use farmgate::farm::MemberState;
use http::Request;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

#[tokio::test]
async fn sequential_requests_are_spread_evenly_over_members() {
    let backends = [
        Backend::start("b1").await,
        Backend::start("b2").await,
        Backend::start("b3").await,
    ];
    let refs: Vec<&Backend> = backends.iter().collect();
    let proxy = Proxy::start(&simple_config(&refs, "", "")).await;
    let mut client = Client::connect(proxy.addr).await;
    for _ in 0..30 {
        let a = client.get("www.example.com", "/").await;
        assert_eq!(a.status, 200);
    }
    // Least current request with equal load: ties rotate, so each member takes a third.
    for b in &backends {
        assert_eq!(b.requests(), 10, "{} got {}", b.name, b.requests());
    }
}

#[tokio::test]
async fn busy_members_get_fewer_requests() {
    let backends = [Backend::start("b1").await, Backend::start("b2").await];
    let refs: Vec<&Backend> = backends.iter().collect();
    let proxy = Proxy::start(&simple_config(&refs, "", "")).await;
    // Park one request on whichever member takes it: that member now has one in flight.
    let addr = proxy.addr;
    let held = tokio::spawn(async move { get_once(addr, "h", "/hold").await });
    eventually("a member holds a request", || {
        backends.iter().any(|b| b.requests() == 1)
    })
    .await;
    let busy = backends.iter().position(|b| b.requests() == 1).unwrap();
    let idle = 1 - busy;
    let mut client = Client::connect(proxy.addr).await;
    for _ in 0..10 {
        assert_eq!(client.get("h", "/").await.status, 200);
    }
    assert_eq!(
        backends[busy].requests(),
        1,
        "the busy member got new requests"
    );
    assert_eq!(backends[idle].requests(), 10);
    backends[busy].open_gate();
    assert_eq!(
        bounded("held request", held).await.unwrap().text(),
        "released"
    );
}

#[tokio::test]
async fn large_upload_and_download_arrive_intact() {
    let backend = Backend::start("b").await;
    let proxy = Proxy::start(&simple_config(&[&backend], "", "")).await;
    let mut client = Client::connect(proxy.addr).await;

    const SIZE: u64 = 8 * 1024 * 1024 + 123;
    let expected = sha256_hex(&PatternBody::bytes(SIZE));

    let upload = Request::post("/upload")
        .header("host", "h")
        .header("content-length", SIZE)
        .body(PatternBody::new(SIZE, 64 * 1024).boxed())
        .unwrap();
    let a = client.request(upload).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.text(), format!("{expected} {SIZE}"));

    // Chunked upload (no Content-Length) too.
    let upload = Request::post("/upload")
        .header("host", "h")
        .body(PatternBody::new(SIZE, 50_000).without_length().boxed())
        .unwrap();
    let a = client.request(upload).await;
    assert_eq!(a.text(), format!("{expected} {SIZE}"));

    let a = client.get("h", &format!("/download?size={SIZE}")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body.len() as u64, SIZE);
    assert_eq!(sha256_hex(&a.body), expected);
}

#[tokio::test]
async fn response_bodies_stream_before_they_end() {
    let backend = Backend::start("b").await;
    let proxy = Proxy::start(&simple_config(&[&backend], "", "")).await;
    let mut client = Client::connect(proxy.addr).await;
    let resp = client.send(get("h", "/gated")).await;
    let mut body = resp.into_body();
    // The backend sends "second" only after the gate opens, which happens only after the first
    // part reached the client: a proxy that buffered the whole body would never deliver it.
    let first = bounded("first part", body.frame()).await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"first"));
    backend.open_gate();
    let rest = bounded("rest", body.collect()).await.unwrap().to_bytes();
    assert_eq!(rest, Bytes::from_static(b"second"));
}

#[tokio::test]
async fn request_bodies_stream_before_they_end() {
    let backend = Backend::start("b").await;
    let proxy = Proxy::start(&simple_config(&[&backend], "", "")).await;
    // A raw chunked upload: the second chunk is written only once the backend has the first.
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"POST /upload-gated HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        .await
        .unwrap();
    bounded(
        "backend receives the first chunk",
        backend.first_chunk.notified(),
    )
    .await;
    tcp.write_all(b"6\r\nsecond\r\n0\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = String::new();
    let expected = format!("{} 11", sha256_hex(b"firstsecond"));
    while !got.contains(&expected) {
        let n = bounded("response", tcp.read(&mut buf)).await.unwrap();
        assert!(n > 0, "connection closed early: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
}

#[tokio::test]
async fn request_and_response_headers_are_rewritten() {
    let backend = Backend::start("b").await;
    let proxy = Proxy::start(&simple_config(
        &[&backend],
        "internal_site_name = \"intranet.contoso.local\"",
        "via = \"edge1\"",
    ))
    .await;
    let mut client = Client::connect(proxy.addr).await;
    let req = Request::get("/headers?x=1")
        .header("host", "www.contoso.com:8080")
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "keep-alive, X-Private")
        .header("x-private", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("te", "trailers")
        .header("x-end-to-end", "kept")
        .body(empty())
        .unwrap();
    let a = client.request(req).await;
    assert_eq!(a.status, 200);

    let seen = backend.last_seen();
    let h = |n: &str| seen.headers.get(n).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        (seen.method.as_str(), seen.uri.as_str()),
        ("GET", "/headers?x=1")
    );
    assert_eq!(h("host").as_deref(), Some("intranet.contoso.local"));
    assert_eq!(
        h("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(h("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        h("x-forwarded-host").as_deref(),
        Some("www.contoso.com:8080")
    );
    assert_eq!(
        h("forwarded").as_deref(),
        Some("for=127.0.0.1;host=\"www.contoso.com:8080\";proto=http")
    );
    assert_eq!(h("via").as_deref(), Some("1.1 edge1"));
    assert_eq!(h("x-end-to-end").as_deref(), Some("kept"));
    for gone in ["x-private", "keep-alive", "proxy-connection", "te"] {
        assert_eq!(h(gone), None, "{gone} was forwarded");
    }
    // `Connection` towards the member is hyper's own keep-alive framing, never the client's.
    assert!(h("connection").is_none_or(|c| !c.to_ascii_lowercase().contains("x-private")));

    assert_eq!(a.header("x-backend-private"), None);
    assert_eq!(a.header("keep-alive"), None);
    assert_eq!(a.header("via"), Some("1.1 edge1"));
    assert_eq!(a.header("x-backend"), Some("b"));
}

#[tokio::test]
async fn host_header_follows_the_rule() {
    let backend = Backend::start("b").await;
    let proxy = Proxy::start(&simple_config(&[&backend], "preserve_host = true", "")).await;
    get_once(proxy.addr, "public.example:8080", "/").await;
    assert_eq!(backend.last_seen().headers["host"], "public.example:8080");

    // Neither an internal site name nor preserve_host: the member's own name and port.
    let proxy = Proxy::start(&simple_config(&[&backend], "", "")).await;
    get_once(proxy.addr, "public.example", "/").await;
    assert_eq!(
        backend.last_seen().headers["host"],
        format!("127.0.0.1:{}", backend.port()).as_str()
    );
}

#[tokio::test]
async fn no_matching_rule_is_404() {
    let backend = Backend::start("b").await;
    let config = simple_config(&[&backend], "", "").replace(
        "public_names = [\"*\"]",
        "public_names = [\"www.example.com\"]",
    );
    let proxy = Proxy::start(&config).await;
    let a = get_once(proxy.addr, "other.example.com", "/").await;
    assert_eq!(a.status, 404);
    assert_eq!(backend.requests(), 0);
    assert_eq!(
        get_once(proxy.addr, "WWW.example.com:80", "/").await.status,
        200
    );
}

#[tokio::test]
async fn farm_without_available_member_is_503_naming_the_farm() {
    let backend = Backend::start("b").await;
    let proxy = Proxy::start(&simple_config(&[&backend], "", "retry_after = \"7s\"")).await;
    proxy.farm("farm").members()[0].set_state(MemberState::OutOfService);
    let a = get_once(proxy.addr, "h", "/").await;
    assert_eq!(a.status, 503);
    assert_eq!(a.header("retry-after"), Some("7"));
    let body = a.text();
    assert!(body.contains("farm \"farm\""), "{body}");
    assert!(body.contains("1 out of service"), "{body}");
    assert_eq!(backend.requests(), 0);
}

#[tokio::test]
async fn refused_connections_go_to_another_member_then_502() {
    let live = Backend::start("live").await;
    let dead_port = closed_port().await;
    let config = simple_config(&[&live], "", "").replace(
        "members = [",
        &format!("members = [{{ name = \"dead\", host = \"127.0.0.1\", port = {dead_port} }}, "),
    );
    let proxy = Proxy::start(&config).await;
    let mut client = Client::connect(proxy.addr).await;
    for _ in 0..6 {
        assert_eq!(client.get("h", "/").await.status, 200);
    }
    assert_eq!(live.requests(), 6);
    let dead = proxy
        .farm("farm")
        .members()
        .iter()
        .find(|m| m.name == "dead")
        .cloned()
        .unwrap();
    assert!(dead.stats.failures.load(Ordering::Relaxed) >= 1);

    // With every member refusing: 502.
    let config = simple_config(&[&live], "", "").replace(
        &format!("port = {}", live.port()),
        &format!("port = {dead_port}"),
    );
    let proxy = Proxy::start(&config).await;
    let a = get_once(proxy.addr, "h", "/").await;
    assert_eq!(a.status, 502);
    assert!(
        !a.text().contains("127.0.0.1"),
        "502 body leaks the member address: {}",
        a.text()
    );
}

#[tokio::test]
async fn a_name_with_several_addresses_uses_the_first_that_answers() {
    let backend = Backend::start("b").await;
    // 127.0.0.2 is loopback too, but nothing listens there on this port.
    let config = format!(
        "[hosts]\n\"multi.internal\" = [\"127.0.0.2\", \"127.0.0.1\"]\n{}",
        simple_config(&[&backend], "", "")
            .replace("host = \"127.0.0.1\"", "host = \"multi.internal\"")
    );
    let proxy = Proxy::start(&config).await;
    let a = get_once(proxy.addr, "h", "/").await;
    assert_eq!(a.status, 200);
    let stats = proxy.running().proxy.pool.stats();
    assert!(
        stats
            .iter()
            .any(|s| s.key.addr == backend.addr && s.opened == 1),
        "{stats:?}"
    );
}

#[tokio::test]
async fn slow_member_is_504() {
    let backend = Backend::start("b").await;
    let proxy = Proxy::start(&simple_config(
        &[&backend],
        "",
        "response_timeout = \"300ms\"",
    ))
    .await;
    let a = get_once(proxy.addr, "h", "/hold").await;
    assert_eq!(a.status, 504);
    assert_eq!(backend.requests(), 1);
}

#[tokio::test]
async fn http11_request_without_host_is_400() {
    let backend = Backend::start("b").await;
    let proxy = Proxy::start(&simple_config(&[&backend], "", "")).await;
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    bounded("response", tcp.read_to_end(&mut buf))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert_eq!(backend.requests(), 0);
}

/// A member that accepts connections, reads the request and hangs up without a response.
async fn hang_up_member() -> (u16, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
        }
    });
    (port, task)
}

#[tokio::test]
async fn idempotent_requests_a_member_drops_unanswered_go_to_another() {
    let good = Backend::start("good").await;
    let (bad_port, bad) = hang_up_member().await;
    let config = simple_config(&[&good], "", "").replace(
        "members = [",
        &format!("members = [{{ name = \"bad\", host = \"127.0.0.1\", port = {bad_port} }}, "),
    );
    let proxy = Proxy::start(&config).await;
    let mut client = Client::connect(proxy.addr).await;
    for _ in 0..10 {
        let a = client.get("www.example.com", "/").await;
        assert_eq!(
            (a.status.as_u16(), a.header("x-backend")),
            (200, Some("good"))
        );
    }
    let bad_member = proxy.farm("farm").member("bad").unwrap();
    assert!(bad_member.stats.failures.load(Ordering::SeqCst) >= 5);
    // A POST is not repeated: whoever gets it answers, or it fails.
    let mut statuses = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let req = Request::post("/")
            .header("host", "www.example.com")
            .body(empty())
            .unwrap();
        statuses.insert(client.request(req).await.status.as_u16());
    }
    assert!(statuses.contains(&502), "{statuses:?}");
    bad.abort();
}

/// A listening socket whose accept queue is full, so a new connection's SYN goes unanswered:
/// a member that never completes a connection. The socket and the connection filling the
/// queue are returned to be kept.
fn unanswering_member() -> (socket2::Socket, std::net::TcpStream) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    // A backlog of 0 queues one connection; it is never accepted.
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let filler = std::net::TcpStream::connect(addr).unwrap();
    (socket, filler)
}

#[tokio::test]
async fn connect_timeout_gives_up_on_a_member_that_never_answers() {
    let (silent, _filler) = unanswering_member();
    let port = silent.local_addr().unwrap().as_socket().unwrap().port();
    let live = Backend::start("live").await;
    // Without the timeout the system's own (minutes) would apply, past the test's patience.
    let config = simple_config(&[&live], "", "connect_timeout = \"200ms\"").replace(
        &format!("port = {}", live.port()),
        &format!("port = {port}"),
    );
    let proxy = Proxy::start(&config).await;
    let a = get_once(proxy.addr, "h", "/").await;
    assert_eq!(a.status, 504, "{}", a.text());
    // A connection that never completes is the member's failure to connect.
    let member = &proxy.farm("farm").members()[0];
    assert!(
        member
            .stats
            .failures_of(farmgate::farm::FailureKind::Connect)
            >= 1
    );
    assert_eq!(live.requests(), 0);
}

#[tokio::test]
async fn a_name_with_several_addresses_is_tried_in_resolver_order() {
    // Two members on one port, on 127.0.0.1 and 127.0.0.2, named by one name.
    let first = Backend::start("on-1").await;
    let _second = Backend::start_on(
        format!("127.0.0.2:{}", first.port()).parse().unwrap(),
        "on-2",
    )
    .await;
    let config = |order: &str| {
        simple_config(&[&first], "", "")
            .replace(
                &format!("host = \"127.0.0.1\", port = {}", first.port()),
                &format!("host = \"multi.test\", port = {}", first.port()),
            )
            .replace(
                "[proxy]",
                &format!("[hosts]\n\"multi.test\" = {order}\n[proxy]"),
            )
    };
    for (order, expected) in [
        ("[\"127.0.0.2\", \"127.0.0.1\"]", "on-2"),
        ("[\"127.0.0.1\", \"127.0.0.2\"]", "on-1"),
    ] {
        let proxy = Proxy::start(&config(order)).await;
        let mut client = Client::connect(proxy.addr).await;
        for _ in 0..3 {
            let a = client.get("h", "/").await;
            assert_eq!(a.header("x-backend"), Some(expected), "{order}");
        }
        assert_eq!(proxy.farm("farm").members().len(), 1, "one member");
    }
}

#[tokio::test]
async fn a_name_that_stops_resolving_keeps_its_last_known_addresses() {
    let (logs, _guard) = crate::tls_support::Logs::capture();
    let a = Backend::start("a").await;
    let config = simple_config(&[&a], "", "resolve_interval = \"50ms\"")
        .replace(
            &format!("host = \"127.0.0.1\", port = {}", a.port()),
            &format!("host = \"a.farm.test\", port = {}", a.port()),
        )
        .replace(
            "[proxy]",
            "[hosts]\n\"a.farm.test\" = \"127.0.0.1\"\n[proxy]",
        );
    let proxy = Proxy::start(&config).await;
    let member = proxy.farm("farm").member("a").unwrap();
    let known = member.addrs().to_vec();
    assert_eq!(known, [a.addr]);
    // The name leaves the host table (and is unknown to the system resolver): the refresh fails
    // and the member keeps the addresses it had.
    proxy.running().resolver.set_hosts(HashMap::new());
    eventually("a refresh fails", || {
        logs.text()
            .contains("member name does not resolve; keeping its last known addresses")
    })
    .await;
    assert_eq!(member.addrs().to_vec(), known);
    let mut client = Client::connect(proxy.addr).await;
    assert_eq!(client.get("h", "/").await.header("x-backend"), Some("a"));
    // A name that resolves again to another address is followed there.
    let moved =
        Backend::start_on(format!("127.0.0.2:{}", a.port()).parse().unwrap(), "moved").await;
    proxy.running().resolver.set_hosts(HashMap::from([(
        "a.farm.test".to_string(),
        vec!["127.0.0.2".parse().unwrap()],
    )]));
    eventually("the refresh finds the new address", || {
        member.addrs().to_vec() == [moved.addr]
    })
    .await;
    let mut client = Client::connect(proxy.addr).await;
    assert_eq!(
        client.get("h", "/").await.header("x-backend"),
        Some("moved")
    );
}
