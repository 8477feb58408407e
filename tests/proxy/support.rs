//! Test support: real backend servers on 127.0.0.1:0, the real proxy, a real HTTP client, and a
//! bounded `eventually` for conditions that become true asynchronously.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

pub type BoxBody =
    http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Upper bound for any wait in these tests; reaching it fails the test.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Polls `cond` until it holds, failing the test after [`PATIENCE`].
pub async fn eventually<F: FnMut() -> bool>(what: &str, mut cond: F) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `fut` with the [`PATIENCE`] bound.
pub async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// What a backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: http::HeaderMap,
    pub version: http::Version,
}

/// What a backend's `/upload` read of a request body: the bytes, and whether the body ended as
/// its framing said (a body cut off by an error is not complete).
#[derive(Debug, Clone)]
pub struct Upload {
    pub uri: String,
    pub body: Vec<u8>,
    pub complete: bool,
}

/// A real HTTP/1.1 backend that records connections and requests.
///
/// Paths: `/upload` answers with the SHA-256 and length of the body it streamed in;
/// `/download?size=N` streams N pattern bytes; `/gated` sends `first`, waits for
/// [`Backend::open_gate`], then sends `second`; `/hold` waits for the gate before answering;
/// `/upload-gated` tells [`Backend::first_chunk`] when the first body chunk arrives;
/// `/headers` answers with hop-by-hop response headers; anything else answers with the name.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Every body `/upload` read, in the order they ended.
    pub uploads: Arc<Mutex<Vec<Upload>>>,
    gate: Arc<Notify>,
    pub first_chunk: Arc<Notify>,
    /// What `/health` answers: 200 while true, 503 otherwise.
    pub healthy: Arc<std::sync::atomic::AtomicBool>,
    /// The accept loop and every connection task, so dropping the backend closes them all.
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Backend::start_on("127.0.0.1:0".parse().unwrap(), name).await
    }

    /// A backend that takes `delay` before answering anything: a slow member.
    pub async fn start_slow(name: &str, delay: Duration) -> Backend {
        Backend::start_full("127.0.0.1:0".parse().unwrap(), name, delay).await
    }

    pub async fn start_on(addr: SocketAddr, name: &str) -> Backend {
        Backend::start_full(addr, name, Duration::ZERO).await
    }

    async fn start_full(addr: SocketAddr, name: &str, delay: Duration) -> Backend {
        Backend::start_serving(addr, name, delay, Serve::Http1).await
    }

    /// An HTTPS backend (HTTP/1.1 and, by ALPN, HTTP/2) with the given TLS acceptor.
    pub async fn start_tls(name: &str, tls: tokio_rustls::TlsAcceptor) -> Backend {
        let addr = "127.0.0.1:0".parse().unwrap();
        Backend::start_serving(addr, name, Duration::ZERO, Serve::Tls(tls)).await
    }

    /// A plain backend that also speaks HTTP/2 with prior knowledge (h2c).
    pub async fn start_h2c(name: &str) -> Backend {
        let addr = "127.0.0.1:0".parse().unwrap();
        Backend::start_serving(addr, name, Duration::ZERO, Serve::Auto).await
    }

    async fn start_serving(addr: SocketAddr, name: &str, delay: Duration, serve: Serve) -> Backend {
        // A backend just dropped from this address may take a moment to release it.
        let listener = bounded("bind backend", async {
            loop {
                match TcpListener::bind(addr).await {
                    Ok(l) => break l,
                    Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(e) => panic!("bind backend: {e}"),
                }
            }
        })
        .await;
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let uploads = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(Notify::new());
        let first_chunk = Arc::new(Notify::new());
        let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let state = Arc::new(State {
            name: name.to_string(),
            healthy: Arc::clone(&healthy),
            delay,
            seen: Arc::clone(&seen),
            uploads: Arc::clone(&uploads),
            gate: Arc::clone(&gate),
            first_chunk: Arc::clone(&first_chunk),
        });
        let conns = Arc::clone(&connections);
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let conn_tasks = Arc::clone(&tasks);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                conns.fetch_add(1, Ordering::SeqCst);
                let state = Arc::clone(&state);
                let serve = serve.clone();
                let conn = tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(state.handle(req).await) }
                    });
                    let auto = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    match serve {
                        Serve::Http1 => {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .with_upgrades()
                                .await;
                        }
                        Serve::Auto => {
                            let _ = auto
                                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                                .await;
                        }
                        Serve::Tls(acceptor) => {
                            // A refused handshake (the proxy did not trust us) ends here.
                            if let Ok(s) = acceptor.accept(stream).await {
                                let _ = auto
                                    .serve_connection_with_upgrades(TokioIo::new(s), svc)
                                    .await;
                            }
                        }
                    }
                });
                conn_tasks.lock().unwrap().push(conn.abort_handle());
            }
        });
        tasks.lock().unwrap().push(accept.abort_handle());
        Backend {
            name: name.to_string(),
            addr,
            connections,
            seen,
            uploads,
            gate,
            first_chunk,
            healthy,
            tasks,
        }
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last_seen(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("backend saw a request")
    }

    pub fn open_gate(&self) {
        self.gate.notify_one();
    }
}

/// How a backend serves its connections.
#[derive(Clone)]
enum Serve {
    Http1,
    /// HTTP/1.1 or HTTP/2 with prior knowledge.
    Auto,
    Tls(tokio_rustls::TlsAcceptor),
}

struct State {
    name: String,
    healthy: Arc<std::sync::atomic::AtomicBool>,
    /// Simulated slowness of this member (not synchronisation: nothing waits on it).
    delay: Duration,
    seen: Arc<Mutex<Vec<Seen>>>,
    uploads: Arc<Mutex<Vec<Upload>>>,
    gate: Arc<Notify>,
    first_chunk: Arc<Notify>,
}

impl State {
    async fn handle(&self, req: Request<Incoming>) -> Response<BoxBody> {
        self.seen.lock().unwrap().push(Seen {
            method: req.method().to_string(),
            uri: req.uri().to_string(),
            headers: req.headers().clone(),
            version: req.version(),
        });
        if req.uri().path() == "/ws" {
            return websocket_echo(req, &self.name);
        }
        let query: HashMap<String, String> = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let mut resp = match req.uri().path() {
            "/upload" | "/upload-gated" => {
                let gated = req.uri().path() == "/upload-gated";
                let uri = req.uri().to_string();
                let mut body = req.into_body();
                let mut hash = Sha256::new();
                let mut len = 0u64;
                // Kept for `uploads` only while small: the large bodies are hashed.
                let mut kept = Vec::new();
                let mut complete = true;
                while let Some(frame) = body.frame().await {
                    let Ok(frame) = frame else {
                        complete = false;
                        break;
                    };
                    if let Some(d) = frame.data_ref() {
                        if len == 0 && gated {
                            self.first_chunk.notify_one();
                        }
                        len += d.len() as u64;
                        hash.update(d);
                        if kept.len() < 4096 {
                            kept.extend_from_slice(d);
                        }
                    }
                }
                self.uploads.lock().unwrap().push(Upload {
                    uri,
                    body: kept,
                    complete,
                });
                text(format!("{} {}", hex(&hash.finalize()), len))
            }
            "/download" => {
                let size = query.get("size").and_then(|s| s.parse().ok()).unwrap_or(0);
                Response::new(PatternBody::new(size, 64 * 1024).boxed())
            }
            "/gated" => {
                let gate = Arc::clone(&self.gate);
                Response::new(
                    GatedBody {
                        first: Some(Bytes::from_static(b"first")),
                        gate,
                        waiting: None,
                    }
                    .boxed(),
                )
            }
            "/hold" => {
                self.gate.notified().await;
                text("released".into())
            }
            "/links" => {
                // LINKS_PAGE encoded as `enc` asks, sent in two chunks split at byte `split`.
                let plain = match query.get("page").map(String::as_str) {
                    Some("edge") => EDGE_LINKS_PAGE.to_string(),
                    _ => links_page(&self.name),
                };
                let enc = query.get("enc").map(String::as_str).unwrap_or("identity");
                let body = encode(enc, plain.as_bytes());
                let split = query
                    .get("split")
                    .and_then(|s| s.parse::<usize>().ok())
                    .unwrap_or(0)
                    .min(body.len());
                let chunks = vec![
                    Bytes::copy_from_slice(&body[..split]),
                    Bytes::copy_from_slice(&body[split..]),
                ];
                let mut r = Response::new(ChunkedBody { chunks }.boxed());
                let h = r.headers_mut();
                h.insert("content-type", "text/html; charset=utf-8".parse().unwrap());
                h.insert("etag", "\"v1\"".parse().unwrap());
                if enc != "identity" {
                    h.insert("content-encoding", enc.parse().unwrap());
                }
                if query.contains_key("page") {
                    h.insert("location", "HTTP://Intranet.Test:80/next".parse().unwrap());
                }
                r
            }
            "/health" => {
                let mut r = text(format!("{} health", self.name));
                if !self.healthy.load(Ordering::SeqCst) {
                    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                }
                r
            }
            "/status" => {
                let code = query
                    .get("code")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(200);
                let mut r = text(self.name.clone());
                *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
                r
            }
            "/moved" => {
                let mut r = text(String::new());
                *r.status_mut() = StatusCode::FOUND;
                let h = r.headers_mut();
                h.insert(
                    "location",
                    "http://intranet.test/login?next=%2F".parse().unwrap(),
                );
                h.insert(
                    "set-cookie",
                    "sid=1; Domain=intranet.test; Path=/; HttpOnly"
                        .parse()
                        .unwrap(),
                );
                r
            }
            "/headers" => {
                let mut r = text(self.name.clone());
                let h = r.headers_mut();
                h.insert("connection", "x-backend-private".parse().unwrap());
                h.insert("x-backend-private", "1".parse().unwrap());
                h.insert("keep-alive", "timeout=5".parse().unwrap());
                r
            }
            _ => text(self.name.clone()),
        };
        resp.headers_mut()
            .insert("x-backend", self.name.parse().unwrap());
        resp
    }
}

/// `/ws`: a WebSocket endpoint that echoes every text and binary message, prefixed with the
/// backend's name so a test sees which member answered.
fn websocket_echo(mut req: Request<Incoming>, name: &str) -> Response<BoxBody> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::{Message, Role};
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        let mut r = text("not a websocket request".into());
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let backend = HeaderValue::from_str(name).unwrap();
    let name = name.to_string();
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            let reply = match msg {
                Message::Text(t) => Message::text(format!("{name}: {t}")),
                Message::Binary(b) => Message::binary(b),
                Message::Close(_) => break,
                _ => continue,
            };
            if ws.send(reply).await.is_err() {
                break;
            }
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert("upgrade", "websocket".parse().unwrap());
    h.insert("connection", "Upgrade".parse().unwrap());
    h.insert("sec-websocket-accept", accept.parse().unwrap());
    h.insert("x-backend", backend);
    r
}

/// The page `/links?page=edge` serves: links to the internal name `intranet.test` in other
/// cases, with a port, JSON-escaped, and look-alike hosts that are not it.
pub const EDGE_LINKS_PAGE: &str = concat!(
    "<a href=\"HTTP://INTRANET.TEST/a\">A</a> <a href='http://Intranet.Test/b'>B</a>\n",
    "<style>body { background: URL(HTTPS://INTRANET.TEST/c.png) }</style>\n",
    "<a href=\"http://intranet.test.example.org/\">other</a> http://intranet.testhost/ \n",
    "<a href=\"http://intranet.test:80/x\">port</a> <img src=\"//intranet.test:8080/y.png\">\n",
    "<script>var u = \"http:\\/\\/intranet.test\\/api\"; var v = \"http:\\/\\/intranet.tester\\/\";</script>\n",
    "See http://intranet.test. Bye http://intranet.test",
);

/// The page `/links` serves: absolute links to the internal name `intranet.test`.
pub fn links_page(name: &str) -> String {
    let mut page = format!("<html><body><h1>{name}</h1>\n");
    for i in 0..40 {
        page.push_str(&format!(
            "<p>Item {i}: <a href=\"http://intranet.test/item/{i}\">open</a> or \
             <img src=\"//intranet.test/img/{i}.png\"> - intranet.test stays as text.</p>\n"
        ));
    }
    page.push_str("</body></html>\n");
    page
}

/// `data` in a content coding: identity, gzip, deflate or br.
pub fn encode(enc: &str, data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    match enc {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                w.write_all(data).unwrap();
            }
            out
        }
        _ => data.to_vec(),
    }
}

/// `data` decoded from a content coding.
pub fn decode(enc: Option<&str>, data: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    match enc {
        Some("gzip") => {
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .unwrap();
        }
        Some("deflate") => {
            flate2::read::ZlibDecoder::new(data)
                .read_to_end(&mut out)
                .unwrap();
        }
        Some("br") => {
            brotli::Decompressor::new(data, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        _ => out.extend_from_slice(data),
    }
    out
}

/// A body of given chunks with no announced length (sent chunked, one HTTP chunk each).
struct ChunkedBody {
    chunks: Vec<Bytes>,
}

impl Body for ChunkedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        while !self.chunks.is_empty() {
            let c = self.chunks.remove(0);
            if !c.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(c))));
            }
        }
        Poll::Ready(None)
    }
}

fn text(s: String) -> Response<BoxBody> {
    Response::new(Full::new(Bytes::from(s)).map_err(|e| match e {}).boxed())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// A body that sends `first`, then waits for the gate, then sends `second`.
struct GatedBody {
    first: Option<Bytes>,
    gate: Arc<Notify>,
    waiting: Option<Pin<Box<dyn Future<Output = ()> + Send + Sync>>>,
}

impl Body for GatedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(first) = self.first.take() {
            let gate = Arc::clone(&self.gate);
            self.waiting = Some(Box::pin(async move { gate.notified().await }));
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        match self.waiting.as_mut() {
            Some(w) => match w.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.waiting = None;
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"second")))))
                }
                Poll::Pending => Poll::Pending,
            },
            None => Poll::Ready(None),
        }
    }
}

/// A deterministic byte pattern of a given size, streamed in chunks.
pub struct PatternBody {
    remaining: u64,
    offset: u64,
    chunk: usize,
    /// Whether the size is announced (hyper then sends Content-Length rather than chunks).
    announce: bool,
}

impl PatternBody {
    pub fn new(size: u64, chunk: usize) -> PatternBody {
        PatternBody {
            remaining: size,
            offset: 0,
            chunk,
            announce: true,
        }
    }

    /// The same body sent with chunked framing.
    pub fn without_length(mut self) -> PatternBody {
        self.announce = false;
        self
    }

    /// The whole pattern in memory, for comparing.
    pub fn bytes(size: u64) -> Vec<u8> {
        (0..size).map(pattern_byte).collect()
    }
}

fn pattern_byte(i: u64) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 8)) as u8
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = (self.chunk as u64).min(self.remaining);
        let start = self.offset;
        let chunk: Vec<u8> = (start..start + n).map(pattern_byte).collect();
        self.offset += n;
        self.remaining -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.announce {
            SizeHint::with_exact(self.remaining)
        } else {
            SizeHint::default()
        }
    }
}

/// A running proxy built from config text.
pub struct Proxy {
    pub running: Option<farmgate::Running>,
    pub addr: SocketAddr,
}

impl Proxy {
    pub async fn start(config: &str) -> Proxy {
        let config = farmgate::Config::parse(config, "test.toml")
            .unwrap_or_else(|e| panic!("test config: {e}"));
        let running = farmgate::start(config).await.expect("proxy starts");
        let addr = running.listeners()[0].1;
        Proxy {
            running: Some(running),
            addr,
        }
    }

    pub fn running(&self) -> &farmgate::Running {
        self.running.as_ref().expect("running")
    }

    pub fn farm(&self, name: &str) -> Arc<farmgate::farm::Farm> {
        let generation = self.running().proxy.generation();
        generation
            .farms
            .iter()
            .find(|f| f.name == name)
            .cloned()
            .expect("farm exists")
    }
}

/// The name of an environment variable no one sets. Test configs read their admin token and
/// affinity key from it (`token_env`, `affinity_key_env`) rather than from the variables
/// farmgate reads by default, which the environment the tests run in may set.
pub const UNSET_ENV: &str = "FARMGATE_TESTS_READ_NOTHING_FROM_HERE";

/// Config text for one listener, one rule for `*`, one farm of the given backends.
pub fn simple_config(backends: &[&Backend], rule_extra: &str, proxy_extra: &str) -> String {
    let even: Vec<(&Backend, u32)> = backends.iter().map(|b| (*b, 1)).collect();
    weighted_config(&even, "", rule_extra, proxy_extra)
}

/// [`simple_config`] with a weight per member and lines for the farm (`farm_extra`).
pub fn weighted_config(
    backends: &[(&Backend, u32)],
    farm_extra: &str,
    rule_extra: &str,
    proxy_extra: &str,
) -> String {
    let members: Vec<String> = backends
        .iter()
        .map(|(b, w)| {
            format!(
                "{{ name = \"{}\", host = \"127.0.0.1\", port = {}, weight = {w} }}",
                b.name,
                b.port()
            )
        })
        .collect();
    format!(
        r#"
[proxy]
affinity_key_env = "{UNSET_ENV}"
{proxy_extra}
[access_log]
format = "off"
[[listeners]]
name = "web"
bind = "127.0.0.1:0"
[[rules]]
name = "site"
public_names = ["*"]
farm = "farm"
{rule_extra}
[[farms]]
name = "farm"
members = [{}]
{farm_extra}
"#,
        members.join(", ")
    )
}

/// Which backend served each of `n` requests for `path` (by its `x-backend`), counted; every
/// answer must be 200.
pub async fn spread(client: &mut Client, n: usize, path: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let a = client.get("www.example.com", path).await;
        assert_eq!(a.status, 200, "{}", a.text());
        *counts
            .entry(a.header("x-backend").unwrap_or("").to_string())
            .or_default() += 1;
    }
    counts
}

/// A wasm guest built by the build script (`plugins/` and `examples/` crates), by crate name.
pub fn guest(crate_name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("FARMGATE_GUEST_DIR"))
        .join(format!("{}.wasm", crate_name.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|e| panic!("guest {}: {e}", path.display()))
}

/// A keep-alive HTTP/1.1 client connection to the proxy.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<BoxBody>,
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect to proxy");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        Client { sender }
    }

    pub async fn send(&mut self, req: Request<BoxBody>) -> Response<Incoming> {
        bounded("proxy answers", async {
            self.sender.ready().await.expect("client connection ready");
            self.sender
                .send_request(req)
                .await
                .expect("response from proxy")
        })
        .await
    }

    pub async fn request(&mut self, req: Request<BoxBody>) -> Answer {
        let resp = self.send(req).await;
        let (parts, body) = resp.into_parts();
        let body = bounded("response body", body.collect())
            .await
            .expect("body")
            .to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Answer {
        self.request(get(host, path)).await
    }
}

pub fn get(host: &str, path: &str) -> Request<BoxBody> {
    Request::get(path)
        .header("host", host)
        .body(empty())
        .unwrap()
}

pub fn empty() -> BoxBody {
    Full::new(Bytes::new()).map_err(|e| match e {}).boxed()
}

/// One request on a new connection.
pub async fn get_once(addr: SocketAddr, host: &str, path: &str) -> Answer {
    Client::connect(addr).await.get(host, path).await
}

/// A port on 127.0.0.1 that refuses connections for as long as this lives: a socket bound to
/// it that never listens, so nothing else can take the port meanwhile. Displays as the port.
pub struct ClosedPort {
    port: u16,
    _socket: tokio::net::TcpSocket,
}

impl std::fmt::Display for ClosedPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.port)
    }
}

/// A port with nothing listening on 127.0.0.1, held (see [`ClosedPort`]).
pub async fn closed_port() -> ClosedPort {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().unwrap())
        .expect("bind a port");
    let port = socket.local_addr().expect("bound address").port();
    ClosedPort {
        port,
        _socket: socket,
    }
}

/// Puts `bytes` into the plugin folder `dir` as `<name>.wasm` the way an operator should: written
/// beside it, then renamed in, so farmgate never reads half a file.
pub fn drop_plugin(dir: &std::path::Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.partial"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{name}.wasm"))).unwrap();
}

/// Replaces the config file at `path` whole (written beside it, then renamed in).
pub fn write_config(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("toml.partial");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A running farmgate on a config file `farmgate.toml` in `dir` holding `text`, and the file.
pub async fn start_on_file(dir: &std::path::Path, text: &str) -> (Proxy, std::path::PathBuf) {
    let path = dir.join("farmgate.toml");
    write_config(&path, text);
    let config = farmgate::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let running = farmgate::start(config).await.expect("starts");
    let addr = running.listeners()[0].1;
    (
        Proxy {
            running: Some(running),
            addr,
        },
        path,
    )
}
