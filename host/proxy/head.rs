//! Request-head helpers of the request path: the host the client asked for, the shape a request
//! takes on an HTTP/1.1 or HTTP/2 connection, and whether (and how) it can be sent again.

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Uri, Version};

use crate::error::ProxyError;
use crate::headers;
use crate::upstream::ReqBody;

/// Whether a request can be sent again unchanged: an idempotent method without a body.
pub(super) fn replayable(req: &Request<ReqBody>) -> bool {
    is_idempotent(req.method()) && http_body::Body::is_end_stream(req.body())
}

/// The host the client asked for: the authority of an absolute-form URI, else the Host header.
/// A HTTP/1.1 request without either is refused (RFC 9112 §3.2).
pub(super) fn request_host(parts: &Parts) -> Result<Option<HeaderValue>, ProxyError> {
    if let Some(auth) = parts.uri.authority() {
        let v = HeaderValue::from_str(auth.as_str())
            .map_err(|_| ProxyError::BadRequest("the request target's authority is not valid"))?;
        return Ok(Some(v));
    }
    match parts.headers.get(header::HOST) {
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| ProxyError::BadRequest("the Host header is not ASCII"))?;
            if s.is_empty()
                || s.bytes()
                    .any(|b| b.is_ascii_whitespace() || b == b'/' || b == b'@')
            {
                return Err(ProxyError::BadRequest("the Host header is not a host name"));
            }
            Ok(Some(v.clone()))
        }
        None if parts.version == Version::HTTP_11 => Err(ProxyError::BadRequest(
            "an HTTP/1.1 request needs a Host header",
        )),
        None => Ok(None),
    }
}

/// Shapes a request for the connection it goes out on: HTTP/2 carries the host in the
/// `:authority` of an absolute URI (and the scheme in `:scheme`), HTTP/1.1 in `Host` with an
/// origin-form target. Free when the request already has the right shape.
pub(super) fn fit_request(req: &mut Request<ReqBody>, h2: bool, scheme: http::uri::Scheme) {
    if h2 {
        if req.uri().authority().is_none()
            && let Some(host) = req.headers_mut().remove(header::HOST)
            && let Ok(authority) = http::uri::Authority::try_from(host.as_bytes())
        {
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(scheme);
            parts.authority = Some(authority);
            parts.path_and_query = req.uri().path_and_query().cloned();
            if let Ok(uri) = Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
        *req.version_mut() = Version::HTTP_2;
    } else {
        if let Some(authority) = req.uri().authority() {
            if !req.headers().contains_key(header::HOST)
                && let Ok(v) = HeaderValue::from_str(authority.as_str())
            {
                req.headers_mut().insert(header::HOST, v);
            }
            *req.uri_mut() = headers::origin_form(req.uri());
        }
        *req.version_mut() = Version::HTTP_11;
    }
}

pub(super) fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// A copy of a bodiless request, kept to replay it on a new connection.
pub(super) fn clone_head(req: &Request<ReqBody>) -> Request<ReqBody> {
    let mut copy = Request::new(ReqBody::Empty);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}
