//! A member's response as link translation reads it, and a health probe's outcome as health
//! evaluation reads it: like the request, each field crosses into the plugin when first read.

use std::cell::OnceCell;

use crate::bindings::farmgate::plugin::types as wit;
use crate::headers::{find_header, header_lines};

/// A member's response, with the names it is published under.
pub struct Response<'a> {
    pub(crate) host_side: Option<&'a wit::Response>,
    pub(crate) rule: OnceCell<String>,
    pub(crate) public_name: OnceCell<String>,
    pub(crate) internal_name: OnceCell<String>,
    pub(crate) public_scheme: OnceCell<String>,
    pub(crate) status: OnceCell<u16>,
    pub(crate) content_type: OnceCell<Option<String>>,
    pub(crate) headers: OnceCell<String>,
}

impl<'a> Response<'a> {
    /// The response farmgate handed to this call.
    #[doc(hidden)]
    pub fn from_host(host_side: &'a wit::Response) -> Response<'a> {
        Response {
            host_side: Some(host_side),
            ..Response::empty()
        }
    }

    pub(crate) fn empty() -> Response<'a> {
        Response {
            host_side: None,
            rule: OnceCell::new(),
            public_name: OnceCell::new(),
            internal_name: OnceCell::new(),
            public_scheme: OnceCell::new(),
            status: OnceCell::new(),
            content_type: OnceCell::new(),
            headers: OnceCell::new(),
        }
    }

    fn read<'s>(
        &'s self,
        cell: &'s OnceCell<String>,
        get: fn(&wit::Response) -> String,
    ) -> &'s str {
        cell.get_or_init(|| self.host_side.map(get).unwrap_or_default())
    }

    /// The publishing rule the request matched.
    pub fn rule(&self) -> &str {
        self.read(&self.rule, wit::Response::rule)
    }

    /// The Host the client asked for: the name links are translated to.
    pub fn public_name(&self) -> &str {
        self.read(&self.public_name, wit::Response::public_name)
    }

    /// The rule's internal site name (empty when it has none): the name links are translated
    /// from.
    pub fn internal_name(&self) -> &str {
        self.read(&self.internal_name, wit::Response::internal_name)
    }

    /// The scheme the client used (`https` when published over TLS).
    pub fn public_scheme(&self) -> &str {
        self.read(&self.public_scheme, wit::Response::public_scheme)
    }

    pub fn status(&self) -> u16 {
        *self
            .status
            .get_or_init(|| self.host_side.map(wit::Response::status).unwrap_or(0))
    }

    pub fn content_type(&self) -> Option<&str> {
        self.content_type
            .get_or_init(|| self.host_side.and_then(wit::Response::content_type))
            .as_deref()
    }

    /// The first value of a header (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(self.header_block(), name)
    }

    /// Every header as `(name, value)`.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        header_lines(self.header_block())
    }

    /// The header block: one `name: value` line per header.
    pub fn header_block(&self) -> &str {
        self.read(&self.headers, wit::Response::headers)
    }
}

/// A health probe's outcome.
pub struct Probe<'a> {
    pub(crate) host_side: Option<&'a wit::Probe>,
    pub(crate) farm: OnceCell<String>,
    pub(crate) member: OnceCell<String>,
    pub(crate) url: OnceCell<String>,
    pub(crate) status: OnceCell<Option<u16>>,
    pub(crate) headers: OnceCell<String>,
    pub(crate) body_prefix: OnceCell<Vec<u8>>,
    pub(crate) latency_us: OnceCell<u64>,
    pub(crate) error: OnceCell<Option<String>>,
}

impl<'a> Probe<'a> {
    /// The probe farmgate handed to this call.
    #[doc(hidden)]
    pub fn from_host(host_side: &'a wit::Probe) -> Probe<'a> {
        Probe {
            host_side: Some(host_side),
            ..Probe::empty()
        }
    }

    pub(crate) fn empty() -> Probe<'a> {
        Probe {
            host_side: None,
            farm: OnceCell::new(),
            member: OnceCell::new(),
            url: OnceCell::new(),
            status: OnceCell::new(),
            headers: OnceCell::new(),
            body_prefix: OnceCell::new(),
            latency_us: OnceCell::new(),
            error: OnceCell::new(),
        }
    }

    fn read<'s>(&'s self, cell: &'s OnceCell<String>, get: fn(&wit::Probe) -> String) -> &'s str {
        cell.get_or_init(|| self.host_side.map(get).unwrap_or_default())
    }

    pub fn farm(&self) -> &str {
        self.read(&self.farm, wit::Probe::farm)
    }

    pub fn member(&self) -> &str {
        self.read(&self.member, wit::Probe::member)
    }

    /// The URL probed.
    pub fn url(&self) -> &str {
        self.read(&self.url, wit::Probe::url)
    }

    /// The response's status; `None` when no response arrived.
    pub fn status(&self) -> Option<u16> {
        *self
            .status
            .get_or_init(|| self.host_side.and_then(wit::Probe::status))
    }

    /// The first value of a header (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(self.header_block(), name)
    }

    /// The header block: one `name: value` line per header.
    pub fn header_block(&self) -> &str {
        self.read(&self.headers, wit::Probe::headers)
    }

    /// The first bytes of the body (a few KiB at most).
    pub fn body_prefix(&self) -> &[u8] {
        self.body_prefix.get_or_init(|| {
            self.host_side
                .map(wit::Probe::body_prefix)
                .unwrap_or_default()
        })
    }

    /// Time to the response (or to the failure), in microseconds.
    pub fn latency_us(&self) -> u64 {
        *self
            .latency_us
            .get_or_init(|| self.host_side.map(wit::Probe::latency_us).unwrap_or(0))
    }

    /// Why no response arrived (connection refused, timeout, ...).
    pub fn error(&self) -> Option<&str> {
        self.error
            .get_or_init(|| self.host_side.and_then(wit::Probe::error))
            .as_deref()
    }
}
