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
use crate::upstream::BodyError;

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

    /// Attaches the request's access log record, written when the body ends (at once when it
    /// already has: a member's response without a body ends as it is made).
    pub fn with_log(mut self, log: Option<AccessRecord>) -> ProxyBody {
        match log {
            Some(log) if self.done => log.write(self.bytes, true),
            log => self.completion.log = log,
        }
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
