//! The types an upstream exchange is made of, shared by the pool (which keeps connections),
//! the bridge (which opens them) and the request path (which sends on them): the request body sent
//! to a member, the pool key with its TLS identity, a connection's sending side, the way to a
//! member's addresses, and why no connection could be had.
//!
//! This module holds data and small accessors only; it opens nothing and decides nothing.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1, http2};
use rustls::ClientConfig;

/// Errors of a body on its way through: the client's or the member's connection failed, a body
/// went over its limit, or a body being translated could not be decoded.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A request body sent to a member: the client's own, streamed and held to the rule's size
/// limit, or none.
#[derive(Debug)]
pub enum ReqBody {
    Incoming {
        body: Incoming,
        /// Bytes the body may still carry.
        remaining: u64,
        limit: u64,
    },
    Empty,
}

impl ReqBody {
    pub fn limited(body: Incoming, limit: u64) -> ReqBody {
        ReqBody::Incoming {
            body,
            remaining: limit,
            limit,
        }
    }
}

/// A streamed request body grew past the rule's `max_body_bytes`; the exchange with the member
/// is abandoned and the client gets 413.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than {0} bytes")]
pub struct BodyTooLarge(pub u64);

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ReqBody::Incoming {
                body,
                remaining,
                limit,
            } => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                    match remaining.checked_sub(len) {
                        Some(left) => {
                            *remaining = left;
                            Poll::Ready(Some(Ok(frame)))
                        }
                        None => Poll::Ready(Some(Err(Box::new(BodyTooLarge(*limit))))),
                    }
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(ClientBodyFailed(e))))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            ReqBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Incoming { body, .. } => body.is_end_stream(),
            ReqBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Incoming { body, .. } => body.size_hint(),
            ReqBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// Reading the client's request body failed: its chunked framing broke (see `framing`), or the
/// client went away mid-body. The client's doing, never the member's.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body failed: {0}")]
pub struct ClientBodyFailed(hyper::Error);

/// What went wrong with the client's request body, if `e` (or what caused it) says so.
pub enum ClientFault {
    /// Over the rule's `max_body_bytes`.
    TooLarge(u64),
    /// Malformed or cut short.
    Failed,
}

pub fn client_fault(e: &(dyn std::error::Error + 'static)) -> Option<ClientFault> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<BodyTooLarge>() {
            return Some(ClientFault::TooLarge(t.0));
        }
        if err.is::<ClientBodyFailed>() {
            return Some(ClientFault::Failed);
        }
        cur = err.source();
    }
    None
}

/// What identifies interchangeable upstream connections: the resolved address, whether HTTP/2
/// is spoken (or, over TLS, offered), and for HTTPS the TLS identity (the name sent and checked,
/// and the roots). Never a host name on its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey {
    pub addr: SocketAddr,
    pub http2: bool,
    pub tls: Option<TlsIdentity>,
}

impl std::fmt::Display for PeerKey {
    /// `http://10.0.0.1:80`, `h2c://…`, `https://10.0.0.1:443 (tls name web1, system roots)`:
    /// what the admin API and metrics call a pool key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match (&self.tls, self.http2) {
            (None, false) => "http",
            (None, true) => "h2c",
            (Some(_), false) => "https",
            (Some(_), true) => "h2",
        };
        write!(f, "{scheme}://{}", self.addr)?;
        if let Some(t) = &self.tls {
            let trust = match &t.trust {
                Trust::System => "system roots".to_string(),
                Trust::Bundle(p) => format!("roots {}", p.display()),
                Trust::Insecure => "not verified".to_string(),
            };
            write!(f, " (tls name {}, {trust})", t.server_name)?;
        }
        Ok(())
    }
}

impl PeerKey {
    /// A plain HTTP/1.1 key.
    pub fn plain(addr: SocketAddr) -> PeerKey {
        PeerKey {
            addr,
            http2: false,
            tls: None,
        }
    }
}

/// The task that drives one upstream connection.
pub type Driver = Pin<Box<dyn Future<Output = Result<(), hyper::Error>> + Send>>;

/// The sending side of an upstream connection.
pub enum Sender {
    H1(http1::SendRequest<ReqBody>),
    H2(http2::SendRequest<ReqBody>),
}

impl Sender {
    pub fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    pub fn is_h2(&self) -> bool {
        matches!(self, Sender::H2(_))
    }

    pub async fn ready(&mut self) -> Result<(), hyper::Error> {
        match self {
            Sender::H1(s) => s.ready().await,
            Sender::H2(s) => s.ready().await,
        }
    }

    pub async fn try_send_request(
        &mut self,
        req: Request<ReqBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<ReqBody>>> {
        match self {
            Sender::H1(s) => s.try_send_request(req).await,
            Sender::H2(s) => s.try_send_request(req).await,
        }
    }
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
    /// HTTPS bridging: the TLS handshake failed, usually because the member's certificate was
    /// refused (unknown issuer, wrong name, expired).
    #[error(transparent)]
    Tls(Box<TlsFailure>),
}

/// A failed TLS handshake with a member (boxed: errors stay small on the request path).
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake with {addr} as \"{server_name}\" failed: {message}")]
pub struct TlsFailure {
    pub addr: SocketAddr,
    /// The name sent as SNI and checked against the certificate.
    pub server_name: String,
    /// rustls's reason, e.g. the certificate's issuer is unknown or it names another host.
    pub message: String,
}

/// The TLS part of a pool key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TlsIdentity {
    /// Sent as SNI (unless it is an address) and checked against the member's certificate.
    pub server_name: Arc<str>,
    pub trust: Trust,
}

/// What a member's certificate must chain to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Trust {
    /// The operating system's roots.
    System,
    /// The CA bundle at this path.
    Bundle(Arc<Path>),
    /// Nothing is checked (`tls_verify = "none"`).
    Insecure,
}

/// How one request reaches the member's addresses: the pool key (less the address) and what a
/// new connection needs.
#[derive(Clone)]
pub struct Route {
    pub(crate) http2: bool,
    /// The TLS identity checked and the rustls config a new connection uses.
    pub(crate) tls: Option<(TlsIdentity, Arc<ClientConfig>)>,
}

impl Route {
    pub fn key(&self, addr: SocketAddr) -> PeerKey {
        PeerKey {
            addr,
            http2: self.http2,
            tls: self.tls.as_ref().map(|(id, _)| id.clone()),
        }
    }

    pub fn scheme(&self) -> http::uri::Scheme {
        if self.tls.is_some() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        }
    }
}
