//! What a call hands a plugin, and how the plugin reads it (contract 0.3). The request, the
//! member's response and a probe are resources: the host keeps them for the call (in the
//! instance's store data, `Handed`) and the plugin reads field by field, so a field crosses into
//! wasm only when asked for. A farm hands its live state per call (`FarmLive`) and its member
//! table only when the plugin asks for a table number it does not hold.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, Uri};
use wasmtime::component::Resource;

use super::bindings::farmgate::plugin::types::{
    self as wit, FarmTable, Host, HostFarm, HostProbe, HostRequest, HostResponse, MemberFigures,
};
use super::instances::State;

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

/// The first value of header `name`, as text; the values of `cookie` joined with `; ` (HTTP/2
/// sends each cookie as a field of its own).
fn header_value(headers: &HeaderMap, name: &str) -> Option<String> {
    if name.eq_ignore_ascii_case("cookie") {
        let joined = headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join("; ");
        return (!joined.is_empty()).then_some(joined);
    }
    headers.get(name)?.to_str().ok().map(str::to_string)
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

fn text(v: &HeaderValue) -> String {
    v.to_str().unwrap_or_default().to_string()
}

impl State {
    fn request(&self) -> Option<&RequestFacts> {
        self.handed.request.as_deref()
    }

    fn response(&self) -> Option<&ResponseFacts> {
        self.handed.response.as_deref()
    }

    fn probe(&self) -> Option<&ProbeResult> {
        self.handed.probe.as_deref()
    }
}

impl Host for State {}

// Every read below is of the call's own slot. A slot is empty only when a plugin calls a
// method outside a call, which the component model does not allow for a borrow; empty values
// answer that case rather than a trap.

impl HostRequest for State {
    fn method(&mut self, _: Resource<wit::Request>) -> String {
        self.request()
            .map(|r| r.method.as_str().to_string())
            .unwrap_or_default()
    }

    fn scheme(&mut self, _: Resource<wit::Request>) -> String {
        self.request()
            .map(|r| r.scheme.to_string())
            .unwrap_or_default()
    }

    fn host(&mut self, _: Resource<wit::Request>) -> String {
        self.request().map(|r| text(&r.host)).unwrap_or_default()
    }

    fn path(&mut self, _: Resource<wit::Request>) -> String {
        self.request()
            .map(|r| r.uri.path().to_string())
            .unwrap_or_default()
    }

    fn query(&mut self, _: Resource<wit::Request>) -> Option<String> {
        self.request()?.uri.query().map(str::to_string)
    }

    fn header(&mut self, _: Resource<wit::Request>, name: String) -> Option<String> {
        header_value(&self.request()?.headers, &name)
    }

    fn headers(&mut self, _: Resource<wit::Request>) -> String {
        self.request()
            .map(|r| header_block(&r.headers))
            .unwrap_or_default()
    }

    fn client_addr(&mut self, _: Resource<wit::Request>) -> String {
        self.request()
            .map(|r| r.client_addr.to_string())
            .unwrap_or_default()
    }

    fn listener(&mut self, _: Resource<wit::Request>) -> String {
        self.request()
            .map(|r| r.listener.to_string())
            .unwrap_or_default()
    }

    fn rule(&mut self, _: Resource<wit::Request>) -> String {
        self.request()
            .map(|r| r.rule.to_string())
            .unwrap_or_default()
    }

    fn drop(&mut self, _: Resource<wit::Request>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl HostFarm for State {
    fn table(&mut self, _: Resource<wit::Farm>) -> FarmTable {
        match &self.handed.farm {
            Some(f) => f.table(),
            None => FarmTable {
                name: String::new(),
                members: Vec::new(),
            },
        }
    }

    fn figures(&mut self, _: Resource<wit::Farm>) -> Vec<MemberFigures> {
        self.handed
            .farm
            .as_ref()
            .map(|f| f.figures())
            .unwrap_or_default()
    }

    fn drop(&mut self, _: Resource<wit::Farm>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl HostResponse for State {
    fn rule(&mut self, _: Resource<wit::Response>) -> String {
        self.response()
            .map(|r| r.rule.to_string())
            .unwrap_or_default()
    }

    fn public_name(&mut self, _: Resource<wit::Response>) -> String {
        self.response()
            .map(|r| text(&r.public_name))
            .unwrap_or_default()
    }

    fn internal_name(&mut self, _: Resource<wit::Response>) -> String {
        self.response()
            .map(|r| r.internal_name.to_string())
            .unwrap_or_default()
    }

    fn public_scheme(&mut self, _: Resource<wit::Response>) -> String {
        self.response()
            .map(|r| r.public_scheme.to_string())
            .unwrap_or_default()
    }

    fn status(&mut self, _: Resource<wit::Response>) -> u16 {
        self.response().map(|r| r.status).unwrap_or_default()
    }

    fn content_type(&mut self, _: Resource<wit::Response>) -> Option<String> {
        header_value(&self.response()?.headers, "content-type")
    }

    fn header(&mut self, _: Resource<wit::Response>, name: String) -> Option<String> {
        header_value(&self.response()?.headers, &name)
    }

    fn headers(&mut self, _: Resource<wit::Response>) -> String {
        self.response()
            .map(|r| header_block(&r.headers))
            .unwrap_or_default()
    }

    fn drop(&mut self, _: Resource<wit::Response>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl HostProbe for State {
    fn farm(&mut self, _: Resource<wit::Probe>) -> String {
        self.probe().map(|p| p.farm.clone()).unwrap_or_default()
    }

    fn member(&mut self, _: Resource<wit::Probe>) -> String {
        self.probe().map(|p| p.member.clone()).unwrap_or_default()
    }

    fn url(&mut self, _: Resource<wit::Probe>) -> String {
        self.probe().map(|p| p.url.clone()).unwrap_or_default()
    }

    fn status(&mut self, _: Resource<wit::Probe>) -> Option<u16> {
        self.probe()?.status
    }

    fn header(&mut self, _: Resource<wit::Probe>, name: String) -> Option<String> {
        header_value(&self.probe()?.headers, &name)
    }

    fn headers(&mut self, _: Resource<wit::Probe>) -> String {
        self.probe()
            .map(|p| header_block(&p.headers))
            .unwrap_or_default()
    }

    fn body_prefix(&mut self, _: Resource<wit::Probe>) -> Vec<u8> {
        self.probe()
            .map(|p| p.body_prefix.clone())
            .unwrap_or_default()
    }

    fn latency_us(&mut self, _: Resource<wit::Probe>) -> u64 {
        self.probe().map(|p| p.latency_us).unwrap_or_default()
    }

    fn error(&mut self, _: Resource<wit::Probe>) -> Option<String> {
        self.probe()?.error.clone()
    }

    fn drop(&mut self, _: Resource<wit::Probe>) -> wasmtime::Result<()> {
        Ok(())
    }
}
