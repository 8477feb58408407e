//! The hook chains on the request path: the views handed to plugins, and what their decisions
//! do. For each decision the bound plugins are asked in order; the first that does not pass
//! decides; when all pass (or none is bound) the built-in behaviour decides. A failed plugin is
//! skipped (fail-open) or fails the request with 503 (fail-closed, per plugin).
//!
//! This module turns decisions into effects; it does not call wasmtime itself (`plugins` does).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode, Uri, header};

use crate::body::ProxyBody;
use crate::config::RuleConfig;
use crate::error::ProxyError;
use crate::farm::{Farm, Member, MemberState};
use crate::plugins::{
    AffinityDecision, FarmView, MemberStateView, MemberView, Plugin, PluginFailure, RequestView,
    ResponseView, RouteDecision, Runtime, Translation, TranslationDecision,
};
use crate::proxy::{ConnInfo, Generation};

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

/// The request as plugins see it.
pub fn request_view(
    parts: &Parts,
    conn: &ConnInfo,
    generation: &Generation,
    rule: usize,
    host: &str,
) -> RequestView {
    RequestView {
        method: parts.method.to_string(),
        scheme: conn.proto.to_string(),
        host: host.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: header_block(&parts.headers),
        client_addr: crate::headers::client_ip(
            conn.client.ip(),
            &parts.headers,
            &generation.config.proxy.trusted_proxies,
        )
        .to_string(),
        listener: conn.listener.to_string(),
        rule: generation.config.rules[rule].name.clone(),
    }
}

/// A member's response as link-translation plugins see it. `public_host` is the Host the client
/// asked for; the internal name is the rule's internal site name (empty when it has none).
pub fn response_view(
    parts: &http::response::Parts,
    rule: &RuleConfig,
    public_host: &str,
    scheme: &str,
) -> ResponseView {
    ResponseView {
        rule: rule.name.clone(),
        public_name: public_host.to_string(),
        internal_name: rule.internal_site_name.clone().unwrap_or_default(),
        public_scheme: scheme.to_string(),
        status: parts.status.as_u16(),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        headers: header_block(&parts.headers),
    }
}

/// Headers as the plugin contract's header block: `name: value` lines joined by `\n`.
pub fn header_block(headers: &http::HeaderMap) -> String {
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

/// The farm as affinity plugins see it: members by index, with their live figures; `sticky` is
/// the member the client's genuine affinity cookie names. Each view takes the next number of the
/// farm's choice sequence.
pub fn farm_view(farm: &Farm, sticky: Option<u32>) -> FarmView {
    FarmView {
        name: farm.name.clone(),
        members: farm
            .members()
            .iter()
            .enumerate()
            .map(|(i, m)| MemberView {
                id: i as u32,
                name: m.name.clone(),
                weight: m.weight(),
                state: match farm.effective_state(m) {
                    MemberState::Active => MemberStateView::Active,
                    MemberState::OutOfService => MemberStateView::OutOfService,
                    MemberState::Draining => MemberStateView::Draining,
                    MemberState::Removed => MemberStateView::Removed,
                    MemberState::UnableToVerify => MemberStateView::UnableToVerify,
                },
                in_flight: m.stats.in_flight.load(Ordering::Relaxed),
                latency_ewma_us: m.stats.latency_ewma_us.load(Ordering::Relaxed),
                requests: m.stats.requests.load(Ordering::Relaxed),
                failures: m.stats.failures.load(Ordering::Relaxed),
                bytes: m.stats.bytes.load(Ordering::Relaxed),
            })
            .collect(),
        sticky_member: sticky,
        sequence: farm.sequence.fetch_add(1, Ordering::Relaxed),
    }
}

/// Asks the router chain. `Ok(None)`: every plugin passed.
pub async fn route(
    runtime: &Runtime,
    chain: &[Arc<Plugin>],
    view: &RequestView,
    generation: &Generation,
) -> Result<Option<Routed>, ProxyError> {
    for plugin in chain {
        let decision = match runtime.route(plugin, view).await {
            Ok(d) => d,
            Err(f) => {
                fail(f)?;
                continue;
            }
        };
        let routed = match decision {
            RouteDecision::Pass => continue,
            RouteDecision::Forward(f) => forward(f, generation),
            RouteDecision::Respond(r) => respond(r.status, r.headers, r.body),
            RouteDecision::Redirect(r) => redirect(r.status, &r.location),
        };
        match routed {
            Ok(r) => return Ok(Some(r)),
            Err(reason) => fail(runtime.invalid(plugin, "router", reason))?,
        }
    }
    Ok(None)
}

/// A member an affinity plugin chose, and whether the client is to be pinned to it.
pub struct Chosen {
    pub member: Arc<Member>,
    pub index: usize,
    pub stick: bool,
}

/// Asks the affinity chain for a member. `Ok(None)`: every plugin passed (or chose a member that
/// cannot take requests now), so the host's own least-current-request choice decides.
pub async fn choose(
    runtime: &Runtime,
    chain: &[Arc<Plugin>],
    view: &RequestView,
    farm: &Farm,
    sticky: Option<u32>,
) -> Result<Option<Chosen>, ProxyError> {
    let farm_view = farm_view(farm, sticky);
    for plugin in chain {
        match runtime.choose(plugin, view, &farm_view).await {
            Ok(AffinityDecision::Pass) => {}
            Ok(AffinityDecision::Member(choice)) => {
                let index = choice.id as usize;
                let members = farm.members();
                let Some(member) = members.get(index) else {
                    // A member added since the view was made cannot have been chosen; the
                    // runtime checked the id against the view.
                    return Ok(None);
                };
                let usable = matches!(
                    farm.effective_state(member),
                    MemberState::Active | MemberState::Draining
                ) && member.has_addrs();
                if usable {
                    return Ok(Some(Chosen {
                        member: Arc::clone(member),
                        index,
                        stick: choice.stick,
                    }));
                }
                tracing::debug!(plugin = %plugin.name, member = %member.name, state = member.state().as_str(), "affinity chose a member that cannot take requests; balancing instead");
                return Ok(None);
            }
            Err(f) => fail(f)?,
        }
    }
    Ok(None)
}

/// Asks the link-translation chain what to rewrite in a response. `Ok(None)`: nothing.
pub async fn translation(
    runtime: &Runtime,
    chain: &[Arc<Plugin>],
    view: &ResponseView,
) -> Result<Option<Translation>, ProxyError> {
    for plugin in chain {
        match runtime.decide_translation(plugin, view).await {
            Ok(TranslationDecision::Pass) => {}
            Ok(TranslationDecision::Translate(t)) => return Ok(Some(t)),
            Ok(TranslationDecision::Transform) => fail(runtime.invalid(
                plugin,
                "link-translation",
                "asked to transform the body itself, which this farmgate does not offer yet; decide `translate` with mappings instead".into(),
            ))?,
            Err(f) => fail(f)?,
        }
    }
    Ok(None)
}

/// Fail-open: log (done by the runtime) and go on; fail-closed: the request gets 503.
fn fail(f: PluginFailure) -> Result<(), ProxyError> {
    if f.fail_closed {
        Err(ProxyError::Plugin(f))
    } else {
        Ok(())
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
