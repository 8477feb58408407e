//! HTTPS: TLS listeners with SNI and reload, redirect and HSTS, HTTPS bridging with both of TMG's
//! ways to check a member's certificate, the TLS identity in the pool key, HTTP/2 on both sides.

use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::support::*;
use crate::tls_support::*;

/// A config with one TLS listener named `secure` and the given certificate entries (TOML), one
/// rule for any name, and one plain farm of `backend`.
fn tls_listener_config(backend: &Backend, certificates: &str, rule_extra: &str) -> String {
    format!(
        r#"
[access_log]
format = "off"
[[listeners]]
name = "secure"
bind = "127.0.0.1:0"
{certificates}
[[rules]]
name = "site"
public_names = ["*"]
farm = "farm"
{rule_extra}
[[farms]]
name = "farm"
members = [{{ name = "{}", host = "127.0.0.1", port = {} }}]
"#,
        backend.name,
        backend.port()
    )
}

fn cert_entry(paths: &(String, String), extra: &str) -> String {
    format!(
        "[[listeners.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n{extra}\n",
        paths.0, paths.1
    )
}

/// An HTTP/1.1 request over an established TLS connection.
async fn h1_over(
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> hyper::client::conn::http1::SendRequest<BoxBody> {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 over TLS");
    tokio::spawn(conn);
    sender
}

async fn answer(resp: http::Response<hyper::body::Incoming>) -> Answer {
    let (parts, body) = resp.into_parts();
    let body = bounded("body", body.collect()).await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

#[tokio::test]
async fn sni_picks_each_names_certificate_and_no_sni_gets_the_default() {
    let backend = Backend::start("m1").await;
    let ca = Ca::new("Test CA");
    let files = Files::new();
    let a = ca.issue(&["a.test"]);
    let b = ca.issue_with(&["b.test"], &rcgen::PKCS_ED25519);
    let c = ca.issue_with(&["c.test", "*.c.test"], &rcgen::PKCS_ECDSA_P384_SHA384);
    let w = ca.issue(&["anything.example"]);
    let certs = [
        cert_entry(&files.pair("a", &a), ""),
        cert_entry(&files.pair("b", &b), "default = true"),
        cert_entry(&files.pair("c", &c), ""),
        cert_entry(&files.pair("w", &w), "names = [\"*.wild.test\"]"),
    ]
    .concat();
    let proxy = Proxy::start(&tls_listener_config(&backend, &certs, "")).await;

    for (sni, want, what) in [
        (Some("a.test"), &a, "a.test"),
        (Some("B.TEST"), &b, "b.test, any case"),
        (Some("c.test"), &c, "c.test"),
        (Some("www.c.test"), &c, "a wildcard in the certificate"),
        (Some("x.wild.test"), &w, "a configured wildcard name"),
        (Some("unknown.test"), &b, "an unknown name gets the default"),
        (None, &b, "no SNI gets the default"),
    ] {
        let s = tls_connect(proxy.addr, sni, &[b"http/1.1"]).await;
        assert!(served(&s) == want.der, "{what}: wrong certificate");
    }

    // ALPN: h2 when the client offers it, http/1.1 otherwise; TLS 1.2 and 1.3 only.
    let s = tls_connect(proxy.addr, Some("a.test"), &[b"h2", b"http/1.1"]).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let s = tls_connect(proxy.addr, Some("a.test"), &[b"http/1.1"]).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert!(matches!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3 | rustls::ProtocolVersion::TLSv1_2)
    ));

    // Members learn that the client came over HTTPS.
    let mut sender = h1_over(s).await;
    let resp = bounded("answer", sender.send_request(get("a.test", "/")))
        .await
        .unwrap();
    let a = answer(resp).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.text(), "m1");
    let seen = backend.last_seen();
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert!(
        seen.headers["forwarded"]
            .to_str()
            .unwrap()
            .ends_with("proto=https"),
        "{:?}",
        seen.headers
    );
}

#[tokio::test]
async fn a_replaced_certificate_is_served_to_new_connections_and_a_bad_one_is_refused() {
    let (logs, _guard) = Logs::capture();
    let backend = Backend::start("m1").await;
    let ca = Ca::new("Test CA");
    let files = Files::new();
    let first = ca.issue(&["a.test"]);
    let paths = files.pair("a", &first);
    let proxy = Proxy::start(&tls_listener_config(&backend, &cert_entry(&paths, ""), "")).await;

    // A connection made before the change keeps working after it.
    let before = tls_connect(proxy.addr, Some("a.test"), &[b"http/1.1"]).await;
    assert!(served(&before) == first.der);
    let mut old_conn = h1_over(before).await;

    let second = ca.issue(&["a.test"]);
    files.replace("a.key", &second.key_pem);
    files.replace("a.crt", &second.cert_pem);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let s = tls_connect(proxy.addr, Some("a.test"), &[b"http/1.1"]).await;
        if served(&s) == second.der {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resp = bounded("old connection", old_conn.send_request(get("a.test", "/")))
        .await
        .expect("the connection made before the reload still works");
    assert_eq!(resp.status(), 200);

    // A key that does not belong to the certificate: refused, the second certificate stays.
    let stranger = ca.issue(&["a.test"]);
    let mark = logs.text().len();
    files.replace("a.key", &stranger.key_pem);
    eventually("the bad pair is reported", || {
        logs.text()[mark..].contains("certificates not reloaded")
    })
    .await;
    let after = logs.text()[mark..].to_string();
    assert!(
        after.contains("does not belong to the certificate"),
        "{after}"
    );
    let s = tls_connect(proxy.addr, Some("a.test"), &[b"http/1.1"]).await;
    assert!(
        served(&s) == second.der,
        "the previous certificate stays in use"
    );
}

#[tokio::test]
async fn bad_certificate_files_are_config_errors_naming_the_key() {
    let ca = Ca::new("Test CA");
    let files = Files::new();
    let a = ca.issue(&["a.test"]);
    let other = ca.issue(&["a.test"]);
    let (cert, _) = files.pair("a", &a);
    let (_, wrong_key) = files.pair("other", &other);
    let junk = files.write("junk.key", "not a key\n").display().to_string();
    let backend = Backend::start("m1").await;
    let parse = |c: &str, k: &str| {
        let text = tls_listener_config(
            &backend,
            &cert_entry(&(c.to_string(), k.to_string()), ""),
            "",
        );
        farmgate::Config::parse(&text, "t.toml").expect_err("refused")
    };
    let e = parse(&cert, &wrong_key);
    assert_eq!(e.key, "listeners[0].certificates[0].key");
    assert_eq!(e.line, 9, "{e}");
    assert!(
        e.message.contains("does not belong to the certificate"),
        "{e}"
    );
    let e = parse(&cert, &junk);
    assert!(e.message.contains("holds no private key"), "{e}");
    let e = parse("/nonexistent/a.crt", &junk);
    assert_eq!(e.key, "listeners[0].certificates[0].cert");
    assert!(e.message.contains("cannot read /nonexistent/a.crt"), "{e}");
    let e = parse(&junk, &wrong_key);
    assert!(e.message.contains("holds no certificate"), "{e}");
}

#[tokio::test]
async fn plain_http_is_redirected_to_https_and_https_gets_hsts() {
    let backend = Backend::start("m1").await;
    let ca = Ca::new("Test CA");
    let files = Files::new();
    let cert = ca.issue(&["www.test"]);
    let paths = files.pair("www", &cert);
    let config = format!(
        r#"
[access_log]
format = "off"
[[listeners]]
name = "web"
bind = "127.0.0.1:0"
[[listeners]]
name = "secure"
bind = "127.0.0.1:0"
{}
[[rules]]
name = "site"
public_names = ["www.test"]
farm = "farm"
redirect_to_https = true
https_port = 8443
hsts = true
hsts_max_age = "1h"
[[rules]]
name = "open"
public_names = ["open.test"]
farm = "farm"
[[farms]]
name = "farm"
members = [{{ name = "m1", host = "127.0.0.1", port = {} }}]
"#,
        cert_entry(&paths, ""),
        backend.port()
    );
    let proxy = Proxy::start(&config).await;
    let plain = proxy.running().addr("web").unwrap();
    let secure = proxy.running().addr("secure").unwrap();

    let mut client = Client::connect(plain).await;
    let a = client.get("www.test:8080", "/shop/cart?item=7").await;
    assert_eq!(a.status, 301);
    assert_eq!(
        a.header("location"),
        Some("https://www.test:8443/shop/cart?item=7")
    );
    assert_eq!(
        a.header("strict-transport-security"),
        None,
        "never over plain HTTP"
    );
    let post = Request::post("/form")
        .header("host", "www.test")
        .body(empty())
        .unwrap();
    assert_eq!(client.request(post).await.status, 308);
    assert_eq!(
        backend.requests(),
        0,
        "redirected requests never reach a member"
    );
    // A rule without the redirect serves plain HTTP as before.
    assert_eq!(client.get("open.test", "/").await.status, 200);

    let s = tls_connect(secure, Some("www.test"), &[b"http/1.1"]).await;
    let mut sender = h1_over(s).await;
    let a = answer(
        bounded("answer", sender.send_request(get("www.test", "/")))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("strict-transport-security"), Some("max-age=3600"));
}

/// Config text for bridging: one plain listener, and per (rule, farm) pair a public name
/// `<farm>.test` routed to a farm whose one member is `host:port` reached over HTTPS.
fn bridging_config(ca_file: &str, hosts: &str, farms: &[(&str, &str, &str, &str)]) -> String {
    let mut text = format!(
        "[access_log]\nformat = \"off\"\n[hosts]\n{hosts}\n[[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\n"
    );
    // (farm name, member "host:port", tls_verify, internal site name or "")
    for (name, member, verify, internal) in farms {
        let (host, port) = member.rsplit_once(':').unwrap();
        let internal = if internal.is_empty() {
            String::new()
        } else {
            format!("internal_site_name = \"{internal}\"\n")
        };
        text.push_str(&format!(
            "[[rules]]\nname = \"{name}\"\npublic_names = [\"{name}.test\"]\nfarm = \"{name}\"\n{internal}\
             [[farms]]\nname = \"{name}\"\nscheme = \"https\"\ntls_verify = \"{verify}\"\ntls_ca_file = \"{ca_file}\"\n\
             members = [{{ name = \"{name}-member\", host = \"{host}\", port = {port} }}]\n"
        ));
    }
    text
}

#[tokio::test]
async fn bridging_checks_the_member_certificate_by_member_name_or_internal_site_name() {
    let (logs, _guard) = Logs::capture();
    let ca = Ca::new("Farm CA");
    let stranger_ca = Ca::new("Unknown CA");
    let files = Files::new();
    let ca_file = files.write("ca.pem", &ca.cert_pem).display().to_string();
    // One member whose certificate carries its computer name, one whose carries the site name.
    let by_member =
        Backend::start_tls("web1", backend_acceptor(&ca.issue(&["web1.internal"]))).await;
    let by_site = Backend::start_tls("web2", backend_acceptor(&ca.issue(&["intranet.test"]))).await;
    let unknown = Backend::start_tls(
        "web3",
        backend_acceptor(&stranger_ca.issue(&["web3.internal"])),
    )
    .await;
    // A certificate from the right CA for the right name, expired.
    let expired = Backend::start_tls(
        "web4",
        backend_acceptor(&ca.issue_expired(&["web4.internal"])),
    )
    .await;
    let hosts = "\"web1.internal\" = \"127.0.0.1\"\n\"web2.internal\" = \"127.0.0.1\"\n\"web3.internal\" = \"127.0.0.1\"\n\"web4.internal\" = \"127.0.0.1\"";
    let m1 = format!("web1.internal:{}", by_member.port());
    let m2 = format!("web2.internal:{}", by_site.port());
    let m3 = format!("web3.internal:{}", unknown.port());
    let m4 = format!("web4.internal:{}", expired.port());
    let config = bridging_config(
        &ca_file,
        hosts,
        &[
            ("member-ok", &m1, "member-name", "intranet.test"),
            ("site-fails", &m1, "internal-site-name", "intranet.test"),
            ("site-ok", &m2, "internal-site-name", "intranet.test"),
            ("member-fails", &m2, "member-name", "intranet.test"),
            ("unknown-ca", &m3, "member-name", ""),
            ("expired", &m4, "member-name", ""),
        ],
    );
    let proxy = Proxy::start(&config).await;
    let mut client = Client::connect(proxy.addr).await;

    let a = client.get("member-ok.test", "/").await;
    assert_eq!((a.status.as_u16(), a.text().as_str()), (200, "web1"));
    let seen = by_member.last_seen();
    assert_eq!(
        seen.headers["host"], "intranet.test",
        "the Host is still the internal site name"
    );
    let a = client.get("site-ok.test", "/").await;
    assert_eq!((a.status.as_u16(), a.text().as_str()), (200, "web2"));

    for (name, reason) in [
        ("site-fails", "not valid for name \"intranet.test\""),
        ("member-fails", "not valid for name \"web2.internal\""),
        ("unknown-ca", "UnknownIssuer"),
        ("expired", "certificate expired"),
    ] {
        let a = client.get(&format!("{name}.test"), "/").await;
        assert_eq!(a.status, 502, "{name}");
        assert!(!a.text().contains("127.0.0.1"), "{name}: {}", a.text());
        assert!(
            a.text().contains(&format!("farm \"{name}\"")),
            "{}",
            a.text()
        );
        let log = logs.text();
        let line = log
            .lines()
            .find(|l| l.contains(&format!("member {name}-member")) && l.contains("TLS handshake"))
            .unwrap_or_else(|| panic!("{name}: no log line names the member: {log}"));
        assert!(line.contains(reason), "{name}: {line}");
    }
    assert_eq!(
        by_site.requests() + unknown.requests() + expired.requests(),
        1,
        "refused members got no request"
    );
}

#[tokio::test]
async fn the_access_log_names_the_member_of_a_failed_bridge() {
    let ca = Ca::new("Farm CA");
    let stranger_ca = Ca::new("Unknown CA");
    let files = Files::new();
    let ca_file = files.write("ca.pem", &ca.cert_pem).display().to_string();
    let unknown = Backend::start_tls(
        "web3",
        backend_acceptor(&stranger_ca.issue(&["web3.internal"])),
    )
    .await;
    let closed = closed_port().await;
    let log = files.write("access.log", "");
    let config = bridging_config(
        &ca_file,
        "\"web3.internal\" = \"127.0.0.1\"",
        &[
            (
                "unknown-ca",
                &format!("web3.internal:{}", unknown.port()),
                "member-name",
                "",
            ),
            ("refused", &format!("127.0.0.1:{closed}"), "member-name", ""),
        ],
    )
    .replace(
        "format = \"off\"",
        &format!("format = \"json\"\npath = \"{}\"", log.display()),
    );
    let proxy = Proxy::start(&config).await;
    let mut client = Client::connect(proxy.addr).await;
    let a = client.get("unknown-ca.test", "/cert").await;
    assert_eq!(a.status, 502, "{}", a.text());
    let a = client.get("refused.test", "/closed").await;
    assert_eq!(a.status, 502, "{}", a.text());

    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually("two access log lines", || read().lines().count() == 2).await;
    let lines: Vec<serde_json::Value> = read()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    for (target, farm) in [("/cert", "unknown-ca"), ("/closed", "refused")] {
        let line = lines
            .iter()
            .find(|l| l["target"] == target)
            .unwrap_or_else(|| panic!("no line for {target}: {lines:?}"));
        assert_eq!(line["status"], 502, "{line}");
        assert_eq!(line["farm"], farm, "{line}");
        assert_eq!(
            line["member"],
            format!("{farm}-member"),
            "the member tried last: {line}"
        );
    }
}

#[tokio::test]
async fn the_tls_identity_is_part_of_the_pool_key() {
    let ca = Ca::new("Farm CA");
    let files = Files::new();
    let ca_file = files.write("ca.pem", &ca.cert_pem).display().to_string();
    let backend = Backend::start_tls(
        "web1",
        backend_acceptor(&ca.issue(&["web1.internal", "web1-alias.internal", "intranet.test"])),
    )
    .await;
    let hosts = "\"web1.internal\" = \"127.0.0.1\"\n\"web1-alias.internal\" = \"127.0.0.1\"";
    let m = format!("web1.internal:{}", backend.port());
    let alias = format!("web1-alias.internal:{}", backend.port());
    let config = bridging_config(
        &ca_file,
        hosts,
        &[
            // Same address, same TLS identity: one set of connections.
            ("a", &m, "member-name", "intranet.test"),
            ("b", &m, "member-name", "other.test"),
            // Same address, another name checked: never shares with a and b.
            ("c", &alias, "member-name", ""),
            // The internal site name as the identity: another key again.
            ("d", &m, "internal-site-name", "intranet.test"),
        ],
    );
    let proxy = Proxy::start(&config).await;
    let mut client = Client::connect(proxy.addr).await;
    for i in 0..40 {
        let farm = ["a", "b", "c", "d"][i % 4];
        let a = client.get(&format!("{farm}.test"), "/").await;
        assert_eq!(a.status, 200, "{farm}");
    }
    let stats: Vec<_> = proxy
        .running()
        .proxy
        .pool
        .stats()
        .into_iter()
        .filter(|s| s.key.addr == backend.addr)
        .collect();
    let names: Vec<&str> = stats
        .iter()
        .map(|s| &*s.key.tls.as_ref().unwrap().server_name)
        .collect();
    assert_eq!(names.len(), 3, "{stats:?}");
    assert!(names.contains(&"web1.internal") && names.contains(&"web1-alias.internal"));
    assert!(names.contains(&"intranet.test"));
    for s in &stats {
        assert_eq!(s.opened, 1, "{s:?}");
    }
    assert_eq!(
        backend
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        3
    );
}

#[tokio::test]
async fn tls_verify_none_accepts_any_certificate_and_says_so_at_start() {
    let (logs, _guard) = Logs::capture();
    let stranger = Ca::new("Self-made CA");
    let backend =
        Backend::start_tls("web1", backend_acceptor(&stranger.issue(&["whatever"]))).await;
    let config = format!(
        r#"
[access_log]
format = "off"
[[listeners]]
name = "web"
bind = "127.0.0.1:0"
[[rules]]
name = "site"
public_names = ["*"]
farm = "lab"
[[farms]]
name = "lab"
scheme = "https"
tls_verify = "none"
members = [{{ host = "127.0.0.1", port = {} }}]
"#,
        backend.port()
    );
    let proxy = Proxy::start(&config).await;
    assert!(logs.text().contains("NOT checked"), "{}", logs.text());
    assert_eq!(get_once(proxy.addr, "x", "/").await.text(), "web1");
}

/// An HTTP/2 connection to the proxy over TLS (ALPN h2).
async fn h2_client(addr: std::net::SocketAddr) -> hyper::client::conn::http2::SendRequest<BoxBody> {
    let s = tls_connect(addr, Some("a.test"), &[b"h2"]).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    sender
}

#[tokio::test]
async fn an_h2_client_streams_large_bodies_both_ways_through_an_h1_member() {
    const SIZE: u64 = 8 * 1024 * 1024;
    let backend = Backend::start("m1").await;
    let ca = Ca::new("Test CA");
    let files = Files::new();
    let paths = files.pair("a", &ca.issue(&["a.test"]));
    let config = tls_listener_config(&backend, &cert_entry(&paths, ""), "preserve_host = true");
    let proxy = Proxy::start(&config).await;
    let mut h2 = h2_client(proxy.addr).await;

    // Upload: streamed through HTTP/2 flow control to an HTTP/1.1 member, chunked.
    let req = Request::post("https://a.test/upload")
        .body(PatternBody::new(SIZE, 256 * 1024).without_length().boxed())
        .unwrap();
    let resp = bounded("upload", h2.send_request(req)).await.unwrap();
    let a = answer(resp).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.text(),
        format!("{} {SIZE}", sha256_hex(&PatternBody::bytes(SIZE)))
    );
    let seen = backend.last_seen();
    assert_eq!(seen.version, http::Version::HTTP_11);
    // The client's :authority became the member's Host.
    assert_eq!(seen.headers["host"], "a.test");

    // Download, several at once on the one HTTP/2 connection.
    let mut downloads = Vec::new();
    for _ in 0..3 {
        let req = Request::get(format!("https://a.test/download?size={SIZE}"))
            .body(empty())
            .unwrap();
        let mut sender = h2.clone();
        downloads.push(tokio::spawn(async move {
            let resp = sender.send_request(req).await.unwrap();
            answer(resp).await
        }));
    }
    let expected = sha256_hex(&PatternBody::bytes(SIZE));
    for d in downloads {
        let a = bounded("download", d).await.unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(a.body.len() as u64, SIZE);
        assert_eq!(sha256_hex(&a.body), expected);
    }
}

#[tokio::test]
async fn h2c_with_prior_knowledge_on_a_plain_listener() {
    let backend = Backend::start("m1").await;
    let proxy = Proxy::start(&simple_config(&[&backend], "", "")).await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("http://plain.test/").body(empty()).unwrap();
    let a = answer(bounded("h2c", sender.send_request(req)).await.unwrap()).await;
    assert_eq!((a.status.as_u16(), a.text().as_str()), (200, "m1"));
    assert_eq!(backend.last_seen().headers["x-forwarded-proto"], "http");
}

#[tokio::test]
async fn http2_to_members_over_tls_and_h2c_shares_one_connection() {
    let ca = Ca::new("Farm CA");
    let files = Files::new();
    let ca_file = files.write("ca.pem", &ca.cert_pem).display().to_string();
    let tls_member = Backend::start_tls("tls", backend_acceptor(&ca.issue(&["127.0.0.1"]))).await;
    let h2c_member = Backend::start_h2c("h2c").await;
    let config = format!(
        r#"
[access_log]
format = "off"
[[listeners]]
name = "web"
bind = "127.0.0.1:0"
[[rules]]
name = "tls"
public_names = ["tls.test"]
farm = "tls"
[[rules]]
name = "h2c"
public_names = ["h2c.test"]
farm = "h2c"
[[farms]]
name = "tls"
scheme = "https"
http2 = true
tls_ca_file = "{ca_file}"
members = [{{ host = "127.0.0.1", port = {} }}]
[[farms]]
name = "h2c"
http2 = true
members = [{{ host = "127.0.0.1", port = {} }}]
"#,
        tls_member.port(),
        h2c_member.port()
    );
    let proxy = Proxy::start(&config).await;
    for (host, member) in [("tls.test", &tls_member), ("h2c.test", &h2c_member)] {
        // Concurrent requests from several client connections share the member's one h2
        // connection (the first ones wait for it to open rather than open their own).
        let mut tasks = Vec::new();
        for i in 0..6 {
            let addr = proxy.addr;
            let host = host.to_string();
            tasks.push(tokio::spawn(async move {
                let mut c = Client::connect(addr).await;
                let path = format!("/upload?n={i}");
                let req = Request::post(path)
                    .header("host", host)
                    .body(PatternBody::new(100_000, 10_000).boxed())
                    .unwrap();
                c.request(req).await
            }));
        }
        for t in tasks {
            let a = t.await.unwrap();
            assert_eq!(a.status, 200, "{host}");
            assert!(a.text().ends_with(" 100000"), "{}", a.text());
        }
        let seen = member.last_seen();
        assert_eq!(seen.version, http::Version::HTTP_2, "{host}");
        assert_eq!(
            member.connections.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "{host}"
        );
    }
}

#[tokio::test]
async fn links_to_the_internal_name_become_https_links_on_an_https_listener() {
    let backend = Backend::start("m1").await;
    let ca = Ca::new("Test CA");
    let files = Files::new();
    let paths = files.pair("www", &ca.issue(&["www.test"]));
    let config = tls_listener_config(
        &backend,
        &cert_entry(&paths, ""),
        "internal_site_name = \"intranet.test\"",
    );
    let proxy = Proxy::start(&config).await;
    let s = tls_connect(proxy.addr, Some("www.test"), &[b"http/1.1"]).await;
    let mut sender = h1_over(s).await;
    let mut ask = async |path: &str| {
        answer(
            bounded("answer", sender.send_request(get("www.test", path)))
                .await
                .unwrap(),
        )
        .await
    };
    // The member wrote http:// links to its internal name; the client came over HTTPS, so the
    // links it gets name the public name over HTTPS. Scheme-relative ones keep no scheme.
    let page = ask("/links?split=30").await;
    assert_eq!(page.status, 200);
    let expected = links_page("m1")
        .replace("http://intranet.test", "https://www.test")
        .replace("//intranet.test", "//www.test");
    assert_eq!(page.text(), expected);
    let moved = ask("/moved").await;
    assert_eq!(moved.status, 302);
    assert_eq!(
        moved.header("location"),
        Some("https://www.test/login?next=%2F")
    );
}

#[tokio::test]
async fn http2_false_on_a_tls_listener_leaves_h2_out_of_alpn() {
    let backend = Backend::start("m1").await;
    let ca = Ca::new("Test CA");
    let files = Files::new();
    let paths = files.pair("www", &ca.issue(&["www.test"]));
    let config = format!(
        r#"
[access_log]
format = "off"
[[listeners]]
name = "secure"
bind = "127.0.0.1:0"
http2 = false
{}
[[listeners]]
name = "plain"
bind = "127.0.0.1:0"
http2 = false
[[rules]]
name = "site"
public_names = ["*"]
farm = "farm"
[[farms]]
name = "farm"
members = [{{ name = "m1", host = "127.0.0.1", port = {} }}]
"#,
        cert_entry(&paths, ""),
        backend.port()
    );
    let proxy = Proxy::start(&config).await;
    let secure = proxy.running().addr("secure").unwrap();
    let plain = proxy.running().addr("plain").unwrap();

    // A client offering h2 first gets HTTP/1.1 by ALPN, and is served.
    let s = tls_connect(secure, Some("www.test"), &[b"h2", b"http/1.1"]).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut sender = h1_over(s).await;
    let a = answer(
        bounded("answer", sender.send_request(get("www.test", "/")))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((a.status.as_u16(), a.text().as_str()), (200, "m1"));

    // HTTP/1.1 on the plain listener is served.
    assert_eq!(get_once(plain, "www.test", "/").await.status, 200);
}

/// Everything a connection sends until it closes.
async fn read_to_close<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    // A reset after the last bytes is fine: what came before it counts.
    let _ = bounded("the connection to close", s.read_to_end(&mut got)).await;
    got
}

/// The HTTP/2 frames in `bytes` as (type, payload), as far as they are whole.
fn h2_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while bytes.len() >= 9 {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        if bytes.len() < 9 + len {
            break;
        }
        frames.push((bytes[3], bytes[9..9 + len].to_vec()));
        bytes = &bytes[9 + len..];
    }
    frames
}

#[tokio::test]
async fn a_tls_connection_speaks_exactly_the_protocol_alpn_agreed() {
    use tokio::io::AsyncWriteExt;
    let backend = Backend::start("m1").await;
    let ca = Ca::new("Test CA");
    let files = Files::new();
    let a = ca.issue(&["a.test"]);
    let proxy = Proxy::start(&tls_listener_config(
        &backend,
        &cert_entry(&files.pair("a", &a), ""),
        "",
    ))
    .await;
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

    // h2 agreed, an HTTP/1.1 request sent: GOAWAY(PROTOCOL_ERROR), never an HTTP/1.1 answer.
    let mut s = tls_connect(proxy.addr, Some("a.test"), &[b"h2"]).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    s.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    let got = read_to_close(&mut s).await;
    assert!(
        !got.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let goaway = h2_frames(&got)
        .into_iter()
        .find(|(t, _)| *t == 0x7)
        .expect("a GOAWAY frame");
    assert_eq!(&goaway.1[4..8], &[0, 0, 0, 1], "PROTOCOL_ERROR");

    // http/1.1 agreed, or no ALPN at all: the HTTP/2 preface is not HTTP/2 here.
    for alpn in [&[&b"http/1.1"[..]][..], &[]] {
        let mut s = tls_connect(proxy.addr, Some("a.test"), alpn).await;
        s.write_all(preface).await.unwrap();
        let got = read_to_close(&mut s).await;
        assert!(
            got.starts_with(b"HTTP/1.1 "),
            "ALPN {alpn:?}: {:?}",
            String::from_utf8_lossy(&got)
        );
        // And HTTP/1.1 itself is served.
        let s = tls_connect(proxy.addr, Some("a.test"), alpn).await;
        let mut sender = h1_over(s).await;
        let resp = bounded("answer", sender.send_request(get("a.test", "/")))
            .await
            .unwrap();
        assert_eq!(answer(resp).await.text(), "m1");
    }

    // h2 agreed and spoken: served.
    let mut h2 = h2_client(proxy.addr).await;
    let req = Request::get("https://a.test/").body(empty()).unwrap();
    let resp = bounded("h2 answer", h2.send_request(req)).await.unwrap();
    assert_eq!(answer(resp).await.text(), "m1");
}
