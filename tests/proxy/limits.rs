//! Limits on clients through the real proxy, over raw TCP where a well-behaved client could not
//! break them: a head that never finishes, too many or too large headers (431), a body over the
//! rule's limit (413, by Content-Length and while streaming), and the connection cap.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Reads until the peer closes (or PATIENCE runs out, failing the test); returns what came.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    bounded(
        "the proxy closes the connection",
        stream.read_to_end(&mut out),
    )
    .await
    .ok();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_head_that_never_ends_is_cut_off() {
    let a = Backend::start("a").await;
    let proxy = Proxy::start(&simple_config(&[&a], "", "header_read_timeout = \"200ms\"")).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: www.example.com\r\nX-Slow: 1\r\n")
        .await
        .unwrap();
    let got = read_to_close(&mut s).await;
    assert!(!got.contains("200 OK"), "{got}");
    assert_eq!(a.requests(), 0);
    // A client that connects and sends nothing is cut off the same way.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    assert_eq!(read_to_close(&mut s).await, "");
    // So is the second head on a keep-alive connection that never ends.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\nGET / HTTP/1.1\r\nHost: w")
        .await
        .unwrap();
    let got = read_to_close(&mut s).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert_eq!(got.matches("HTTP/1.1 ").count(), 1, "{got}");
    assert_eq!(a.requests(), 1);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_but_a_slow_head_or_answer_is_not() {
    // The member takes longer to answer than the connection may be idle.
    let slow = Backend::start_slow("slow", Duration::from_millis(800)).await;
    let proxy = Proxy::start(&simple_config(
        &[&slow],
        "",
        "header_read_timeout = \"10s\"\nclient_idle_timeout = \"300ms\"",
    ))
    .await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    // A head sent in pieces over longer than the idle limit is a slow head, not idleness (the
    // pauses make the slow client; nothing waits on them).
    for piece in [
        "GET / HTTP/1.1\r\n",
        "Host: www.example.com\r\n",
        "X-A: 1\r\n",
        "\r\n",
    ] {
        s.write_all(piece.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // The answer comes after 800 ms: the connection was busy, not idle. Then, idle, it is
    // closed (read_to_close fails the test if it is not).
    let got = read_to_close(&mut s).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert_eq!(got.matches("HTTP/1.1 ").count(), 1, "{got}");
}

#[tokio::test]
async fn too_many_or_too_large_headers_get_431() {
    let a = Backend::start("a").await;
    let proxy = Proxy::start(&simple_config(
        &[&a],
        "",
        "max_headers = 20\nmax_header_bytes = 8192",
    ))
    .await;
    let mut many = String::from("GET / HTTP/1.1\r\nHost: www.example.com\r\n");
    for i in 0..30 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let big = format!(
        "GET / HTTP/1.1\r\nHost: www.example.com\r\nX-Big: {}\r\n\r\n",
        "b".repeat(10_000)
    );
    for req in [many, big] {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let got = read_to_close(&mut s).await;
        assert!(got.starts_with("HTTP/1.1 431"), "{got}");
    }
    assert_eq!(a.requests(), 0);
    let ok = get_once(proxy.addr, "www.example.com", "/").await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn bodies_over_the_rules_limit_get_413() {
    let a = Backend::start("a").await;
    let proxy = Proxy::start(&simple_config(&[&a], "max_body_bytes = 1000", "")).await;
    // Announced too large: refused before anything reaches the member.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: 5000\r\n\r\n")
        .await
        .unwrap();
    let got = read_to_close(&mut s).await;
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    assert_eq!(a.requests(), 0);
    // Streamed: cut off when it passes the limit.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let mut req =
        b"POST /upload HTTP/1.1\r\nHost: www.example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for _ in 0..4 {
        req.extend_from_slice(format!("{:x}\r\n{}\r\n", 400, "x".repeat(400)).as_bytes());
    }
    req.extend_from_slice(b"0\r\n\r\n");
    s.write_all(&req).await.unwrap();
    let got = read_to_close(&mut s).await;
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    // Within the limit: forwarded whole.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789")
        .await
        .unwrap();
    let got = read_to_close(&mut s).await;
    assert!(
        got.starts_with("HTTP/1.1 200") && got.ends_with(" 10"),
        "{got}"
    );
}

#[tokio::test]
async fn at_the_connection_cap_the_next_client_waits_for_a_free_slot() {
    let a = Backend::start("a").await;
    let proxy = Proxy::start(&simple_config(&[&a], "", "max_connections = 1")).await;
    let mut first = Client::connect(proxy.addr).await;
    assert_eq!(first.get("www.example.com", "/").await.status, 200);
    let addr = proxy.addr;
    let second = tokio::spawn(async move { get_once(addr, "www.example.com", "/").await });
    // While the first connection stays open, the second is not served (a bounded look).
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    while tokio::time::Instant::now() < deadline {
        assert_eq!(
            a.requests(),
            1,
            "a second connection was served over the cap"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(first);
    let answer = bounded("the second client is served", second)
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
}
