//! Body types of the request path. Bodies stream frame by frame in both directions; nothing here
//! buffers a whole body.
//!
//! [`ProxyBody`] is what clients receive. It carries the request's [`Completion`]: when the last
//! frame has gone out, the upstream connection goes back to the pool, the member's in-flight count
//! drops and the access log line is written. A body dropped before its end (the client went away)
//! does the same, except that the connection, now in an unknown state, is closed instead.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::access_log::AccessRecord;
use crate::farm::InFlight;
use crate::framing::Busy;
use crate::pool::Pooled;
use crate::translate::BodyTranslator;

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

/// What to do when a response has been delivered (or abandoned).
#[derive(Default)]
pub struct Completion {
    pub pooled: Option<Pooled>,
    pub in_flight: Option<InFlight>,
    pub log: Option<AccessRecord>,
}

impl Completion {
    fn finish(&mut self, complete: bool, bytes: u64) {
        if let Some(g) = &self.in_flight {
            g.member()
                .stats
                .bytes
                .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(p) = self.pooled.take()
            && complete
        {
            p.checkin();
        }
        if let Some(g) = self.in_flight.take()
            && !complete
        {
            tracing::debug!(member = %g.member().name, "response abandoned before its end");
        }
        if let Some(log) = self.log.take() {
            log.write(bytes, complete);
        }
    }
}

enum Inner {
    Upstream(Incoming),
    /// A member's body rewritten by link translation on its way through.
    Translated {
        body: Incoming,
        translator: Box<BodyTranslator>,
        ended: bool,
    },
    Full(Option<Bytes>),
}

/// Errors of a body on its way to the client: the member's connection failed, or a body being
/// translated could not be decoded.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A response body to the client.
pub struct ProxyBody {
    inner: Inner,
    completion: Completion,
    bytes: u64,
    done: bool,
    /// Keeps the client connection from counting as idle while the body goes out.
    busy: Option<Busy>,
}

impl ProxyBody {
    pub fn upstream(body: Incoming, completion: Completion) -> ProxyBody {
        let mut b = ProxyBody {
            inner: Inner::Upstream(body),
            completion,
            bytes: 0,
            done: false,
            busy: None,
        };
        // Responses without a body (HEAD, 204, 304) release their connection at once.
        if b.is_end_stream() {
            b.done = true;
            b.completion.finish(true, 0);
        }
        b
    }

    /// A member's body passed through link translation; its length changes, so it is sent
    /// without a Content-Length. Trailers are dropped (they would describe the original body).
    pub fn translated(
        body: Incoming,
        translator: BodyTranslator,
        completion: Completion,
    ) -> ProxyBody {
        // Not ended even when the member's body is empty: what the encoder adds at the end (an
        // empty gzip stream's header and trailer) must still go out.
        ProxyBody {
            inner: Inner::Translated {
                body,
                translator: Box::new(translator),
                ended: false,
            },
            completion,
            bytes: 0,
            done: false,
            busy: None,
        }
    }

    pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
        let bytes = bytes.into();
        ProxyBody {
            inner: Inner::Full((!bytes.is_empty()).then_some(bytes)),
            completion: Completion::default(),
            bytes: 0,
            done: false,
            busy: None,
        }
    }

    pub fn empty() -> ProxyBody {
        ProxyBody::full(Bytes::new())
    }

    /// Holds `busy` until the body is dropped (hyper drops it once sent, or abandoned).
    pub fn holding(mut self, busy: Busy) -> ProxyBody {
        self.busy = Some(busy);
        self
    }

    /// Attaches the access log record to a locally generated response.
    pub fn with_log(mut self, log: Option<AccessRecord>) -> ProxyBody {
        self.completion.log = log;
        self
    }

    fn finish(&mut self, complete: bool) {
        if !self.done {
            self.done = true;
            self.completion.finish(complete, self.bytes);
        }
    }
}

/// The next frame of a translated body: upstream data pushed through the translator until it
/// yields bytes; at the upstream's end, what the translator still holds.
fn poll_translated(
    body: &mut Incoming,
    translator: &mut BodyTranslator,
    ended: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
    loop {
        if *ended {
            return Poll::Ready(None);
        }
        let out = match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => translator.push(data),
                // Trailers: the body is over.
                Err(_) => {
                    *ended = true;
                    translator.finish()
                }
            },
            Poll::Ready(None) => {
                *ended = true;
                translator.finish()
            }
        };
        match out {
            Ok(out) if out.is_empty() => continue,
            Ok(out) => return Poll::Ready(Some(Ok(Frame::data(out)))),
            Err(e) => {
                *ended = true;
                tracing::warn!(error = %e, "a translated response body could not be decoded; the response is cut short");
                return Poll::Ready(Some(Err(Box::new(e))));
            }
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::Upstream(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(Into::into))),
            Inner::Translated {
                body,
                translator,
                ended,
            } => poll_translated(body, translator, ended, cx),
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes += d.len() as u64;
                }
                if this.is_end_stream() {
                    this.finish(true);
                }
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Translated { ended, .. } => *ended,
            Inner::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(b) => b.size_hint(),
            Inner::Translated { .. } => SizeHint::default(),
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // A locally generated body the client never read to the end still counts as delivered:
        // hyper drops the body of a HEAD response, for example.
        let complete = matches!(self.inner, Inner::Full(_));
        self.finish(complete);
    }
}
