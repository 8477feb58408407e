//! The router chain: the plugins bound to a rule, then the built-in URL rewrite where the rule
//! has rewrite rules. A decision forwards (to another farm, with a rewritten head) or answers the
//! client; [`Rewrite`] applies a forward's changes to the request head.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode, Uri, header};

use super::fail;
use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::generation::Generation;
use crate::headers;
use crate::plugins::{Chain, Hook, RequestFacts, RouteDecision, Runtime};

/// What a router chain decided.
pub enum Routed {
    /// Forward, possibly to another farm and with a rewritten head.
    Forward(Rewrite),
    /// Answer the client without a member.
    Respond(Box<Response<ProxyBody>>),
}

/// Changes a router plugin asked for; empty means the rule's own behaviour.
#[derive(Default)]
pub struct Rewrite {
    /// Index into the generation's farms.
    pub farm: Option<usize>,
    pub path_and_query: Option<String>,
    pub host: Option<HeaderValue>,
    pub set_headers: Vec<(HeaderName, HeaderValue)>,
    pub remove_headers: Vec<HeaderName>,
}

impl Rewrite {
    /// The request target sent to the member: the rewritten path, else the client's, in origin
    /// form.
    pub fn target(&self, parts: &Parts) -> Uri {
        match &self.path_and_query {
            Some(p) => p
                .parse()
                .unwrap_or_else(|_| headers::origin_form(&parts.uri)),
            None => headers::origin_form(&parts.uri),
        }
    }

    /// The plugin's own header changes, applied last: removals, then values set.
    pub fn apply_headers(&mut self, headers: &mut HeaderMap) {
        for name in &self.remove_headers {
            headers.remove(name);
        }
        for (name, value) in self.set_headers.drain(..) {
            headers.insert(name, value);
        }
    }
}

/// A rule's router chain.
pub struct RouterChain<'a> {
    runtime: &'a Runtime,
    generation: &'a Generation,
    plugins: Chain,
}

impl<'a> RouterChain<'a> {
    /// The chain of rule `rule`; `None` when no plugin is to be asked.
    pub fn for_rule(
        runtime: &'a Runtime,
        generation: &'a Generation,
        rule: usize,
    ) -> Option<RouterChain<'a>> {
        let plugins = runtime.chain_in(
            &generation.chains.router[rule],
            Hook::Router,
            &generation.config.rules[rule].router,
            generation.builtin_router[rule],
        );
        (!plugins.is_empty()).then_some(RouterChain {
            runtime,
            generation,
            plugins,
        })
    }

    /// Asks the chain. `Ok(None)`: every plugin passed.
    pub async fn decide(&self, req: &Arc<RequestFacts>) -> Result<Option<Routed>, ProxyError> {
        for plugin in self.plugins.iter().filter(|p| self.runtime.enabled(p)) {
            let decision = match self.runtime.route(plugin, req).await {
                Ok(d) => d,
                Err(f) => {
                    fail(f)?;
                    continue;
                }
            };
            let routed = match decision {
                RouteDecision::Pass => continue,
                RouteDecision::Forward(f) => forward(f, self.generation),
                RouteDecision::Respond(r) => respond(r.status, r.headers, r.body),
                RouteDecision::Redirect(r) => redirect(r.status, &r.location),
            };
            match routed {
                Ok(r) => return Ok(Some(r)),
                Err(reason) => fail(self.runtime.invalid(plugin, "router", reason))?,
            }
        }
        Ok(None)
    }
}

fn forward(f: crate::plugins::ForwardTo, generation: &Generation) -> Result<Routed, String> {
    let mut rw = Rewrite::default();
    if let Some(name) = f.farm {
        rw.farm = Some(
            generation
                .farms
                .iter()
                .position(|farm| farm.name == name)
                .ok_or_else(|| {
                    format!("forwarded to farm \"{name}\", which the config does not have")
                })?,
        );
    }
    if let Some(p) = f.path {
        if !p.starts_with('/') || p.parse::<Uri>().is_err() {
            return Err(format!(
                "rewrote the path to \"{p}\", which is not an absolute path"
            ));
        }
        rw.path_and_query = Some(p);
    }
    if let Some(h) = f.host {
        rw.host = Some(
            HeaderValue::from_str(&h)
                .map_err(|_| format!("set Host to an invalid value \"{h}\""))?,
        );
    }
    for (n, v) in f.set_headers {
        rw.set_headers.push(header_pair(&n, &v)?);
    }
    for n in f.remove_headers {
        rw.remove_headers.push(
            HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| format!("named an invalid header \"{n}\""))?,
        );
    }
    Ok(Routed::Forward(rw))
}

fn respond(status: u16, headers: Vec<(String, String)>, body: Vec<u8>) -> Result<Routed, String> {
    let status = StatusCode::from_u16(status)
        .ok()
        .filter(|s| !s.is_informational())
        .ok_or_else(|| format!("answered with status {status}, which is not a final status"))?;
    let mut resp = Response::new(ProxyBody::full(Bytes::from(body)));
    *resp.status_mut() = status;
    for (n, v) in headers {
        let (n, v) = header_pair(&n, &v)?;
        resp.headers_mut().append(n, v);
    }
    Ok(Routed::Respond(Box::new(resp)))
}

fn redirect(status: u16, location: &str) -> Result<Routed, String> {
    if !matches!(status, 301 | 302 | 303 | 307 | 308) {
        return Err(format!(
            "redirected with status {status}; use 301, 302, 303, 307 or 308"
        ));
    }
    let value = HeaderValue::from_str(location)
        .map_err(|_| format!("redirected to an invalid location \"{location}\""))?;
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = StatusCode::from_u16(status).map_err(|e| e.to_string())?;
    resp.headers_mut().insert(header::LOCATION, value);
    Ok(Routed::Respond(Box::new(resp)))
}

fn header_pair(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let n = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("named an invalid header \"{name}\""))?;
    let v =
        HeaderValue::from_str(value).map_err(|_| format!("gave header {name} an invalid value"))?;
    Ok((n, v))
}
