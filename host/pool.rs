//! The upstream connection pool, shared by every rule and farm in the process.
//!
//! Connections are keyed by [`PeerKey`]: the resolved socket address (and, with HTTPS bridging,
//! the TLS identity), never the host name. TMG keyed by host name, so farms that named one server
//! by different names kept opening and closing connections to it until clients got HTTP 500s;
//! here two names for one address share one set of connections.
//!
//! The key map is copy-on-write behind arc-swap (new keys are rare), and each key has its own
//! short lock around its idle list, so no lock is shared by all requests.
//!
//! HTTP/1.1 connections carry one exchange at a time and wait in the idle list between them; an
//! HTTP/2 connection carries many at once, so a key keeps one shared HTTP/2 connection that every
//! request clones. How connections are opened (TCP, TLS, h1 or h2) is [`crate::bridge`]'s.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hyper::client::conn::{http1, http2};

use crate::upstream::{ConnectError, PeerKey, ReqBody, Route, Sender};

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
    /// The HTTP/2 connection every request to this key shares, while it is open.
    shared: Mutex<Option<http2::SendRequest<ReqBody>>>,
    /// Held while an HTTP/2 key opens its connection, so requests that arrive meanwhile wait
    /// for it instead of each opening their own.
    opening: tokio::sync::Mutex<()>,
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
    pub sender: Sender,
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

    fn peer(&self, key: &PeerKey) -> Arc<Peer> {
        if let Some(p) = self.peers.load().get(key) {
            return Arc::clone(p);
        }
        let _guard = self.insert.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.peers.load_full();
        if let Some(p) = current.get(key) {
            return Arc::clone(p);
        }
        let peer = Arc::new(Peer {
            key: key.clone(),
            idle: Mutex::new(Vec::new()),
            shared: Mutex::new(None),
            opening: tokio::sync::Mutex::new(()),
            max_idle: self.settings.max_idle_per_peer,
            opened: AtomicU64::new(0),
            reused: AtomicU64::new(0),
            closed: AtomicU64::new(0),
        });
        let mut next = HashMap::clone(&current);
        next.insert(key.clone(), Arc::clone(&peer));
        self.peers.store(Arc::new(next));
        peer
    }

    /// A connection for `key` (opened along `route`): the shared HTTP/2 connection if one is
    /// open, else an idle HTTP/1.1 one if a live one is pooled, else a new one.
    pub async fn checkout(&self, key: &PeerKey, route: &Route) -> Result<Pooled, ConnectError> {
        let peer = self.peer(key);
        let holder = Arc::clone(&peer);
        let _opening = if key.http2 {
            if let Some(p) = Self::shared(&peer).await {
                return Ok(p);
            }
            let guard = holder.opening.lock().await;
            // Another request may have opened it while this one waited.
            if let Some(p) = Self::shared(&peer).await {
                return Ok(p);
            }
            Some(guard)
        } else {
            None
        };
        while let Some(sender) = peer.take_idle(self.settings.idle_timeout) {
            let mut sender = Sender::H1(sender);
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
        self.connect(peer, route).await
    }

    /// The key's shared HTTP/2 connection, when one is open and ready.
    async fn shared(peer: &Arc<Peer>) -> Option<Pooled> {
        let mut sender = peer.shared_h2()?;
        sender.ready().await.ok()?;
        peer.reused.fetch_add(1, Ordering::Relaxed);
        Some(Pooled {
            sender: Sender::H2(sender),
            peer: Arc::clone(peer),
            reused: true,
        })
    }

    /// A new connection, bypassing idle ones (used after a pooled one turned out stale).
    pub async fn connect_new(&self, key: &PeerKey, route: &Route) -> Result<Pooled, ConnectError> {
        self.connect(self.peer(key), route).await
    }

    async fn connect(&self, peer: Arc<Peer>, route: &Route) -> Result<Pooled, ConnectError> {
        let (sender, conn) = route
            .connect(&peer.key, self.settings.connect_timeout)
            .await?;
        peer.opened.fetch_add(1, Ordering::Relaxed);
        if let Sender::H2(s) = &sender {
            *peer.shared.lock().unwrap_or_else(|e| e.into_inner()) = Some(s.clone());
        }
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
            // Forgets a shared HTTP/2 connection the member has closed.
            let _ = peer.shared_h2();
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
                key: p.key.clone(),
                opened: p.opened.load(Ordering::Relaxed),
                reused: p.reused.load(Ordering::Relaxed),
                closed: p.closed.load(Ordering::Relaxed),
                idle: p.idle.lock().map(|i| i.len()).unwrap_or(0),
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    pub fn stats_for(&self, addr: SocketAddr) -> Option<PeerStats> {
        self.stats().into_iter().find(|s| s.key.addr == addr)
    }
}

impl Peer {
    /// The shared HTTP/2 connection, if it is still open.
    fn shared_h2(&self) -> Option<http2::SendRequest<ReqBody>> {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        match &*shared {
            Some(s) if !s.is_closed() => Some(s.clone()),
            Some(_) => {
                *shared = None;
                None
            }
            None => None,
        }
    }

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

    /// Puts a connection whose exchange completed back for reuse (an HTTP/2 one is shared and
    /// never left the pool).
    pub fn checkin(self) {
        let Sender::H1(sender) = self.sender else {
            return;
        };
        if sender.is_closed() {
            return;
        }
        let mut idle = self.peer.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.peer.max_idle {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    pub fn key(&self) -> &PeerKey {
        &self.peer.key
    }
}
