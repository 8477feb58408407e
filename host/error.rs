//! Request-path failures and the one place they become HTTP responses.
//!
//! Each variant says where the failure came from (the client, the config, the farm, the member)
//! and maps to exactly one status; it also says whether the request may be tried again on another
//! member ([`ProxyError::retry`]) and, when the member is to blame, which kind of failure it was
//! ([`ProxyError::member_failure`]). Bodies are short plain text; they name the farm and the
//! reason for a 503 (TMG's lesson: never a bare 500), but never a member's address, which stays
//! in the log.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::ProxyBody;
use crate::farm::{FailureKind, Unavailable};
use crate::upstream::{ClientFault, ConnectError, client_fault};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request itself is unusable (the client's fault).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The request body is over the rule's `max_body_bytes`.
    #[error("the request body is over the rule's limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    /// No publishing rule matches the listener, host and path.
    #[error("no publishing rule matches host {host:?} and path {path:?}")]
    NoRule { host: String, path: String },
    /// The farm has no member that can take the request.
    #[error("farm \"{farm}\" has no available member: {reason}")]
    NoMember { farm: String, reason: Unavailable },
    /// A member refused or failed the connection (after any retries).
    #[error("member {member} of farm \"{farm}\": {source}")]
    Connect {
        farm: String,
        member: String,
        source: ConnectError,
    },
    /// A member did not send response headers in time.
    #[error("member {member} of farm \"{farm}\" sent no response within {timeout:?}")]
    ResponseTimeout {
        farm: String,
        member: String,
        timeout: Duration,
    },
    /// A fail-closed plugin failed.
    #[error("{0}")]
    Plugin(crate::plugins::PluginFailure),
    /// A member switched protocols on a request whose upgrade was not passed to it.
    #[error("member {member} of farm \"{farm}\" switched protocols without being asked to")]
    Switched { farm: String, member: String },
    /// A member broke the exchange (closed early, sent an invalid response).
    #[error("member {member} of farm \"{farm}\" failed the exchange: {source}")]
    Upstream {
        farm: String,
        member: String,
        source: hyper::Error,
    },
}

/// Whether a failed attempt may be repeated on another member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Nothing reached the member (no connection could be made): any request may go elsewhere.
    Unsent,
    /// The member broke the exchange before answering: only a request that can be sent again
    /// unchanged (an idempotent method without a body) may go elsewhere.
    IfReplayable,
    /// The request may have been processed, or the failure is not the member's.
    Never,
}

impl ProxyError {
    /// A member's exchange that failed after the request was (or may have been) sent. A body over
    /// the rule's limit, malformed or cut short is the client's doing, not the member's.
    pub fn exchange(farm: &str, member: &str, source: hyper::Error) -> ProxyError {
        match client_fault(&source) {
            Some(ClientFault::TooLarge(limit)) => ProxyError::BodyTooLarge { limit },
            Some(ClientFault::Failed) => {
                ProxyError::BadRequest("the request body is malformed or was cut short")
            }
            None => ProxyError::Upstream {
                farm: farm.to_string(),
                member: member.to_string(),
                source,
            },
        }
    }

    /// Whether the request may be tried again on another member.
    pub fn retry(&self) -> Retry {
        match self {
            ProxyError::Connect { .. } => Retry::Unsent,
            ProxyError::Upstream { .. } => Retry::IfReplayable,
            _ => Retry::Never,
        }
    }

    /// When the member is to blame, the kind of its failure: counted as its failure and judged
    /// by the live traffic test.
    pub fn member_failure(&self) -> Option<FailureKind> {
        match self {
            ProxyError::Connect {
                source: ConnectError::Tls(_),
                ..
            } => Some(FailureKind::Tls),
            ProxyError::Connect { .. } => Some(FailureKind::Connect),
            ProxyError::Upstream { .. } | ProxyError::Switched { .. } => Some(FailureKind::Broken),
            ProxyError::ResponseTimeout { .. } => Some(FailureKind::Timeout),
            ProxyError::BadRequest(_)
            | ProxyError::BodyTooLarge { .. }
            | ProxyError::NoRule { .. }
            | ProxyError::NoMember { .. }
            | ProxyError::Plugin(_) => None,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::NoRule { .. } => StatusCode::NOT_FOUND,
            ProxyError::NoMember { .. } | ProxyError::Plugin(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect {
                source: ConnectError::Timeout { .. },
                ..
            } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Connect { .. }
            | ProxyError::Upstream { .. }
            | ProxyError::Switched { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::ResponseTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// What the client is told.
    fn public_message(&self) -> String {
        match self {
            ProxyError::BadRequest(why) => format!("bad request: {why}"),
            ProxyError::BodyTooLarge { limit } => {
                format!("the request body is larger than this site accepts ({limit} bytes)")
            }
            ProxyError::NoRule { .. } => {
                "no site is published here for this host name and path".into()
            }
            ProxyError::NoMember { farm, reason } => {
                format!("farm \"{farm}\" cannot take the request: {reason}")
            }
            ProxyError::Plugin(_) => "a policy for this site failed; try again shortly".into(),
            ProxyError::Connect { farm, .. } => {
                format!("a server of farm \"{farm}\" could not be reached")
            }
            ProxyError::ResponseTimeout { farm, .. } => {
                format!("a server of farm \"{farm}\" did not answer in time")
            }
            ProxyError::Upstream { farm, .. } | ProxyError::Switched { farm, .. } => {
                format!("a server of farm \"{farm}\" sent no valid response")
            }
        }
    }

    /// The response for this failure. `retry_after` goes on 503s. (`Via` is added with every
    /// other response's, on the way out.)
    pub fn to_response(&self, retry_after: Duration) -> Response<ProxyBody> {
        let status = self.status();
        let body = format!(
            "{} {}\n{}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            self.public_message()
        );
        let mut resp = Response::new(ProxyBody::full(body));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs().max(1)),
            );
        }
        if matches!(
            self,
            ProxyError::BadRequest(_) | ProxyError::BodyTooLarge { .. }
        ) {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_follow_where_the_failure_came_from() {
        let connect = ProxyError::Connect {
            farm: "web".into(),
            member: "m".into(),
            source: ConnectError::Io {
                addr: "127.0.0.1:1".parse().unwrap(),
                source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            },
        };
        assert_eq!(connect.retry(), Retry::Unsent);
        assert_eq!(connect.member_failure(), Some(FailureKind::Connect));
        let timeout = ProxyError::ResponseTimeout {
            farm: "web".into(),
            member: "m".into(),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(timeout.retry(), Retry::Never);
        assert_eq!(timeout.member_failure(), Some(FailureKind::Timeout));
        let client = ProxyError::BodyTooLarge { limit: 1 };
        assert_eq!(client.retry(), Retry::Never);
        assert_eq!(client.member_failure(), None);
        assert_eq!(ProxyError::BadRequest("x").member_failure(), None);
    }

    #[test]
    fn statuses_and_bodies() {
        let e = ProxyError::NoMember {
            farm: "web".into(),
            reason: Unavailable::AllTried { tried: 2 },
        };
        let r = e.to_response(Duration::from_secs(5));
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "5");
        let timeout = ProxyError::Connect {
            farm: "web".into(),
            member: "m".into(),
            source: ConnectError::Timeout {
                addr: "127.0.0.1:1".parse().unwrap(),
                timeout: Duration::from_secs(1),
            },
        };
        assert_eq!(timeout.status(), 504);
        assert!(!timeout.public_message().contains("127.0.0.1"));
        // HTTPS bridging: a refused member certificate is a bad gateway; the log line (the
        // error's Display) names member and reason, the body neither address nor name.
        let tls = ProxyError::Connect {
            farm: "web".into(),
            member: "web1".into(),
            source: ConnectError::Tls(Box::new(crate::upstream::TlsFailure {
                addr: "127.0.0.1:443".parse().unwrap(),
                server_name: "web1.internal".into(),
                message: "member certificate refused: UnknownIssuer".into(),
            })),
        };
        assert_eq!(tls.status(), 502);
        let logged = tls.to_string();
        assert!(
            logged.contains("member web1") && logged.contains("UnknownIssuer"),
            "{logged}"
        );
        assert!(!tls.public_message().contains("127.0.0.1"));
        assert!(!tls.public_message().contains("web1.internal"));
        assert_eq!(
            ProxyError::NoRule {
                host: "h".into(),
                path: "/".into()
            }
            .status(),
            404
        );
    }
}
