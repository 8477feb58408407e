//! Upgraded connections: WebSocket and any other HTTP/1.1 `Upgrade` protocol, passed through to
//! the member the affinity chain and balancer chose.
//!
//! Only the protocols on the rule's `upgrade_protocols` (WebSocket by default; never `h2c`,
//! whose tunnel would carry HTTP/2 requests past the rules, limits and access log) are passed.
//! A request asking only for others is served as a plain request, its `Upgrade` and
//! `Connection` headers removed, or refused with 400 when it makes no sense without its upgrade
//! (a WebSocket handshake). `HTTP2-Settings` is hop-by-hop and never forwarded.
//!
//! An upgrade request keeps its `Connection: upgrade` and `Upgrade` headers (hop-by-hop, so
//! removed from every other request), always goes to the member over HTTP/1.1, and when the
//! member answers `101 Switching Protocols` both connections are taken over from hyper and bytes
//! are copied both ways until either side closes or nothing moves in either direction for the
//! idle timeout. The member's in-flight count includes the tunnel for as long as it is open.
//!
//! This module copies bytes; it does not look at them, and it does not choose the member.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::HeaderMap;
use http::header::{self, HeaderValue};
use http::request::Parts;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::farm::InFlight;

/// Copy buffer per direction.
const BUFFER: usize = 16 * 1024;

/// A client's request to switch protocols, with hyper's handle to its connection.
pub struct Upgrade {
    client: OnUpgrade,
    protocol: HeaderValue,
}

/// What a request asks for by way of an upgrade, judged against a rule's allowed protocols.
pub enum Requested {
    /// Nothing (or nothing an HTTP/1.1 upgrade can be): a plain request.
    No,
    /// Protocols the rule passes: forwarded with the upgrade headers.
    Allowed(Upgrade),
    /// Only protocols the rule does not pass: the request goes on without its upgrade, or is
    /// refused when it makes no sense without it (a WebSocket handshake).
    Refused { meaningless_without: bool },
}

/// The upgrade a request asks for: HTTP/1.1, `Connection` naming `upgrade`, and an `Upgrade`
/// header, of which only the protocols in `allowed` (lower-case names; a `/version` after a
/// name is kept) are passed on. Takes hyper's handle to the client connection out of the
/// request when an upgrade is passed.
pub fn requested(parts: &mut Parts, allowed: &[String]) -> Requested {
    if parts.version != http::Version::HTTP_11 {
        return Requested::No;
    }
    let asks = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !asks || !parts.headers.contains_key(header::UPGRADE) {
        return Requested::No;
    }
    let offered: Vec<&str> = parts
        .headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let name = |p: &str| {
        p.split('/')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    };
    let passed: Vec<&str> = offered
        .iter()
        .copied()
        .filter(|p| allowed.contains(&name(p)))
        .collect();
    if passed.is_empty() {
        let meaningless_without = offered.iter().any(|p| name(p) == "websocket");
        return Requested::Refused {
            meaningless_without,
        };
    }
    let Ok(protocol) = HeaderValue::from_str(&passed.join(", ")) else {
        return Requested::Refused {
            meaningless_without: false,
        };
    };
    match parts.extensions.remove::<OnUpgrade>() {
        Some(client) => Requested::Allowed(Upgrade { client, protocol }),
        None => Requested::No,
    }
}

/// Puts back the two hop-by-hop headers an upgrade needs.
pub fn restore(headers: &mut HeaderMap, protocol: &HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol.clone());
}

impl Upgrade {
    pub fn protocol(&self) -> &HeaderValue {
        &self.protocol
    }

    /// The member switched protocols: once hyper has sent the 101 to the client, joins the two
    /// connections and copies bytes until one side closes or `idle` passes without a byte.
    pub fn tunnel(
        self,
        upstream: &mut http::Response<Incoming>,
        idle: Duration,
        in_flight: InFlight,
    ) {
        let member_side = hyper::upgrade::on(upstream);
        let client_side = self.client;
        tokio::spawn(async move {
            let member = in_flight.member().name.clone();
            let (client, upstream) = match tokio::try_join!(client_side, member_side) {
                Ok(both) => both,
                Err(e) => {
                    tracing::debug!(%member, error = %e, "upgrade did not complete");
                    return;
                }
            };
            let started = Instant::now();
            let end = pipe(TokioIo::new(client), TokioIo::new(upstream), idle).await;
            tracing::debug!(
                %member,
                to_member = end.to_member,
                to_client = end.to_client,
                seconds = started.elapsed().as_secs_f64(),
                reason = end.reason,
                "upgraded connection closed"
            );
            drop(in_flight);
        });
    }
}

/// How a tunnel ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipeEnd {
    pub to_member: u64,
    pub to_client: u64,
    pub reason: &'static str,
}

/// Copies `client` <-> `member` until both directions end, either fails, or neither moves a byte
/// for `idle`. A direction that ends (EOF) shuts down the write side of the other connection,
/// so half-closed protocols work.
pub async fn pipe<C, M>(client: C, member: M, idle: Duration) -> PipeEnd
where
    C: AsyncRead + AsyncWrite + Send,
    M: AsyncRead + AsyncWrite + Send,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut mr, mut mw) = tokio::io::split(member);
    let activity = Activity::new();
    let up_count = AtomicU64::new(0);
    let down_count = AtomicU64::new(0);
    let both = async {
        tokio::join!(
            copy(&mut cr, &mut mw, &activity, &up_count),
            copy(&mut mr, &mut cw, &activity, &down_count)
        )
    };
    let watchdog = async {
        loop {
            let quiet = activity.quiet_for();
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    };
    let reason = tokio::select! {
        (up, down) = both => match (up, down) {
            (Ok(()), Ok(())) => "closed",
            _ => "connection error",
        },
        () = watchdog => "idle timeout",
    };
    PipeEnd {
        to_member: up_count.load(Ordering::Relaxed),
        to_client: down_count.load(Ordering::Relaxed),
        reason,
    }
}

async fn copy<R, W>(
    r: &mut R,
    w: &mut W,
    activity: &Activity,
    count: &AtomicU64,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            // Pass the end on; the other direction may still have bytes to send.
            let _ = w.shutdown().await;
            return Ok(());
        }
        activity.touch();
        w.write_all(&buf[..n]).await?;
        w.flush().await?;
        count.fetch_add(n as u64, Ordering::Relaxed);
        activity.touch();
    }
}

/// When a byte last moved, in milliseconds since the tunnel began.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(now, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let now = self.start.elapsed();
        now.saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pipe_copies_both_ways_and_ends_when_idle() {
        let (client, mut client_peer) = tokio::io::duplex(1024);
        let (member, mut member_peer) = tokio::io::duplex(1024);
        let tunnel = tokio::spawn(pipe(client, member, Duration::from_millis(200)));
        client_peer.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        member_peer.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        member_peer.write_all(b"pong!").await.unwrap();
        let mut buf = [0u8; 5];
        client_peer.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong!");
        // Nothing moves now: the idle timeout ends the tunnel.
        let end = tokio::time::timeout(Duration::from_secs(5), tunnel)
            .await
            .expect("the idle timeout ends the tunnel")
            .unwrap();
        assert_eq!(end.reason, "idle timeout");
        assert_eq!((end.to_member, end.to_client), (4, 5));
    }

    #[tokio::test]
    async fn pipe_ends_when_both_sides_close() {
        let (client, mut client_peer) = tokio::io::duplex(1024);
        let (member, mut member_peer) = tokio::io::duplex(1024);
        let tunnel = tokio::spawn(pipe(client, member, Duration::from_secs(60)));
        client_peer.write_all(b"bye").await.unwrap();
        client_peer.shutdown().await.unwrap();
        let mut got = Vec::new();
        member_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");
        member_peer.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client_peer.read_to_end(&mut rest).await.unwrap();
        let end = tokio::time::timeout(Duration::from_secs(5), tunnel)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(end.reason, "closed");
    }
}
