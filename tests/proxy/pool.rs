//! The upstream pool: keyed by resolved address, shared by every farm.

use crate::support::*;

/// Three farms name one backend by three different names (TMG's failure: it keyed connections by
/// name and churned them). Through all three, the backend sees only as many connections as the
/// client concurrency.
#[tokio::test]
async fn farms_naming_one_server_differently_share_connections() {
    let backend = Backend::start("shared").await;
    let port = backend.port();
    let config = format!(
        r#"
[access_log]
format = "off"
[hosts]
"app.internal" = "127.0.0.1"
"app-alias.internal" = "127.0.0.1"
"legacy-name.internal" = "127.0.0.1"
[[listeners]]
name = "web"
bind = "127.0.0.1:0"
[[rules]]
name = "a"
public_names = ["a.example"]
farm = "fa"
[[rules]]
name = "b"
public_names = ["b.example"]
farm = "fb"
[[rules]]
name = "c"
public_names = ["c.example"]
farm = "fc"
[[farms]]
name = "fa"
members = [{{ host = "app.internal", port = {port} }}]
[[farms]]
name = "fb"
members = [{{ host = "app-alias.internal", port = {port} }}]
[[farms]]
name = "fc"
members = [{{ host = "legacy-name.internal", port = {port} }}]
"#
    );
    let proxy = Proxy::start(&config).await;

    // Sequential keep-alive requests, cycling through the three farms.
    let mut client = Client::connect(proxy.addr).await;
    for i in 0..90 {
        let host = ["a.example", "b.example", "c.example"][i % 3];
        let a = client.get(host, "/").await;
        assert_eq!(a.status, 200);
    }
    assert_eq!(backend.requests(), 90);
    assert_eq!(
        backend
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    let stats = proxy
        .running()
        .proxy
        .pool
        .stats_for(backend.addr)
        .expect("one pool key");
    assert_eq!((stats.opened, stats.reused), (1, 89), "{stats:?}");
    assert_eq!(proxy.running().proxy.pool.stats().len(), 1);

    // Four concurrent clients, each sequential: at most four connections in all.
    let mut tasks = Vec::new();
    for c in 0..4 {
        let addr = proxy.addr;
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await;
            for i in 0..30 {
                let host = ["a.example", "b.example", "c.example"][(i + c) % 3];
                assert_eq!(client.get(host, "/").await.status, 200);
            }
        }));
    }
    for t in tasks {
        bounded("client task", t).await.unwrap();
    }
    assert_eq!(backend.requests(), 210);
    let conns = backend
        .connections
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        conns <= 4,
        "backend accepted {conns} connections for 4 concurrent clients"
    );
}

/// A member that closes its keep-alive connections does not cause client-visible errors.
#[tokio::test]
async fn closed_idle_connections_are_not_reused() {
    let backend = Backend::start("b").await;
    let proxy = Proxy::start(&simple_config(
        &[&backend],
        "",
        "pool_idle_timeout = \"1h\"",
    ))
    .await;
    let mut client = Client::connect(proxy.addr).await;
    assert_eq!(client.get("h", "/").await.status, 200);
    // Restart the backend on the same port: the pooled connection is now dead.
    let addr = backend.addr;
    drop(backend);
    let _restarted = Backend::start_on(addr, "b2").await;
    for _ in 0..5 {
        let a = client.get("h", "/").await;
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(a.text(), "b2");
    }
}

/// A member that answers one request per connection with keep-alive, then closes the
/// connection when the next request arrives, without answering: a member whose keep-alive
/// timer ran out just as the proxy reused the connection. Returns its port and how many
/// connections it accepted.
async fn one_answer_per_connection_member() -> (
    u16,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&accepted);
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                // The next request is read and dropped with the connection.
                let _ = s.read(&mut buf).await;
            });
        }
    });
    (port, accepted, task)
}

#[tokio::test]
async fn a_stale_pooled_connection_never_fails_an_idempotent_request() {
    let (port, accepted, member) = one_answer_per_connection_member().await;
    let config = simple_config(&[], "", "").replace(
        "members = []",
        &format!("members = [{{ host = \"127.0.0.1\", port = {port} }}]"),
    );
    let proxy = Proxy::start(&config).await;
    let mut client = Client::connect(proxy.addr).await;
    for method in [
        "GET", "HEAD", "GET", "OPTIONS", "GET", "DELETE", "PUT", "GET",
    ] {
        let req = http::Request::builder()
            .method(method)
            .uri("/")
            .header("host", "www.example.com")
            .body(empty())
            .unwrap();
        let a = client.request(req).await;
        assert_eq!(a.status, 200, "{method}: {}", a.text());
    }
    // Every request after the first met a stale connection first, and went on a new one.
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 8);
    let member_failures: u64 = proxy
        .farm("farm")
        .members()
        .iter()
        .map(|m| m.stats.failures.load(std::sync::atomic::Ordering::SeqCst))
        .sum();
    assert_eq!(
        member_failures, 0,
        "a stale connection is not the member's failure"
    );
    member.abort();
}
