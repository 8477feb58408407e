//! Start-up on the default config, the access log, and graceful shutdown.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::support::*;

/// How many times a start is tried when another process took a sample member's port first.
const BIND_ATTEMPTS: usize = 5;

/// A port that was free a moment ago. The default config's sample members bind fixed ports
/// named in the farm too, so they cannot take port 0; a start that loses the port to another
/// process is tried again on new ones (see [`BIND_ATTEMPTS`]).
async fn released_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// The shipped default config with its fixed ports swapped for free ones and its plugin folder
/// moved to `plugin_dir` (and the code cache beside it, not into the working directory).
async fn default_config_on_free_ports(plugin_dir: &std::path::Path) -> String {
    let mut text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/farmgate.toml"))
            .unwrap();
    text = text
        .replace("bind = \"127.0.0.1:8080\"", "bind = \"127.0.0.1:0\"")
        .replace("bind = \"127.0.0.1:9090\"", "bind = \"127.0.0.1:0\"");
    for old in [8081, 8082, 8083] {
        let new = released_port().await;
        text = text
            .replace(&format!("127.0.0.1:{old}"), &format!("127.0.0.1:{new}"))
            .replace(&format!("port = {old}"), &format!("port = {new}"));
    }
    text.replace("format = \"combined\"", "format = \"off\"")
        .replace(
            "dir = \"plugins.d\"",
            &format!("dir = {:?}", plugin_dir.display().to_string()),
        )
        .replace(
            "cache_dir = \".farmgate-cache\"",
            &format!(
                "cache_dir = {:?}",
                plugin_dir.join(".farmgate-cache").display().to_string()
            ),
        )
}

#[tokio::test]
async fn the_default_config_serves_its_demo_farm() {
    let plugins = tempfile::tempdir().unwrap();
    let mut attempts = 0;
    let proxy = loop {
        attempts += 1;
        let text = default_config_on_free_ports(plugins.path()).await;
        let config = farmgate::Config::parse(&text, "test.toml").expect("default config");
        match farmgate::start(config).await {
            Ok(running) => {
                let addr = running.listeners()[0].1;
                break Proxy {
                    running: Some(running),
                    addr,
                };
            }
            Err(farmgate::StartError::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse && attempts < BIND_ATTEMPTS => {}
            Err(e) => panic!("the default config does not start: {e}"),
        }
    };
    let mut client = Client::connect(proxy.addr).await;
    let mut served = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let a = client.get("localhost:8080", "/").await;
        assert_eq!(a.status, 200);
        let body = a.text();
        let member = a
            .header("x-served-by")
            .expect("sample member names itself")
            .to_string();
        assert!(body.contains(&format!("Hello from {member}")), "{body}");
        // The member linked to its internal site name; link translation rewrote the link to the
        // public name the client asked for.
        assert!(
            body.contains("href=\"http://localhost:8080/next.htm"),
            "{body}"
        );
        assert!(!body.contains("http://intranet.demo.internal"), "{body}");
        served.insert(member);
    }
    assert_eq!(
        served.into_iter().collect::<Vec<_>>(),
        ["web1", "web2", "web3"]
    );
    let health = client.get("127.0.0.1", "/status.htm").await;
    assert_eq!(
        (health.status.as_u16(), health.text().as_str()),
        (200, "OK\n")
    );
}

#[tokio::test]
async fn access_log_writes_one_json_line_per_request() {
    let backend = Backend::start("b").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let config = simple_config(&[&backend], "", "").replace(
        "format = \"off\"",
        &format!("format = \"json\"\npath = \"{}\"", log.display()),
    );
    let proxy = Proxy::start(&config).await;
    let mut client = Client::connect(proxy.addr).await;
    client.get("www.example.com", "/a?b=c").await;
    client.get("www.example.com", "/download?size=1000").await;
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually("two access log lines", || read().lines().count() == 2).await;
    let lines: Vec<serde_json::Value> = read()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["target"], "/a?b=c");
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[0]["rule"], "site");
    assert_eq!(lines[0]["farm"], "farm");
    assert_eq!(lines[0]["member"], "b");
    assert_eq!(lines[1]["bytes"], 1000);
    assert_eq!(lines[1]["complete"], true);
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_and_refuses_new_ones() {
    let backend = Backend::start("b").await;
    let mut proxy = Proxy::start(&simple_config(&[&backend], "", "")).await;
    let addr = proxy.addr;
    let held = tokio::spawn(async move { get_once(addr, "h", "/hold").await });
    eventually("the member holds the request", || backend.requests() == 1).await;

    let running = proxy.running.take().unwrap();
    let stopping = tokio::spawn(running.shutdown());
    bounded("listener closes", async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        !stopping.is_finished(),
        "shutdown did not wait for the in-flight request"
    );
    backend.open_gate();
    let a = bounded("held request", held).await.unwrap();
    assert_eq!((a.status.as_u16(), a.text().as_str()), (200, "released"));
    bounded("shutdown completes", stopping).await.unwrap();
}

/// The real binary running the default config (on free ports) with `args` before `run`, its
/// standard error piped and the environment variables farmgate reads cleared: the child, its
/// log lines as they arrive, and the lines logged up to the one saying it is serving.
fn spawn_binary(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    args: &[&str],
) -> (
    std::process::Child,
    std::sync::mpsc::Receiver<String>,
    Vec<String>,
) {
    spawn_binary_with(rt, dir, args, |config| config)
}

/// [`spawn_binary`] with the config changed by `edit` first.
fn spawn_binary_with(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    args: &[&str],
    edit: impl Fn(String) -> String,
) -> (
    std::process::Child,
    std::sync::mpsc::Receiver<String>,
    Vec<String>,
) {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let config = edit(rt.block_on(default_config_on_free_ports(&dir.join("plugins.d"))));
        // The config farmgate is given is a link to the file, which lives in a folder of its
        // own: farmgate watches the link's folder, so an edit of the file itself reaches it
        // only when something asks for a reload (SIGHUP).
        let file = dir.join("edited").join("farmgate.toml");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, config).unwrap();
        let path = dir.join("farmgate.toml");
        if !path.exists() {
            std::os::unix::fs::symlink(&file, &path).unwrap();
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_farmgate"))
            .args(args)
            .args(["run", "--config", path.to_str().unwrap()])
            .env_remove("RUST_LOG")
            .env_remove(farmgate::config::defaults::ADMIN_TOKEN_ENV)
            .env_remove(farmgate::config::defaults::AFFINITY_KEY_ENV)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // Log lines arrive on a channel, so every wait for one is bounded.
        let (tx, log) = std::sync::mpsc::channel::<String>();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (seen, serving) = lines_until(&log, "point a browser at ");
        if serving {
            return (child, log, seen);
        }
        let _ = child.kill();
        let _ = child.wait();
        // Another process took a port between its choice and the bind: new ports.
        let lost_a_port = seen.iter().any(|l| l.contains("Address already in use"));
        assert!(
            lost_a_port && attempts < BIND_ATTEMPTS,
            "farmgate did not start: {seen:?}"
        );
    }
}

/// The lines logged until one contains `needle` (that one last), within the test's patience, and
/// whether it came (else the log ended or patience ran out).
fn lines_until(log: &std::sync::mpsc::Receiver<String>, needle: &str) -> (Vec<String>, bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = log.recv_timeout(left) else {
            return (seen, false);
        };
        let found = line.contains(needle);
        seen.push(line);
        if found {
            return (seen, true);
        }
    }
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _log, seen) = spawn_binary(&rt, dir.path(), &[]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.iter().all(|l| !l.contains('\x1b')),
        "colour codes in piped logs: {seen:?}"
    );
    assert!(
        seen.iter().any(|l| l.contains(" INFO ")),
        "the lines are the human-readable format: {seen:?}"
    );
}

/// A TLS 1.3 ClientHello whose SNI extension names `ip` (which RFC 6066 forbids), with no
/// other extension: enough for the server to parse it, and then refuse it.
fn client_hello_with_ip_sni(ip: &str) -> Vec<u8> {
    let name = ip.as_bytes();
    let mut sni = vec![0x00];
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    let mut ext = vec![0x00, 0x00];
    ext.extend_from_slice(&((sni.len() + 2) as u16).to_be_bytes());
    ext.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    ext.extend_from_slice(&sni);
    let mut hello = vec![0x03, 0x03];
    hello.extend_from_slice(&[7u8; 32]);
    hello.push(0); // no session id
    hello.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // TLS_AES_128_GCM_SHA256
    hello.extend_from_slice(&[0x01, 0x00]); // no compression
    hello.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    hello.extend_from_slice(&ext);
    let mut handshake = vec![0x01, 0x00];
    handshake.extend_from_slice(&(hello.len() as u16).to_be_bytes());
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// The port in the URL at the end of a start-up line.
fn port_in(line: &str, prefix: &str) -> u16 {
    let url = line.split(prefix).nth(1).unwrap_or_default();
    url.split('/')
        .next()
        .and_then(|host_port| host_port.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"))
}

#[test]
fn a_tls_listener_is_announced_as_https_and_ip_address_sni_is_counted_not_warned() {
    use crate::tls_support::{Ca, Files};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = Files::new();
    let (cert, key) = files.pair("a", &Ca::new("Test CA").issue(&["localhost"]));
    let secure = format!(
        "http2 = true\n[[listeners]]\nname = \"secure\"\nbind = \"127.0.0.1:0\"\n[[listeners.certificates]]\ncert = {cert:?}\nkey = {key:?}\n"
    );
    let (mut child, log, mut seen) = spawn_binary_with(&rt, dir.path(), &[], |config| {
        config.replacen("http2 = true\n", &secure, 1)
    });
    let https = "point a browser at https://";
    if !seen.iter().any(|l| l.contains(https)) {
        let (more, found) = lines_until(&log, https);
        seen.extend(more);
        if !found {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no start-up line with https:// for the TLS listener: {seen:?}");
        }
    }
    assert!(
        seen.iter()
            .any(|l| l.contains("listener=web") && l.contains("point a browser at http://")),
        "{seen:?}"
    );
    let secure = port_in(
        seen.iter().find(|l| l.contains(https)).expect("seen above"),
        "https://",
    );
    let (more, found) = lines_until(&log, "dashboard is at http://");
    let admin = found
        .then(|| more.last().map(|l| port_in(l, "http://")))
        .flatten();
    let counted = admin.map(|admin| {
        rt.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            for _ in 0..2 {
                let mut s = tokio::net::TcpStream::connect(("127.0.0.1", secure))
                    .await
                    .unwrap();
                s.write_all(&client_hello_with_ip_sni("127.0.0.1"))
                    .await
                    .unwrap();
                let mut rest = Vec::new();
                let _ = bounded("the refused handshake", s.read_to_end(&mut rest)).await;
            }
            let metric = || async {
                get_once(([127, 0, 0, 1], admin).into(), "localhost", "/metrics")
                    .await
                    .text()
            };
            let mut text = metric().await;
            for _ in 0..100 {
                if text.contains("farmgate_tls_sni_ip_address_total 2") {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                text = metric().await;
            }
            text
        })
    });
    let _ = child.kill();
    let _ = child.wait();
    let later: Vec<String> = log.try_iter().collect();
    let metrics = counted.expect("the admin listener's start-up line");
    assert!(
        later.iter().all(|l| !l.contains("Illegal SNI")),
        "warned: {later:?}"
    );
    assert!(
        metrics.contains("farmgate_tls_sni_ip_address_total 2"),
        "{metrics}\n{later:?}"
    );
}

#[test]
fn the_binary_runs_a_config_reloads_on_sighup_and_stops_on_sigterm() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut child, log, mut seen) = spawn_binary(&rt, dir.path(), &["--log-format", "json"]);
    let wait_for = |needle: &str| -> String {
        let (mut seen, found) = lines_until(&log, needle);
        assert!(found, "no log line containing {needle:?}: {seen:?}");
        seen.pop().unwrap_or_default()
    };
    let line = seen.pop().unwrap_or_default();
    let url = line
        .split("point a browser at ")
        .nth(1)
        .map(|u| u.split('"').next().unwrap_or("").to_string())
        .unwrap();
    let port: u16 = url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let web = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let a = rt.block_on(get_once(web, "localhost", "/reloaded"));
    assert_eq!(a.status, 200);
    assert!(
        a.text().contains("Hello from"),
        "a member answers: {}",
        a.text()
    );

    // The file gains a rule that answers /reloaded itself; SIGHUP makes farmgate read it.
    let file = dir.path().join("edited").join("farmgate.toml");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(
        "\n[[rules.rewrite]]\npath = '^/reloaded$'\naction = \"respond\"\nstatus = 200\nbody = \"reloaded\"\n",
    );
    let partial = file.with_extension("partial");
    std::fs::write(&partial, text).unwrap();
    std::fs::rename(&partial, &file).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_for("SIGHUP: reloading the config");
    wait_for("config reloaded");
    let a = rt.block_on(get_once(web, "localhost", "/reloaded"));
    assert_eq!(
        (a.status.as_u16(), a.text().as_str()),
        (200, "reloaded"),
        "the reloaded config applies"
    );
    let a = rt.block_on(get_once(web, "localhost", "/"));
    assert_eq!(a.status, 200, "still serving after the reload");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + PATIENCE;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "farmgate did not exit after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn the_combined_access_log_is_ncsa_combined_with_farmgates_fields() {
    let backend = Backend::start("b").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let config = simple_config(&[&backend], "", "").replace(
        "format = \"off\"",
        &format!("format = \"combined\"\npath = \"{}\"", log.display()),
    );
    let proxy = Proxy::start(&config).await;
    let mut client = Client::connect(proxy.addr).await;
    let req = http::Request::get("/a?b=c")
        .header("host", "www.example.com")
        .header("referer", "https://ref.test/page")
        .header("user-agent", "agent \"quoted\"/1.0")
        .body(empty())
        .unwrap();
    assert_eq!(client.request(req).await.status, 200);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually("one access log line", || read().lines().count() == 1).await;
    let text = read();
    let line = text.lines().next().unwrap();
    // host ident authuser [date] "request" status bytes "referer" "user-agent", then farmgate's
    // fields; the member's body is its name, one byte.
    let combined = regex_lite::Regex::new(
        r#"^127\.0\.0\.1 - - \[\d{2}/(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] "GET /a\?b=c HTTP/1\.1" 200 1 "https://ref\.test/page" "agent \\"quoted\\"/1\.0" rule=site farm=farm member=b ms=\d+\.\d{3}$"#,
    )
    .unwrap();
    assert!(combined.is_match(line), "{line}");
}

#[tokio::test]
async fn shutdown_ends_requests_that_outlast_the_grace_period() {
    use tokio::io::AsyncWriteExt;
    let backend = Backend::start("b").await;
    let mut proxy = Proxy::start(&simple_config(
        &[&backend],
        "",
        "shutdown_grace = \"200ms\"",
    ))
    .await;
    let mut held = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    held.write_all(b"GET /hold HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    eventually("the member holds the request", || backend.requests() == 1).await;
    // The member never answers; shutdown gives up on the request after the grace period (the
    // default, 30 s, is past the test's patience).
    let running = proxy.running.take().unwrap();
    bounded(
        "shutdown completes without the held request",
        running.shutdown(),
    )
    .await;
    let mut out = [0u8; 64];
    let read = held.try_read(&mut out).unwrap_or(0);
    assert!(
        !String::from_utf8_lossy(&out[..read]).contains("released"),
        "the held request was answered"
    );
}
