//! Request smuggling defences, table-driven over raw TCP: each case follows a well-formed
//! request on one connection and is followed by a request that would be smuggled if the
//! framing were read two ways. The client must get the first answer, then 400 and the
//! connection closed; the member must see neither the bad request (or not the whole of it) nor
//! the smuggled one.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const FIRST: &[u8] = b"GET /first HTTP/1.1\r\nHost: www.example.com\r\n\r\n";
const SMUGGLED: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: www.example.com\r\n\r\n";

/// Where the framing breaks: in the head (nothing of the request reaches the member) or in a
/// chunked body (the head went on, the body never completes).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Breaks {
    Head,
    Body,
}

const CASES: &[(&str, Breaks, &[u8])] = &[
    (
        "Content-Length then Transfer-Encoding",
        Breaks::Head,
        b"POST /upload HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "Transfer-Encoding then Content-Length",
        Breaks::Head,
        b"POST /upload HTTP/1.1\r\nHost: www.example.com\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    ),
    (
        "differing duplicate Content-Length",
        Breaks::Head,
        b"POST /upload HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: 5\r\nContent-Length: 0\r\n\r\nhello",
    ),
    (
        "Content-Length as a list",
        Breaks::Head,
        b"POST /upload HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: 0, 5\r\n\r\nhello",
    ),
    (
        "a coding other than chunked",
        Breaks::Head,
        b"POST /upload HTTP/1.1\r\nHost: www.example.com\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    ),
    (
        "Transfer-Encoding twice",
        Breaks::Head,
        b"POST /upload HTTP/1.1\r\nHost: www.example.com\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "obs-fold",
        Breaks::Head,
        b"GET /folded HTTP/1.1\r\nHost: www.example.com\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n\r\n",
    ),
    (
        "space before the colon",
        Breaks::Head,
        b"POST /upload HTTP/1.1\r\nHost: www.example.com\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "invalid header name",
        Breaks::Head,
        b"GET /named HTTP/1.1\r\nHost: www.example.com\r\nX[A]: 1\r\n\r\n",
    ),
    (
        "bare LF in the head",
        Breaks::Head,
        b"GET /lf HTTP/1.1\r\nHost: www.example.com\nContent-Length: 0\r\n\r\n",
    ),
    (
        "bare CR in a header value",
        Breaks::Head,
        b"GET /cr HTTP/1.1\r\nHost: www.example.com\r\nX-A: 1\rContent-Length: 5\r\n\r\n",
    ),
    (
        "bad chunk size",
        Breaks::Body,
        b"POST /upload HTTP/1.1\r\nHost: www.example.com\r\nTransfer-Encoding: chunked\r\n\r\n5x\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "chunk size overflowing 64 bits",
        Breaks::Body,
        b"POST /upload HTTP/1.1\r\nHost: www.example.com\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "chunk data longer than its size",
        Breaks::Body,
        b"POST /upload HTTP/1.1\r\nHost: www.example.com\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "bare LF after chunk data",
        Breaks::Body,
        b"POST /upload HTTP/1.1\r\nHost: www.example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n",
    ),
];

/// The chunk data of a broken chunked request that comes before its first framing error: what
/// the member may have read of it, at most.
fn valid_prefix(request: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(request);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let (size, rest) = body.split_once("\r\n").unwrap_or(("", ""));
    match usize::from_str_radix(size, 16) {
        Ok(n) if n <= rest.len() => rest.as_bytes()[..n].to_vec(),
        _ => Vec::new(),
    }
}

/// Sends `bytes` on a new connection and reads until the proxy closes it.
async fn exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    s.write_all(bytes).await.expect("send");
    let mut out = Vec::new();
    bounded("the proxy closes the connection", s.read_to_end(&mut out))
        .await
        .expect("read the answers");
    String::from_utf8_lossy(&out).into_owned()
}

/// `request` with `tag` (a query) after its target.
fn tagged(request: &[u8], tag: &str) -> Vec<u8> {
    let target_end = request
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b' ')
        .nth(1)
        .map_or(0, |(i, _)| i);
    [
        &request[..target_end],
        tag.as_bytes(),
        &request[target_end..],
    ]
    .concat()
}

/// The status codes of the responses in `raw`, in order.
fn statuses(raw: &str) -> Vec<u16> {
    raw.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| raw.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

#[tokio::test]
async fn ambiguous_framing_gets_400_and_is_never_forwarded() {
    let member = Backend::start("a").await;
    let proxy = Proxy::start(&simple_config(&[&member], "", "")).await;
    for (i, (name, breaks, case)) in CASES.iter().enumerate() {
        // Each case's requests carry its number, as a late arrival of an earlier case's
        // abandoned request must not be taken for this one's.
        let tag = format!("?case={i}");
        let mut bytes = tagged(FIRST, &tag);
        bytes.extend_from_slice(&tagged(case, &tag));
        bytes.extend_from_slice(SMUGGLED);
        let raw = exchange(proxy.addr, &bytes).await;
        assert_eq!(statuses(&raw), [200, 400], "{name}: {raw}");
        let seen = |member: &Backend| -> Vec<String> {
            member
                .seen
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.uri.contains("smuggled") || s.uri.ends_with(&tag))
                .map(|s| format!("{} {}", s.method, s.uri.split('?').next().unwrap_or("")))
                .collect()
        };
        match breaks {
            Breaks::Head => assert_eq!(seen(&member), ["GET /first"], "{name}"),
            // The head may have gone on before the body broke (whether it did is a race the
            // test does not depend on); the body never completes, the 400 is farmgate's, and
            // nothing after the bad byte reaches the member.
            Breaks::Body => {
                let seen = seen(&member);
                assert!(
                    seen == ["GET /first"] || seen == ["GET /first", "POST /upload"],
                    "{name}: {seen:?}"
                );
                // What the member read of the body, byte for byte: at most the data before
                // the break, and never a body that ended as its framing said (that would be a
                // complete request made of a truncated one).
                let valid = valid_prefix(case);
                if seen.len() == 2 {
                    eventually("the member's read of the broken body ends", || {
                        member
                            .uploads
                            .lock()
                            .unwrap()
                            .iter()
                            .any(|u| u.uri.ends_with(&tag))
                    })
                    .await;
                }
                for upload in member
                    .uploads
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|u| u.uri.ends_with(&tag))
                {
                    assert!(!upload.complete, "{name}: the member got a complete body");
                    assert!(
                        valid.starts_with(&upload.body),
                        "{name}: the member read {:?}",
                        String::from_utf8_lossy(&upload.body)
                    );
                }
            }
        }
    }
    // A bad body is the client's fault: the member is not counted as failing.
    let farm = proxy.farm("farm");
    let failures: u64 = farm
        .members()
        .iter()
        .map(|m| m.stats.failures.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    assert_eq!(failures, 0);
}

#[tokio::test]
async fn well_framed_requests_in_a_pipeline_all_pass() {
    let member = Backend::start("a").await;
    let proxy = Proxy::start(&simple_config(&[&member], "", "")).await;
    let mut bytes = FIRST.to_vec();
    bytes.extend_from_slice(
        b"POST /upload HTTP/1.1\r\nHost: www.example.com\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n",
    );
    bytes.extend_from_slice(
        b"\r\nPOST /upload HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    );
    bytes.extend_from_slice(
        b"GET /last HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n",
    );
    let raw = exchange(proxy.addr, &bytes).await;
    assert_eq!(statuses(&raw), [200, 200, 200, 200], "{raw}");
    let hello = sha256_hex(b"hello");
    assert_eq!(raw.matches(&hello).count(), 2, "{raw}");
}

#[tokio::test]
async fn after_a_refused_upgrade_the_connection_is_still_checked() {
    let member = Backend::start("a").await;
    let proxy = Proxy::start(&simple_config(&[&member], "", "")).await;
    // The member answers 200 to the upgrade request: the bytes after it are HTTP/1 again.
    let mut bytes =
        b"GET /chat HTTP/1.1\r\nHost: www.example.com\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
            .to_vec();
    bytes.extend_from_slice(CASES[0].2);
    bytes.extend_from_slice(SMUGGLED);
    let raw = exchange(proxy.addr, &bytes).await;
    assert_eq!(statuses(&raw), [200, 400], "{raw}");
    let seen: Vec<String> = member
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.uri.clone())
        .collect();
    assert_eq!(seen, ["/chat"]);
}

#[tokio::test]
async fn refused_requests_are_in_the_access_log_with_the_reason() {
    let member = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let config = simple_config(&[&member], "", "").replace(
        "format = \"off\"",
        &format!("format = \"json\"\npath = \"{}\"", log.display()),
    );
    let proxy = Proxy::start(&config).await;
    let mut bytes = b"GET /first HTTP/1.1\r\nHost: www.example.com\r\n\r\n".to_vec();
    bytes.extend_from_slice(CASES[0].2);
    let raw = exchange(proxy.addr, &bytes).await;
    assert_eq!(statuses(&raw), [200, 400], "{raw}");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually("two access log lines", || read().lines().count() == 2).await;
    let lines: Vec<serde_json::Value> = read()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The refusal is logged when judged, which may be before the answer before it ends.
    assert!(
        lines
            .iter()
            .any(|l| l["target"] == "/first" && l["status"] == 200)
    );
    let refused = lines
        .iter()
        .find(|l| l["status"] == 400)
        .expect("a line for the refused request");
    let reason = refused["refused"].as_str().unwrap_or_default();
    assert!(reason.contains("Transfer-Encoding"), "{refused}");
}
