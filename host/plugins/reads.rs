//! How a plugin reads what its call was handed: the methods of the request, farm, response and
//! probe resources, each answered from the call's slot in the store (`facts::Handed`).

use http::{HeaderMap, HeaderValue};
use wasmtime::component::Resource;

use super::bindings::farmgate::plugin::types::{
    self as wit, FarmTable, Host, HostFarm, HostProbe, HostRequest, HostResponse, MemberFigures,
};
use super::facts::{ProbeResult, RequestFacts, ResponseFacts, header_block};
use super::instances::State;

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
