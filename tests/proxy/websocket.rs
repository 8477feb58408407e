//! WebSocket (and any `Upgrade`) pass-through: to the member affinity chose, over plain and TLS
//! listeners, closed when idle.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::Message;

use crate::support::*;
use crate::tls_support::*;

async fn next_text<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match bounded("websocket message", ws.next()).await {
        Some(Ok(Message::Text(t))) => t.to_string(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

#[tokio::test]
async fn websocket_echo_goes_to_the_member_the_affinity_cookie_names() {
    let web1 = Backend::start("web1").await;
    let web2 = Backend::start("web2").await;
    let config = simple_config(&[&web1, &web2], "", "")
        .replace("name = \"farm\"", "name = \"farm\"\naffinity = \"cookie\"");
    let proxy = Proxy::start(&config).await;

    // A first request pins the client to a member.
    let a = get_once(proxy.addr, "app.test", "/").await;
    let pinned = a.text();
    let cookie = a
        .header("set-cookie")
        .expect("an affinity cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();

    for _ in 0..3 {
        let mut req = "ws://app.test/ws".into_client_request().unwrap();
        req.headers_mut().insert("cookie", cookie.parse().unwrap());
        let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        let (mut ws, resp) = bounded(
            "websocket handshake",
            tokio_tungstenite::client_async(req, tcp),
        )
        .await
        .expect("handshake through the proxy");
        assert_eq!(resp.status(), 101);
        assert_eq!(resp.headers()["x-backend"], pinned.as_str());
        for word in ["hello", "world"] {
            ws.send(Message::text(word)).await.unwrap();
            assert_eq!(next_text(&mut ws).await, format!("{pinned}: {word}"));
        }
        let big = vec![7u8; 300_000];
        ws.send(Message::binary(big.clone())).await.unwrap();
        match bounded("binary echo", ws.next()).await {
            Some(Ok(Message::Binary(b))) => assert_eq!(&b[..], &big[..]),
            other => panic!("{other:?}"),
        }
        ws.close(None).await.unwrap();
    }
    let other = if pinned == "web1" { &web2 } else { &web1 };
    assert_eq!(
        other.requests(),
        0,
        "every upgrade went to the pinned member"
    );
    let seen = if pinned == "web1" { &web1 } else { &web2 }.last_seen();
    assert_eq!(seen.headers["upgrade"], "websocket");
}

#[tokio::test]
async fn websocket_over_tls_and_the_idle_timeout_closes_a_silent_tunnel() {
    let backend = Backend::start("web1").await;
    let ca = Ca::new("Test CA");
    let files = Files::new();
    let (cert, key) = files.pair("ws", &ca.issue(&["ws.test"]));
    let config = format!(
        r#"
[proxy]
upgrade_idle_timeout = "300ms"
[access_log]
format = "off"
[[listeners]]
name = "secure"
bind = "127.0.0.1:0"
[[listeners.certificates]]
cert = "{cert}"
key = "{key}"
[[rules]]
name = "site"
public_names = ["*"]
farm = "farm"
[[farms]]
name = "farm"
members = [{{ host = "127.0.0.1", port = {} }}]
"#,
        backend.port()
    );
    let proxy = Proxy::start(&config).await;
    let tls = tls_connect(proxy.addr, Some("ws.test"), &[b"http/1.1"]).await;
    let (mut ws, _) = bounded(
        "wss handshake",
        tokio_tungstenite::client_async("wss://ws.test/ws", tls),
    )
    .await
    .expect("handshake");
    // The tunnel's last byte passes after this instant, so the idle timeout ends it no earlier
    // than the configured time from here.
    let started = tokio::time::Instant::now();
    ws.send(Message::text("over tls")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "web1: over tls");
    assert_eq!(backend.last_seen().headers["x-forwarded-proto"], "https");

    // Silence: the proxy closes both sides after the idle timeout.
    bounded("tunnel closes when idle", async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        // Less the millisecond the tunnel's activity clock counts in.
        started.elapsed() >= Duration::from_millis(299),
        "{:?}",
        started.elapsed()
    );
}
