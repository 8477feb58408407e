//! The upstream connection pool, shared by every rule and farm in the process.
//!
//! Connections are keyed by [`PeerKey`]: the resolved socket address (and, with HTTPS bridging,
//! the TLS identity), never the host name. TMG keyed by host name, so farms that named one server
//! by different names kept opening and closing connections to it until clients got HTTP 500s;
//! here two names for one address share one set of connections.
//!
//! The key map is copy-on-write behind arc-swap (new keys are rare), and each key has its own
//! short lock around its idle list, so no lock is shared by all requests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::ReqBody;

/// What identifies interchangeable upstream connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey {
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub idle_timeout: Duration,
    pub max_idle_per_peer: usize,
    pub connect_timeout: Duration,
}

pub struct Pool {
    peers: ArcSwap<HashMap<PeerKey, Arc<Peer>>>,
    /// Serialises the rare insertion of a new key (readers never take it).
    insert: Mutex<()>,
    settings: PoolSettings,
}

/// One pool key: its idle connections and counters.
pub struct Peer {
    pub key: PeerKey,
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    pub opened: AtomicU64,
    pub reused: AtomicU64,
    pub closed: AtomicU64,
}

struct Idle {
    sender: http1::SendRequest<ReqBody>,
    since: Instant,
}

/// A connection checked out of the pool for one request.
pub struct Pooled {
    pub sender: http1::SendRequest<ReqBody>,
    peer: Arc<Peer>,
    /// Whether this connection served an earlier request (and so may have gone stale).
    pub reused: bool,
}

/// Counters of one pool key, for logs, the admin API and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStats {
    pub key: PeerKey,
    pub opened: u64,
    pub reused: u64,
    pub closed: u64,
    pub idle: usize,
}

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {addr} timed out after {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("connect to {addr} failed: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP handshake with {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        source: hyper::Error,
    },
}

impl Pool {
    pub fn new(settings: PoolSettings) -> Pool {
        Pool {
            peers: ArcSwap::from_pointee(HashMap::new()),
            insert: Mutex::new(()),
            settings,
        }
    }

    pub fn settings(&self) -> PoolSettings {
        self.settings
    }

    fn peer(&self, key: PeerKey) -> Arc<Peer> {
        if let Some(p) = self.peers.load().get(&key) {
            return Arc::clone(p);
        }
        let _guard = self.insert.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.peers.load_full();
        if let Some(p) = current.get(&key) {
            return Arc::clone(p);
        }
        let peer = Arc::new(Peer {
            key,
            idle: Mutex::new(Vec::new()),
            max_idle: self.settings.max_idle_per_peer,
            opened: AtomicU64::new(0),
            reused: AtomicU64::new(0),
            closed: AtomicU64::new(0),
        });
        let mut next = HashMap::clone(&current);
        next.insert(key, Arc::clone(&peer));
        self.peers.store(Arc::new(next));
        peer
    }

    /// An idle connection to `addr` if a live one is pooled, else a new one.
    pub async fn checkout(&self, addr: SocketAddr) -> Result<Pooled, ConnectError> {
        let peer = self.peer(PeerKey { addr });
        while let Some(mut sender) = peer.take_idle(self.settings.idle_timeout) {
            // A connection returned as its last response ended may need a moment before the
            // dispatcher takes the next request; a closed one answers with an error here.
            if sender.ready().await.is_ok() {
                peer.reused.fetch_add(1, Ordering::Relaxed);
                return Ok(Pooled {
                    sender,
                    peer,
                    reused: true,
                });
            }
        }
        self.connect(peer).await
    }

    /// A new connection, bypassing idle ones (used after a pooled one turned out stale).
    pub async fn connect_new(&self, addr: SocketAddr) -> Result<Pooled, ConnectError> {
        self.connect(self.peer(PeerKey { addr })).await
    }

    async fn connect(&self, peer: Arc<Peer>) -> Result<Pooled, ConnectError> {
        let addr = peer.key.addr;
        let timeout = self.settings.connect_timeout;
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Err(_) => return Err(ConnectError::Timeout { addr, timeout }),
            Ok(Err(source)) => return Err(ConnectError::Io { addr, source }),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ConnectError::Handshake { addr, source })?;
        peer.opened.fetch_add(1, Ordering::Relaxed);
        let counted = Arc::clone(&peer);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(peer = %counted.key.addr, error = %e, "upstream connection ended with an error");
            }
            counted.closed.fetch_add(1, Ordering::Relaxed);
        });
        Ok(Pooled {
            sender,
            peer,
            reused: false,
        })
    }

    /// Closes idle connections older than the idle timeout. Called periodically.
    pub fn reap_idle(&self) {
        let timeout = self.settings.idle_timeout;
        for peer in self.peers.load().values() {
            let mut idle = peer.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.retain(|i| i.since.elapsed() < timeout && !i.sender.is_closed());
        }
    }

    /// Runs [`Pool::reap_idle`] every half idle timeout until the task is dropped.
    pub async fn reap_loop(self: Arc<Self>) {
        let every = (self.settings.idle_timeout / 2).max(Duration::from_millis(500));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.reap_idle();
        }
    }

    pub fn stats(&self) -> Vec<PeerStats> {
        let mut out: Vec<PeerStats> = self
            .peers
            .load()
            .values()
            .map(|p| PeerStats {
                key: p.key,
                opened: p.opened.load(Ordering::Relaxed),
                reused: p.reused.load(Ordering::Relaxed),
                closed: p.closed.load(Ordering::Relaxed),
                idle: p.idle.lock().map(|i| i.len()).unwrap_or(0),
            })
            .collect();
        out.sort_by_key(|s| s.key);
        out
    }

    pub fn stats_for(&self, addr: SocketAddr) -> Option<PeerStats> {
        self.stats().into_iter().find(|s| s.key.addr == addr)
    }
}

impl Peer {
    /// The most recently returned idle connection that is still fresh; stale ones are dropped
    /// (which closes them).
    fn take_idle(&self, timeout: Duration) -> Option<http1::SendRequest<ReqBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(i) = idle.pop() {
            if i.since.elapsed() < timeout && !i.sender.is_closed() {
                return Some(i.sender);
            }
        }
        None
    }
}

impl Pooled {
    pub fn addr(&self) -> SocketAddr {
        self.peer.key.addr
    }

    /// Puts a connection whose exchange completed back for reuse.
    pub fn checkin(self) {
        if self.sender.is_closed() {
            return;
        }
        let mut idle = self.peer.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.peer.max_idle {
            idle.push(Idle {
                sender: self.sender,
                since: Instant::now(),
            });
        }
    }
}
