//! Fault run: the real `farmgate` binary, on loopback, under a steady load of keep-alive clients
//! while, in one bounded sequence, farm members are killed and restarted on their address, one
//! plugin file is replaced over and over by two alternating versions, the config is rewritten and
//! reloaded through the admin API, and hostile plugins (a loop, a panic, an allocation without
//! end) are dropped into the plugin folder and taken out again.
//!
//! Counted by the client: every request must get 200 from one of the members, and the proxy's
//! resident set after the churn must be within 10 % of where it was after the warm-up.
//!
//! Sizes come from the environment, with defaults that keep this test well under a minute:
//! `FAULT_PLUGIN_SWAPS` (20), `FAULT_RELOADS` (5), `FAULT_KILLS` (3), `FAULT_CLIENTS` (4) and
//! `FAULT_SOAK_SECS` (0: how long the load keeps going after the churn). `benches/fault-run.sh`
//! runs the long version and prints the figures.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::support::*;

/// The plugin file that is replaced again and again.
const SWAPPED: &str = "policy";
/// The hostile plugin's copies (file name, and the `mode` its config gives it).
const HOSTILE: [(&str, &str); 3] = [
    ("hostile-loop", "loop"),
    ("hostile-panic", "panic"),
    ("hostile-alloc", "alloc"),
];
/// Members of the farm.
const MEMBERS: [&str; 3] = ["m1", "m2", "m3"];
/// Requests the load completes between two churn steps (pacing: faults happen under load).
const PACE: u64 = 40;
/// Requests before the resident set is first read.
const WARM_UP: u64 = 300;
/// The resident set after the churn may exceed the one after the warm-up by this factor.
const RSS_TOLERANCE: f64 = 1.10;
/// A client opens a new connection after this many requests (connections come and go too).
const REQUESTS_PER_CONNECTION: u64 = 200;

/// How big the run is.
#[derive(Debug)]
struct Sizes {
    swaps: u64,
    reloads: u64,
    kills: u64,
    clients: u64,
    soak: Duration,
}

impl Sizes {
    fn from_env() -> Sizes {
        let get = |var: &str, default: u64| match std::env::var(var) {
            Ok(v) => v
                .trim()
                .parse::<u64>()
                .unwrap_or_else(|e| panic!("{var}={v:?} is not a count: {e}")),
            Err(_) => default,
        };
        Sizes {
            swaps: get("FAULT_PLUGIN_SWAPS", 20),
            reloads: get("FAULT_RELOADS", 5),
            kills: get("FAULT_KILLS", 3),
            clients: get("FAULT_CLIENTS", 4).max(1),
            soak: Duration::from_secs(get("FAULT_SOAK_SECS", 0)),
        }
    }
}

/// One step of the churn.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Kill member `i % 3`, let the load run, start it again on its address.
    Kill(u64),
    /// Replace the plugin file by the other version.
    Swap(u64),
    /// Rewrite the config with another weight and reload it through the admin API.
    Reload(u64),
    HostileIn,
    HostileOut,
}

/// The steps, each kind spread evenly over the run; the hostile plugins are in the folder for
/// the middle of it, while the other faults go on.
fn schedule(sizes: &Sizes) -> Vec<Step> {
    let mut steps: Vec<(f64, Step)> = Vec::new();
    let spread = |n: u64, step: fn(u64) -> Step, steps: &mut Vec<(f64, Step)>| {
        for i in 0..n {
            steps.push(((i as f64 + 0.5) / n as f64, step(i)));
        }
    };
    spread(sizes.kills, Step::Kill, &mut steps);
    spread(sizes.swaps, Step::Swap, &mut steps);
    spread(sizes.reloads, Step::Reload, &mut steps);
    steps.push((0.3, Step::HostileIn));
    steps.push((0.7, Step::HostileOut));
    steps.sort_by(|a, b| a.0.total_cmp(&b.0));
    steps.into_iter().map(|(_, s)| s).collect()
}

/// The config file: one listener and the admin listener on ephemeral loopback ports, one rule,
/// a farm of the three members with an HTTP verifier, the plugin folder and code cache in `dir`.
/// `weight` is member m1's weight: what reloads change.
fn config_text(dir: &Path, ports: &[u16], weight: u32) -> String {
    let members: Vec<String> = MEMBERS
        .iter()
        .zip(ports)
        .map(|(name, port)| {
            let w = if *name == "m1" { weight } else { 1 };
            format!("{{ name = \"{name}\", host = \"127.0.0.1\", port = {port}, weight = {w} }}")
        })
        .collect();
    let hostile: String = HOSTILE
        .iter()
        .map(|(name, mode)| {
            format!("[plugins.config.{name}]\nsettings = {{ mode = \"{mode}\" }}\n")
        })
        .collect();
    format!(
        r#"# Written by the fault run.
[access_log]
format = "off"
[plugins]
dir = {plugins:?}
cache_dir = {cache:?}
{hostile}
[[listeners]]
name = "web"
bind = "127.0.0.1:0"
[admin]
bind = "127.0.0.1:0"
token_env = "{UNSET_ENV}"
[[rules]]
name = "site"
public_names = ["*"]
farm = "farm"
[[farms]]
name = "farm"
members = [{members}]
[farms.health]
check = "http"
url = "http://*/health"
interval = "200ms"
timeout = "1s"
"#,
        plugins = dir.join("plugins.d").display().to_string(),
        cache = dir.join("compiled").display().to_string(),
        members = members.join(", "),
    )
}

/// Writes a file the way tools should: elsewhere in the same folder, then renamed over it.
fn replace_file(path: &Path, bytes: &[u8]) {
    let name = path
        .file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned();
    let tmp = path.with_file_name(format!(".{name}.partial"));
    std::fs::write(&tmp, bytes).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path)
        .unwrap_or_else(|e| panic!("rename {} over {}: {e}", tmp.display(), path.display()));
}

/// The farmgate child process; killed when dropped (the test ending or panicking), printing
/// the last lines it logged when the test failed.
struct Farmgate {
    child: std::process::Child,
    /// The last lines it logged, for failure messages.
    log: Arc<Mutex<VecDeque<String>>>,
    /// Lines where a thread of farmgate panicked (Rust's panic message, not a log line).
    panics: Arc<Mutex<Vec<String>>>,
}

/// How many log lines [`Farmgate`] keeps.
const LOG_TAIL: usize = 60;

impl Drop for Farmgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("farmgate's last log lines:\n{}", self.log_tail());
        }
    }
}

impl Farmgate {
    /// Starts `farmgate run --config PATH` and learns its listener and admin addresses from the
    /// lines it logs at start.
    async fn start(config: &Path) -> (Farmgate, SocketAddr, SocketAddr) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_farmgate"))
            .args([
                "--log-format",
                "json",
                "--log-level",
                "info",
                "run",
                "--config",
            ])
            .arg(config)
            .env_remove("RUST_LOG")
            .env_remove(farmgate::config::defaults::ADMIN_TOKEN_ENV)
            .env_remove(farmgate::config::defaults::AFFINITY_KEY_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the farmgate binary");
        let stderr = child.stderr.take().expect("farmgate's stderr is piped");
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL)));
        let panics = Arc::new(Mutex::new(Vec::new()));
        let farmgate = Farmgate {
            child,
            log: Arc::clone(&log),
            panics: Arc::clone(&panics),
        };
        // The reader runs for the life of the process, so the pipe never fills up.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, SocketAddr)>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(found) = start_address(&line) {
                    let _ = tx.send(found);
                }
                if line.starts_with("thread '") && line.contains("panicked at") {
                    panics.lock().expect("panic list lock").push(line.clone());
                }
                let mut log = log.lock().expect("log tail lock");
                if log.len() == LOG_TAIL {
                    log.pop_front();
                }
                log.push_back(line);
            }
        });
        let (mut web, mut admin) = (None, None);
        while web.is_none() || admin.is_none() {
            match bounded("farmgate logs its addresses", rx.recv()).await {
                Some((what, addr)) if what == "web" => web = Some(addr),
                Some((_, addr)) => admin = Some(addr),
                None => panic!("farmgate ended before it was serving"),
            }
        }
        let (web, admin) = (
            web.expect("listener address"),
            admin.expect("admin address"),
        );
        (farmgate, web, admin)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        self.log
            .lock()
            .map(|l| l.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    /// The resident set in KiB, from `/proc/PID/status`.
    fn rss_kib(&self) -> u64 {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in {path}:\n{status}"))
    }

    /// Stops farmgate with SIGTERM and returns how it exited.
    async fn terminate(&mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {} failed", self.pid());
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("query the farmgate process") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "farmgate did not exit after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Panics if the process has ended.
    fn assert_alive(&mut self, when: &str) {
        if let Some(status) = self.child.try_wait().expect("query the farmgate process") {
            panic!("farmgate ended {when}: {status}");
        }
    }

    /// Polls `check` until it holds, failing after [`PATIENCE`].
    async fn until(&self, what: &str, mut check: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !check().await {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `("web", addr)` or `("admin", addr)` from a start-up log line (JSON, fields flattened).
fn start_address(line: &str) -> Option<(String, SocketAddr)> {
    let v: Value = serde_json::from_str(line).ok()?;
    let field = |name: &str| {
        v.get(name)
            .or_else(|| v.get("fields").and_then(|f| f.get(name)))
            .and_then(Value::as_str)
    };
    let message = field("message")?;
    if message == "admin listener" {
        return Some(("admin".into(), field("addr")?.parse().ok()?));
    }
    let url = message.split("point a browser at http://").nth(1)?;
    let port: u16 = url.trim_end_matches('/').rsplit(':').next()?.parse().ok()?;
    (field("listener") == Some("web"))
        .then(|| ("web".into(), SocketAddr::from(([127, 0, 0, 1], port))))
}

/// One admin call: status and JSON body.
async fn admin(addr: SocketAddr, method: Method, path: &str) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "admin")
        .body(empty())
        .expect("admin request");
    let answer = Client::connect(addr).await.request(req).await;
    let value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    (answer.status, value)
}

/// A member as `/api/farms/farm` shows it.
async fn member(addr: SocketAddr, name: &str) -> Value {
    let (status, farm) = admin(addr, Method::GET, "/api/farms/farm").await;
    assert_eq!(status, StatusCode::OK, "GET /api/farms/farm: {farm}");
    farm["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no member {name} in {farm}"))
}

/// The folder plugins as `/api/plugins` shows them.
async fn folder_plugins(addr: SocketAddr) -> Vec<Value> {
    let (status, v) = admin(addr, Method::GET, "/api/plugins").await;
    assert_eq!(status, StatusCode::OK, "GET /api/plugins: {v}");
    v["plugins"].as_array().cloned().unwrap_or_default()
}

/// What the clients counted.
#[derive(Default)]
struct Load {
    ok: AtomicU64,
    failed: AtomicU64,
    connections: AtomicU64,
    /// The first failures, described.
    failures: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Load {
    fn done(&self) -> u64 {
        self.ok.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }

    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut f = self.failures.lock().expect("failure list lock");
        if f.len() < 20 {
            f.push(what);
        }
    }
}

/// One client: keep-alive GETs until told to stop; every answer must be 200 with the body of
/// one of the members. Any error is a failed request; the connection is then replaced.
async fn client(id: u64, addr: SocketAddr, load: Arc<Load>) {
    let mut sender: Option<SendRequest<BoxBody>> = None;
    let mut on_connection = 0u64;
    let mut n = 0u64;
    while !load.stop.load(Ordering::Relaxed) {
        n += 1;
        if on_connection == REQUESTS_PER_CONNECTION {
            sender = None;
        }
        let s = match sender.as_mut() {
            Some(s) => s,
            None => match connect(addr).await {
                Ok(s) => {
                    load.connections.fetch_add(1, Ordering::Relaxed);
                    on_connection = 0;
                    sender.insert(s)
                }
                Err(e) => {
                    load.fail(format!("client {id} request {n}: {e}"));
                    continue;
                }
            },
        };
        on_connection += 1;
        let path = format!("/fault/{id}/{n}");
        match tokio::time::timeout(PATIENCE, one_request(s, &path)).await {
            Ok(Ok((status, body)))
                if status == StatusCode::OK && MEMBERS.iter().any(|m| body == m.as_bytes()) =>
            {
                load.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Ok((status, body))) => {
                load.fail(format!(
                    "client {id} GET {path}: {status} {:?}",
                    String::from_utf8_lossy(&body)
                ));
            }
            Ok(Err(e)) => {
                load.fail(format!("client {id} GET {path}: {e}"));
                sender = None;
            }
            Err(_) => {
                load.fail(format!(
                    "client {id} GET {path}: no answer within {PATIENCE:?}"
                ));
                sender = None;
            }
        }
    }
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<BoxBody>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to the proxy: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn one_request(
    sender: &mut SendRequest<BoxBody>,
    path: &str,
) -> Result<(StatusCode, Bytes), String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("connection not ready: {e}"))?;
    let resp = sender
        .send_request(get("www.example.com", path))
        .await
        .map_err(|e| format!("no response: {e}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body broke off: {e}"))?
        .to_bytes();
    Ok((status, body))
}

/// Everything the churn steps need.
struct Run {
    farmgate: Farmgate,
    admin: SocketAddr,
    load: Arc<Load>,
    dir: PathBuf,
    config: PathBuf,
    backends: Vec<Option<Backend>>,
    addrs: Vec<SocketAddr>,
    versions: [Vec<u8>; 2],
    hostile: Vec<u8>,
    /// Which of `versions` is in the folder now.
    current: usize,
    /// Calls of the hostile plugins that failed (and were contained) while they were in.
    hostile_failures: u64,
}

impl Run {
    fn plugin_dir(&self) -> PathBuf {
        self.dir.join("plugins.d")
    }

    /// Pacing, not synchronisation: lets the load complete `n` more requests, so that every
    /// fault happens under load. Fails if the load stops making progress.
    async fn let_load_run(&self, n: u64) {
        let target = self.load.done() + n;
        let load = Arc::clone(&self.load);
        self.farmgate
            .until(
                &format!("the load to complete {n} more requests"),
                async || load.done() >= target,
            )
            .await;
    }

    /// Puts a plugin version into the folder and waits until the admin API shows it loaded.
    async fn put_plugin(&self, name: &str, bytes: &[u8], what: &str) {
        replace_file(&self.plugin_dir().join(format!("{name}.wasm")), bytes);
        let version = sha256_hex(bytes)[..12].to_string();
        let admin = self.admin;
        self.farmgate
            .until(
                &format!("{what}: /api/plugins shows {name} at version {version}"),
                async || {
                    folder_plugins(admin)
                        .await
                        .iter()
                        .any(|p| p["name"] == name && p["version"] == version.as_str())
                },
            )
            .await;
    }

    async fn step(&mut self, step: Step) {
        match step {
            Step::Kill(i) => self.kill(i).await,
            Step::Swap(i) => {
                self.current = 1 - self.current;
                let bytes = self.versions[self.current].clone();
                self.put_plugin(SWAPPED, &bytes, &format!("swap {}", i + 1))
                    .await;
            }
            Step::Reload(i) => self.reload(i).await,
            Step::HostileIn => self.hostile_in().await,
            Step::HostileOut => {
                let plugins = folder_plugins(self.admin).await;
                self.hostile_failures = plugins
                    .iter()
                    .filter(|p| HOSTILE.iter().any(|(name, _)| p["name"] == *name))
                    .filter_map(|p| p["failures"].as_u64())
                    .sum();
                for (name, _) in HOSTILE {
                    let path = self.plugin_dir().join(format!("{name}.wasm"));
                    std::fs::remove_file(&path)
                        .unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
                }
                let admin = self.admin;
                self.farmgate
                    .until("the hostile plugins are unloaded", async || {
                        folder_plugins(admin)
                            .await
                            .iter()
                            .all(|p| !HOSTILE.iter().any(|(name, _)| p["name"] == *name))
                    })
                    .await;
            }
        }
        self.farmgate.assert_alive(&format!("after {step:?}"));
    }

    /// Kills a member and starts it again on the same address, then waits until it is active
    /// and serving the load again. Even kills first wait until the proxy's verifier has seen
    /// the member go, while the load meets its refused connections and stale pooled ones; odd
    /// kills restart it at once (a bounce: the pool's idle connections to it are all dead).
    async fn kill(&mut self, i: u64) {
        let index = (i % MEMBERS.len() as u64) as usize;
        let name = MEMBERS[index];
        let admin = self.admin;
        drop(self.backends[index].take());
        if i.is_multiple_of(2) {
            self.farmgate
                .until(
                    &format!("kill {}: {name} out of service", i + 1),
                    async || member(admin, name).await["state"] != "active",
                )
                .await;
            self.let_load_run(PACE).await;
        }
        let backend = Backend::start_on(self.addrs[index], name).await;
        let seen = Arc::clone(&backend.seen);
        self.backends[index] = Some(backend);
        self.farmgate
            .until(
                &format!("kill {}: {name} back, active and serving", i + 1),
                async || {
                    member(admin, name).await["state"] == "active"
                        && seen
                            .lock()
                            .expect("backend's request list")
                            .iter()
                            .any(|s| s.uri.starts_with("/fault/"))
                },
            )
            .await;
    }

    /// Rewrites the config with another weight for m1, reloads it through the admin API and
    /// checks the new weight is in effect.
    async fn reload(&mut self, i: u64) {
        let weight = if i.is_multiple_of(2) { 2 } else { 1 };
        let ports: Vec<u16> = self.addrs.iter().map(SocketAddr::port).collect();
        replace_file(
            &self.config,
            config_text(&self.dir, &ports, weight).as_bytes(),
        );
        let (status, answer) = admin(self.admin, Method::POST, "/api/reload").await;
        assert_eq!(status, StatusCode::OK, "reload {}: {answer}", i + 1);
        let m1 = member(self.admin, "m1").await;
        assert_eq!(m1["weight"], weight, "reload {}: {m1}", i + 1);
    }

    /// Drops the hostile plugin in three modes and keeps the load going until each has been
    /// called and has failed (and so was contained), and a while after.
    async fn hostile_in(&mut self) {
        for (name, _) in HOSTILE {
            let bytes = self.hostile.clone();
            self.put_plugin(name, &bytes, "hostile plugin in").await;
        }
        let admin = self.admin;
        self.farmgate
            .until("every hostile plugin has failed a call", async || {
                let plugins = folder_plugins(admin).await;
                HOSTILE.iter().all(|(name, _)| {
                    plugins
                        .iter()
                        .any(|p| p["name"] == *name && p["failures"].as_u64() > Some(0))
                })
            })
            .await;
        // Failing every call, each is disabled for a while (and then tried again).
        let mut disabled = std::collections::BTreeSet::new();
        self.farmgate
            .until(
                "every hostile plugin is disabled after failures in a row",
                async || {
                    for p in folder_plugins(admin).await {
                        if !p["disabled_for_ms"].is_null() {
                            disabled.insert(p["name"].as_str().unwrap_or("").to_string());
                        }
                    }
                    HOSTILE.iter().all(|(name, _)| disabled.contains(*name))
                },
            )
            .await;
        self.let_load_run(3 * PACE).await;
    }
}

/// Reads the resident set every 250 ms until it has stopped rising (after the warm-up, under
/// load) or falling (after the churn, the load stopped) for a second, or [`PATIENCE`] passes:
/// the value once the proxy has settled.
async fn settled_rss(farmgate: &Farmgate, falling: bool) -> u64 {
    let mut last = farmgate.rss_kib();
    let mut steady = 0;
    let deadline = Instant::now() + PATIENCE;
    while steady < 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = farmgate.rss_kib();
        let moved = if falling {
            now < last
        } else {
            now > last + last / 100
        };
        if moved {
            steady = 0;
        } else {
            steady += 1;
        }
        last = now;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults() {
    let started = Instant::now();
    let sizes = Sizes::from_env();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut backends = Vec::new();
    for name in MEMBERS {
        backends.push(Some(Backend::start(name).await));
    }
    let addrs: Vec<SocketAddr> = backends
        .iter()
        .map(|b| b.as_ref().expect("started").addr)
        .collect();
    let ports: Vec<u16> = addrs.iter().map(SocketAddr::port).collect();
    std::fs::create_dir(dir.path().join("plugins.d")).expect("create the plugin folder");
    let config = dir.path().join("farmgate.toml");
    replace_file(&config, config_text(dir.path(), &ports, 1).as_bytes());

    let (farmgate, web, admin_addr) = Farmgate::start(&config).await;
    farmgate
        .until("/ready answers 200", async || {
            admin(admin_addr, Method::GET, "/ready").await.0 == StatusCode::OK
        })
        .await;

    // Two guests that leave every request to the farm: one passes on everything, the other
    // routes only /v2/..., which the load never asks for.
    let versions = [guest("test-pass"), guest("test-router-v2")];
    assert_ne!(versions[0], versions[1]);
    let load = Arc::new(Load::default());
    let clients: Vec<_> = (0..sizes.clients)
        .map(|id| tokio::spawn(client(id, web, Arc::clone(&load))))
        .collect();
    let mut run = Run {
        farmgate,
        admin: admin_addr,
        load: Arc::clone(&load),
        dir: dir.path().to_path_buf(),
        config,
        backends,
        addrs,
        versions,
        hostile: guest("test-hostile"),
        current: 0,
        hostile_failures: 0,
    };

    // Warm-up: requests, and the first version of the plugin loaded.
    run.let_load_run(WARM_UP).await;
    let first = run.versions[0].clone();
    run.put_plugin(SWAPPED, &first, "first plugin load").await;
    run.let_load_run(WARM_UP).await;
    let rss_start = settled_rss(&run.farmgate, false).await;
    let requests_at_start = load.done();

    let steps = schedule(&sizes);
    for step in steps {
        run.step(step).await;
        run.let_load_run(PACE).await;
    }
    if !sizes.soak.is_zero() {
        tokio::time::sleep(sizes.soak).await;
    }

    load.stop.store(true, Ordering::Relaxed);
    for c in clients {
        bounded("a load client stops", c)
            .await
            .expect("a load client panicked");
    }
    run.farmgate.assert_alive("after the churn");
    let rss_end = settled_rss(&run.farmgate, true).await;

    let (ok, failed) = (
        load.ok.load(Ordering::Relaxed),
        load.failed.load(Ordering::Relaxed),
    );
    let (status, farm) = admin(admin_addr, Method::GET, "/api/farms/farm").await;
    assert_eq!(status, StatusCode::OK, "{farm}");
    let member_failures: u64 = farm["members"]
        .as_array()
        .map(|ms| ms.iter().filter_map(|m| m["failures"].as_u64()).sum())
        .unwrap_or(0);
    let (status, plugins) = admin(admin_addr, Method::GET, "/api/plugins").await;
    assert_eq!(status, StatusCode::OK, "{plugins}");
    let panics = run.farmgate.panics.lock().expect("panic list lock").clone();
    let exit = run.farmgate.terminate().await;
    println!(
        "fault run: {} requests ({} after the warm-up) on {} connections from {} clients, {failed} failed; \
         {} plugin swaps, {} config reloads, {} member kills, {} hostile plugins in and out; \
         {member_failures} exchanges failed by members (each retried on another), {} hostile plugin calls contained; \
         RSS {rss_start} KiB after the warm-up, {rss_end} KiB after the churn ({:+.1} %); {exit}; {:.1} s",
        ok + failed,
        ok + failed - requests_at_start,
        load.connections.load(Ordering::Relaxed),
        sizes.clients,
        sizes.swaps,
        sizes.reloads,
        sizes.kills,
        HOSTILE.len(),
        run.hostile_failures,
        (rss_end as f64 / rss_start as f64 - 1.0) * 100.0,
        started.elapsed().as_secs_f64(),
    );
    println!("fault run: plugins after the churn: {}", plugins["plugins"]);
    let failures = load.failures.lock().expect("failure list lock").clone();
    assert_eq!(
        failed,
        0,
        "failed requests (first {}):\n{}",
        failures.len(),
        failures.join("\n"),
    );
    assert!(
        panics.is_empty(),
        "farmgate panicked:\n{}",
        panics.join("\n")
    );
    assert!(exit.success(), "farmgate exited with {exit} after SIGTERM");
    assert!(
        rss_end as f64 <= rss_start as f64 * RSS_TOLERANCE,
        "the proxy's RSS grew from {rss_start} KiB to {rss_end} KiB over the churn"
    );
}
