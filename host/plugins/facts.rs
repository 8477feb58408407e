//! What a call hands a plugin (contract 0.3). The request, the member's response and a probe
//! are resources: the host keeps them for the call (in the instance's store data, `Handed`) and
//! the plugin reads them field by field (`reads.rs`), so a field crosses into wasm only when
//! asked for. A farm hands its live state per call (`FarmLive`) and its member table only when
//! the plugin asks for a table number it does not hold.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, Uri};
use wasmtime::component::Resource;

use super::bindings::farmgate::plugin::types::{FarmTable, MemberFigures};

/// The client request as plugins read it, made once per request (when the first plugin is
/// asked) and shared by every call about it.
#[derive(Debug)]
pub struct RequestFacts {
    pub method: Method,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The Host the client asked for (empty when it sent none).
    pub host: HeaderValue,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub client_addr: IpAddr,
    pub listener: Arc<str>,
    /// The publishing rule that matched.
    pub rule: Arc<str>,
}

/// A member's response as link-translation plugins read it. Its headers are the response's own,
/// lent for the chain's calls and handed back after ([`ResponseFacts::into_headers`]).
#[derive(Debug)]
pub struct ResponseFacts {
    /// The publishing rule the request matched, and its internal site name (empty when none).
    pub rule: Arc<str>,
    pub internal_name: Arc<str>,
    /// The Host the client asked for.
    pub public_name: HeaderValue,
    /// `http` or `https`, as the client spoke.
    pub public_scheme: &'static str,
    pub status: u16,
    pub headers: HeaderMap,
}

/// One health probe's outcome, for health evaluation.
#[derive(Debug, Clone)]
pub struct ProbeResult {
    pub farm: String,
    pub member: String,
    pub url: String,
    /// None when no response arrived.
    pub status: Option<u16>,
    pub headers: HeaderMap,
    /// The first bytes of the body (a few KiB at most).
    pub body_prefix: Vec<u8>,
    pub latency_us: u64,
    /// Why no response arrived (or why reading it failed).
    pub error: Option<String>,
}

/// A farm as affinity plugins read it beyond the live state of each call: its member table and
/// the members' rarer figures. Implemented by the farm itself, outside the runtime.
pub trait FarmFacts: Send + Sync {
    fn table(&self) -> FarmTable;
    fn figures(&self) -> Vec<MemberFigures>;
}

/// What the call under way was handed; empty between calls. A resource handed to a call is a
/// borrow valid for that call only, so the one slot per kind is all a store needs.
#[derive(Default)]
pub(super) struct Handed {
    pub(super) request: Option<Arc<RequestFacts>>,
    pub(super) farm: Option<Arc<dyn FarmFacts>>,
    pub(super) response: Option<Arc<ResponseFacts>>,
    pub(super) probe: Option<Arc<ProbeResult>>,
}

/// The handle every resource is handed as: the slot of its kind.
pub(super) fn borrow<T: 'static>() -> Resource<T> {
    Resource::new_borrow(0)
}

impl ResponseFacts {
    /// The response's headers back, once the calls that read them are over.
    pub fn into_headers(this: Arc<ResponseFacts>) -> HeaderMap {
        match Arc::try_unwrap(this) {
            Ok(facts) => facts.headers,
            // Not reached: every store clears its slot when its call returns or fails.
            Err(shared) => shared.headers.clone(),
        }
    }
}

/// Headers as the contract's header block: `name: value` lines joined by `\n`, values that are
/// not text left out.
pub fn header_block(headers: &HeaderMap) -> String {
    let mut block = String::with_capacity(headers.len() * 32);
    for (n, v) in headers {
        if let Ok(v) = v.to_str() {
            if !block.is_empty() {
                block.push('\n');
            }
            block.push_str(n.as_str());
            block.push_str(": ");
            block.push_str(v);
        }
    }
    block
}
