//! `Upgrade` requests judged by the rule's `upgrade_protocols`: `h2c` (the h2csmuggler tunnel)
//! and `HTTP2-Settings` never reach a member, other protocols off the list are served as plain
//! requests, and a member that switches protocols unasked gets no tunnel; on plain and TLS
//! listeners, with raw bytes against a member that answers 101 to anything that asks.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;
use crate::tls_support::*;

/// A member written in raw bytes: it answers `101 Switching Protocols` (then sends `TUNNEL`) to
/// every request with an `Upgrade` header, and to every request for `/always-101`; anything
/// else gets `200 plain`. It keeps each request head it read, lower-cased.
struct Switcher {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Switcher {
    async fn start() -> Switcher {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&heads);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    while let Some(head) = read_head(&mut conn).await {
                        let head = head.to_ascii_lowercase();
                        seen.lock().unwrap().push(head.clone());
                        let switch =
                            head.contains("\r\nupgrade:") || head.starts_with("get /always-101 ");
                        if switch {
                            let _ = conn
                                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nTUNNEL")
                                .await;
                            return;
                        }
                        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain";
                        if conn.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Switcher { port, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// One request head (through the blank line), or `None` at the end of the connection.
async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// One response read off a raw connection: its head, and the body by its Content-Length (none
/// for a 101: what follows is whatever the connection carries next).
async fn read_response<S: AsyncRead + Unpin>(s: &mut S) -> (String, String) {
    bounded("a response", async {
        let head = read_head(s).await.expect("a response head");
        let length = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        s.read_exact(&mut body).await.expect("the response body");
        (head, String::from_utf8_lossy(&body).into_owned())
    })
    .await
}

fn config(port: u16, listener_extra: &str, rule_extra: &str) -> String {
    format!(
        r#"
[access_log]
format = "off"
[[listeners]]
name = "front"
bind = "127.0.0.1:0"
{listener_extra}
[[rules]]
name = "site"
public_names = ["*"]
farm = "farm"
{rule_extra}
[[farms]]
name = "farm"
members = [{{ host = "127.0.0.1", port = {port} }}]
"#
    )
}

/// The requests and what must come of them, on one connection to the proxy.
async fn h2c_and_upgrades_are_judged<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    member: &Switcher,
) {
    let h2c_requests: [&[u8]; 3] = [
        b"GET /a HTTP/1.1\r\nHost: www.example.com\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        b"GET /b HTTP/1.1\r\nHost: www.example.com\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        b"GET /c HTTP/1.1\r\nHost: www.example.com\r\nConnection: upgrade\r\nUpgrade: H2C\r\n\r\n",
    ];
    for (i, req) in h2c_requests.iter().enumerate() {
        s.write_all(req).await.unwrap();
        // Served as a plain request, on a connection that stays HTTP/1.1.
        let (head, body) = read_response(s).await;
        assert!(head.starts_with("HTTP/1.1 200 "), "request {i}: {head}");
        assert_eq!(body, "plain", "request {i}");
        let seen = member.heads().pop().expect("the member saw the request");
        assert!(
            !seen.contains("upgrade"),
            "request {i} reached the member as {seen:?}"
        );
        assert!(!seen.contains("http2-settings"), "request {i}: {seen:?}");
    }
    // A member that switches protocols unasked gets no tunnel.
    s.write_all(b"GET /always-101 HTTP/1.1\r\nHost: www.example.com\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(s).await;
    assert!(head.starts_with("HTTP/1.1 502 "), "{head}");
}

#[tokio::test]
async fn h2c_upgrades_are_never_passed_on_plain_or_tls_listeners() {
    let member = Switcher::start().await;
    let proxy = Proxy::start(&config(member.port, "", "")).await;
    let mut plain = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    h2c_and_upgrades_are_judged(&mut plain, &member).await;

    let ca = Ca::new("Test CA");
    let files = Files::new();
    let (cert, key) = files.pair("a", &ca.issue(&["a.test"]));
    let certificates = format!("[[listeners.certificates]]\ncert = \"{cert}\"\nkey = \"{key}\"");
    let proxy = Proxy::start(&config(member.port, &certificates, "")).await;
    let mut tls = tls_connect(proxy.addr, Some("a.test"), &[b"http/1.1"]).await;
    h2c_and_upgrades_are_judged(&mut tls, &member).await;
}

#[tokio::test]
async fn only_the_rules_upgrade_protocols_are_passed() {
    let member = Switcher::start().await;
    // The default list: WebSocket passes, and the member's switch reaches the client.
    let proxy = Proxy::start(&config(member.port, "", "")).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: www.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let mut tunnel = [0u8; 6];
    bounded("tunnel bytes", s.read_exact(&mut tunnel))
        .await
        .unwrap();
    assert_eq!(&tunnel, b"TUNNEL");
    assert!(member.heads().pop().unwrap().contains("upgrade: websocket"));

    // A listed protocol passes, others in the same request are dropped; a request for only
    // unlisted ones goes as a plain request, and WebSocket off the list is refused (a
    // handshake makes no sense without its upgrade).
    let proxy = Proxy::start(&config(
        member.port,
        "",
        "upgrade_protocols = [\"Example-Proto\"]",
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: www.example.com\r\nConnection: Upgrade\r\nUpgrade: TLS/1.2\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(body, "plain");
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: www.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET /y HTTP/1.1\r\nHost: www.example.com\r\nConnection: Upgrade\r\nUpgrade: h2c, example-proto/2\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let seen = member.heads().pop().unwrap();
    assert!(
        seen.contains("\r\nupgrade: example-proto/2\r\n"),
        "{seen:?}"
    );
}

#[test]
fn upgrade_protocols_are_checked_with_file_and_line() {
    for (value, why) in [
        ("[\"h2c\"]", "h2c"),
        ("[\"web socket\"]", "not a protocol name"),
        ("\"websocket\"", "expected a sequence"),
    ] {
        let text = config(1, "", &format!("upgrade_protocols = {value}"));
        let err = farmgate::Config::parse(&text, "test.toml")
            .expect_err(value)
            .to_string();
        assert!(err.contains("test.toml:12"), "{value}: {err}");
        assert!(err.contains(why), "{value}: {err}");
    }
}
