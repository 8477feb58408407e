//! The client listeners and their accept loops: binding, TLS acceptors, the connection budget,
//! serving each connection (behind the framing checks), and changing the set while running.
//!
//! A reload hands over a [`Plan`] made from the new config: listeners whose bind address is new
//! are bound (and their certificates loaded) before anything is applied, so a reload that cannot
//! bind changes nothing. Applying it starts the new loops, stops the loops of listeners that are
//! gone (their connections finish what they are doing, up to the grace period), and restarts on
//! the same socket the loops whose settings changed (name, HTTP/2, certificates, client limits),
//! so no connection is refused in between. Loops whose listener did not change are not touched.
//!
//! What this module must not do: contain request logic (that is `proxy`), or apply a plan that
//! did not come whole from a validated config.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::{CertificateConfig, Config, ListenerConfig};
use crate::framing::{Checked, Shared};
use crate::generation::ConnInfo;
use crate::preface::{self, Rewind};
use crate::proxy::Proxy;
use crate::tls::CertStore;

/// What an accept loop takes from the config; when any of it changes, a reload restarts the
/// loop on the same socket.
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    name: Arc<str>,
    http2: bool,
    certificates: Vec<CertificateConfig>,
    header_read_timeout: Duration,
    client_idle_timeout: Duration,
    max_headers: usize,
    max_header_bytes: usize,
    tls_handshake_timeout: Duration,
}

impl Settings {
    fn of(config: &Config, l: &ListenerConfig) -> Settings {
        let p = &config.proxy;
        Settings {
            name: Arc::from(l.name.as_str()),
            http2: l.http2,
            certificates: l.certificates.clone(),
            header_read_timeout: p.header_read_timeout,
            client_idle_timeout: p.client_idle_timeout,
            max_headers: p.max_headers,
            max_header_bytes: p.max_header_bytes,
            tls_handshake_timeout: p.tls_handshake_timeout,
        }
    }
}

/// A task aborted when dropped (a certificate watcher belongs to its listener).
struct Owned(JoinHandle<()>);

impl Drop for Owned {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A TLS listener's acceptor and the watcher that reloads its certificate files.
struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    _watcher: Owned,
}

impl Tls {
    fn load(l: &ListenerConfig) -> Result<Option<Tls>, String> {
        if !l.is_tls() {
            return Ok(None);
        }
        let store = Arc::new(CertStore::load(&l.name, &l.certificates)?);
        let watcher = store
            .watch()
            .map_err(|e| format!("cannot watch the certificate files: {e}"))?;
        Ok(Some(Tls {
            acceptor: store.acceptor(l.http2),
            _watcher: Owned(watcher),
        }))
    }
}

/// How a running loop is told to stop.
enum Stop {
    /// The listener is gone: close the socket.
    Remove,
    /// The listener's settings changed: hand the socket back for the next loop.
    Restart(oneshot::Sender<TcpListener>),
}

struct Loop {
    settings: Settings,
    /// As configured (with port 0, the bound port differs).
    bind: SocketAddr,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<Stop>>,
    task: JoinHandle<()>,
    _tls: Option<Tls>,
}

/// One listener of a new config, ready to serve.
struct Ready {
    settings: Settings,
    bind: SocketAddr,
    socket: Socket,
    tls: Option<Tls>,
}

enum Socket {
    Bound(TcpListener),
    /// The socket of the running loop at this index.
    Reuse(usize),
}

/// What a reload changes in the listeners, everything fallible already done.
pub struct Plan {
    ready: Vec<Ready>,
    max_connections: usize,
}

/// At most `max` client connections at once.
struct Budget {
    max: usize,
    permits: Arc<Semaphore>,
}

impl Budget {
    fn new(max: usize) -> Budget {
        Budget {
            max,
            permits: Arc::new(Semaphore::new(max)),
        }
    }
}

/// What every accept loop shares.
struct Spawner {
    proxy: Arc<Proxy>,
    shutdown: watch::Receiver<bool>,
    /// One budget of client connections shared by every listener; a reload that changes
    /// `max_connections` installs a new one (open connections keep the permit they hold).
    connections: Arc<ArcSwap<Budget>>,
}

/// The accept loops.
pub struct Listeners {
    spawner: Spawner,
    /// Name and bound address of every running listener, for callers that must not wait on a
    /// reload.
    bound: ArcSwap<Vec<(String, SocketAddr)>>,
    loops: tokio::sync::Mutex<Vec<Loop>>,
    /// Loops that were stopped and are letting their connections finish; awaited at shutdown.
    draining: Mutex<Vec<JoinHandle<()>>>,
}

impl Listeners {
    /// Starts a loop for every listener of `config` on the sockets the caller bound (index into
    /// the config's listeners, socket).
    pub fn start(
        proxy: Arc<Proxy>,
        config: &Config,
        bound: Vec<(usize, TcpListener)>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<Listeners>, (String, String)> {
        let max = config.proxy.max_connections;
        let spawner = Spawner {
            proxy,
            shutdown,
            connections: Arc::new(ArcSwap::from_pointee(Budget::new(max))),
        };
        let mut loops = Vec::new();
        for (i, socket) in bound {
            let l = &config.listeners[i];
            let tls = Tls::load(l).map_err(|e| (l.name.clone(), e))?;
            let ready = Ready {
                settings: Settings::of(config, l),
                bind: l.bind,
                socket: Socket::Bound(socket),
                tls,
            };
            loops.push(spawner.spawn(ready).map_err(|e| (l.name.clone(), e))?);
        }
        Ok(Arc::new(Listeners {
            spawner,
            bound: ArcSwap::from_pointee(addresses(&loops)),
            loops: tokio::sync::Mutex::new(loops),
            draining: Mutex::new(Vec::new()),
        }))
    }

    /// The bound address of every listener, by name.
    pub fn bound(&self) -> Arc<Vec<(String, SocketAddr)>> {
        self.bound.load_full()
    }

    /// Binds what `config` adds and loads its certificates; nothing running changes.
    pub async fn plan(&self, config: &Config) -> Result<Plan, String> {
        let loops = self.loops.lock().await;
        let mut claimed = vec![false; loops.len()];
        let mut ready = Vec::new();
        for l in &config.listeners {
            let settings = Settings::of(config, l);
            // The same listener: same name and bind address; else a renamed one on the same
            // (fixed) address.
            let old = loops
                .iter()
                .enumerate()
                .position(|(i, o)| !claimed[i] && o.bind == l.bind && *o.settings.name == *l.name)
                .or_else(|| {
                    loops
                        .iter()
                        .enumerate()
                        .position(|(i, o)| !claimed[i] && o.bind == l.bind && l.bind.port() != 0)
                });
            let socket = match old {
                Some(i) => {
                    claimed[i] = true;
                    Socket::Reuse(i)
                }
                None => Socket::Bound(TcpListener::bind(l.bind).await.map_err(|e| {
                    format!(
                        "{}: listener \"{}\": cannot bind {}: {e}; nothing was applied",
                        config.origin, l.name, l.bind
                    )
                })?),
            };
            let unchanged = matches!(socket, Socket::Reuse(i) if loops[i].settings == settings);
            let tls = if unchanged {
                None
            } else {
                Tls::load(l).map_err(|e| {
                    format!(
                        "{}: listener \"{}\": {e}; nothing was applied",
                        config.origin, l.name
                    )
                })?
            };
            ready.push(Ready {
                settings,
                bind: l.bind,
                socket,
                tls,
            });
        }
        Ok(Plan {
            ready,
            max_connections: config.proxy.max_connections,
        })
    }

    /// Applies `plan`: new loops start, changed ones restart on their socket, the others stop.
    /// Returns a summary of what changed.
    pub async fn apply(&self, plan: Plan) -> String {
        let mut loops = self.loops.lock().await;
        let budget = &self.spawner.connections;
        if budget.load().max != plan.max_connections {
            budget.store(Arc::new(Budget::new(plan.max_connections)));
        }
        let mut old: Vec<Option<Loop>> = loops.drain(..).map(Some).collect();
        let (mut added, mut restarted, mut kept) = (0, 0, 0);
        let mut next = Vec::new();
        for mut ready in plan.ready {
            let reuse = match ready.socket {
                Socket::Reuse(i) => old.get_mut(i).and_then(Option::take),
                Socket::Bound(_) => None,
            };
            let Some(mut running) = reuse else {
                if matches!(ready.socket, Socket::Bound(_)) {
                    match self.spawner.spawn(ready) {
                        Ok(l) => {
                            added += 1;
                            next.push(l);
                        }
                        Err(e) => tracing::error!(error = %e, "listener not started"),
                    }
                }
                continue;
            };
            if running.settings == ready.settings {
                kept += 1;
                next.push(running);
                continue;
            }
            // Restart on the same socket: the old loop stops accepting and hands it over.
            let (tx, rx) = oneshot::channel();
            if let Some(stop) = running.stop.take() {
                let _ = stop.send(Stop::Restart(tx));
            }
            self.retire(running.task);
            match rx.await {
                Ok(socket) => {
                    ready.socket = Socket::Bound(socket);
                    match self.spawner.spawn(ready) {
                        Ok(l) => {
                            restarted += 1;
                            next.push(l);
                        }
                        Err(e) => tracing::error!(error = %e, "listener not restarted"),
                    }
                }
                Err(_) => tracing::error!(
                    listener = %running.settings.name,
                    "the listener's accept loop ended before handing over its socket"
                ),
            }
        }
        let mut removed = 0;
        for mut gone in old.into_iter().flatten() {
            tracing::info!(listener = %gone.settings.name, addr = %gone.addr, "listener removed; its connections finish their requests");
            if let Some(stop) = gone.stop.take() {
                let _ = stop.send(Stop::Remove);
            }
            self.retire(gone.task);
            removed += 1;
        }
        self.bound.store(Arc::new(addresses(&next)));
        *loops = next;
        format!(
            "listeners: {added} added, {removed} removed, {restarted} restarted, {kept} unchanged"
        )
    }

    /// Waits for every loop to stop and drain (after the shutdown signal).
    pub async fn join(&self) {
        let loops = std::mem::take(&mut *self.loops.lock().await);
        for l in loops {
            let _ = l.task.await;
        }
        let draining =
            std::mem::take(&mut *self.draining.lock().unwrap_or_else(|e| e.into_inner()));
        for t in draining {
            let _ = t.await;
        }
    }

    fn retire(&self, task: JoinHandle<()>) {
        let mut draining = self.draining.lock().unwrap_or_else(|e| e.into_inner());
        draining.retain(|t| !t.is_finished());
        draining.push(task);
    }
}

impl Spawner {
    fn spawn(&self, ready: Ready) -> Result<Loop, String> {
        let Socket::Bound(socket) = ready.socket else {
            return Err(format!(
                "listener \"{}\" has no socket to accept on",
                ready.settings.name
            ));
        };
        let addr = socket
            .local_addr()
            .map_err(|e| format!("listener \"{}\": {e}", ready.settings.name))?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(
            Arc::clone(&self.proxy),
            Arc::clone(&self.connections),
            socket,
            ready.settings.clone(),
            ready.tls.as_ref().map(|t| t.acceptor.clone()),
            self.shutdown.clone(),
            stopped,
        ));
        Ok(Loop {
            settings: ready.settings,
            bind: ready.bind,
            addr,
            stop: Some(stop),
            task,
            _tls: ready.tls,
        })
    }
}

/// Name and bound address of each loop.
fn addresses(loops: &[Loop]) -> Vec<(String, SocketAddr)> {
    loops
        .iter()
        .map(|l| (l.settings.name.to_string(), l.addr))
        .collect()
}

async fn accept_loop(
    proxy: Arc<Proxy>,
    connections: Arc<ArcSwap<Budget>>,
    listener: TcpListener,
    settings: Settings,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
    mut stop: oneshot::Receiver<Stop>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Limits on what a client may send: at most max_headers headers and max_header_bytes bytes
    // of head (431 beyond either). The framing checks (request smuggling defences) leave heads
    // over `max_head` to hyper, and keep the time limits on a head and between requests
    // (hyper's header read timeout cannot tell the two apart, so it is off).
    let max_head = settings.max_header_bytes.max(8192);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_headers(settings.max_headers)
        .max_buf_size(max_head);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
    let head_timeout = settings.header_read_timeout;
    let handshake_timeout = settings.tls_handshake_timeout;
    let waits = (settings.header_read_timeout, settings.client_idle_timeout);
    let stopped = loop {
        // At max_connections, wait for a connection to close before accepting another: the
        // kernel's queue holds the rest, and file descriptors never run out.
        let budget = Arc::clone(&connections.load().permits);
        let permit = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break None,
            s = &mut stop => break s.ok(),
            permit = budget.acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break None,
            },
        };
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break None,
            s = &mut stop => break s.ok(),
            accepted = listener.accept() => accepted,
        };
        let (stream, client) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors or a connection reset before accept: back off briefly
                // instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::new(Shared::default());
        let logger = Arc::clone(&proxy);
        shared.on_refusal(move |reason| logger.log_refused(client, reason));
        let info = Arc::new(ConnInfo {
            listener: Arc::clone(&settings.name),
            client,
            client_addr: crate::headers::ClientAddr::new(client.ip()),
            proto: if tls.is_some() { "https" } else { "http" },
            framing: Arc::clone(&shared),
        });
        let proxy = Arc::clone(&proxy);
        let svc = service_fn(move |req| {
            let proxy = Arc::clone(&proxy);
            let info = Arc::clone(&info);
            async move { Ok::<_, Infallible>(proxy.handle(req, &info).await) }
        });
        let watcher = graceful.watcher();
        let Some(acceptor) = &tls else {
            // A listener without HTTP/2 serves HTTP/1.1 only; with it, HTTP/2 with prior
            // knowledge as well, told apart by the preface.
            let only_h1 = !settings.http2;
            let builder = builder.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let stream = if only_h1 {
                    match http1_only(stream, head_timeout, client).await {
                        Some(s) => s,
                        None => return,
                    }
                } else {
                    Rewind::new(stream)
                };
                let stream = Checked::new(stream, max_head, waits, shared, client);
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .into_owned();
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(%client, error = %e, "client connection ended with an error");
                }
            });
            continue;
        };
        // The TLS handshake runs on the connection's own task, bounded, so a slow client never
        // holds up the accept loop.
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%client, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%client, timeout = ?handshake_timeout, "TLS handshake timed out");
                    return;
                }
            };
            // Exactly the protocol ALPN agreed (RFC 9113 §3.2); without ALPN, HTTP/1.1.
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
            let stream = if h2 {
                match preface::read(stream, head_timeout).await {
                    Ok((preface::Opening::H2, s)) => s,
                    Ok((preface::Opening::Other, mut s)) => {
                        tracing::debug!(%client, "no HTTP/2 preface after ALPN h2; GOAWAY(PROTOCOL_ERROR)");
                        preface::refuse(s.get_mut()).await;
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(%client, error = %e, "client connection ended before its preface");
                        return;
                    }
                }
            } else {
                match http1_only(stream, head_timeout, client).await {
                    Some(s) => s,
                    None => return,
                }
            };
            let stream = Checked::new(stream, max_head, waits, shared, client);
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%client, error = %e, "client connection ended with an error");
            }
        });
    };
    match stopped {
        Some(Stop::Restart(handback)) => {
            let _ = handback.send(listener);
        }
        _ => drop(listener),
    }
    // The grace period of the config in force when the loop stops.
    let grace = proxy.generation().config.proxy.shutdown_grace;
    let open = graceful.count();
    if open > 0 {
        tracing::info!(listener = %settings.name, connections = open, ?grace, "draining client connections");
    }
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(listener = %settings.name, ?grace, "grace period over; closing remaining connections");
    }
}

/// What an HTTP/1.1-only connection answers a client that opens with the HTTP/2 preface.
const H2_ON_HTTP1: &[u8] =
    b"HTTP/1.1 505 HTTP Version Not Supported\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// A connection that is to speak HTTP/1.1 only: hyper's version detection would take an HTTP/2
/// preface for HTTP/2, so a client that opens with one is answered 505 here and closed. `None`:
/// the connection is over.
async fn http1_only<IO>(stream: IO, timeout: Duration, client: SocketAddr) -> Option<Rewind<IO>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    match preface::read(stream, timeout).await {
        Ok((preface::Opening::Other, s)) => Some(s),
        Ok((preface::Opening::H2, mut s)) => {
            tracing::debug!(%client, "HTTP/2 preface on an HTTP/1.1 connection; answered 505");
            let io = s.get_mut();
            let _ = io.write_all(H2_ON_HTTP1).await;
            let _ = io.shutdown().await;
            None
        }
        Err(e) => {
            tracing::debug!(%client, error = %e, "client connection ended before its first request");
            None
        }
    }
}
