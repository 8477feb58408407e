//! The views plugins get: the request, a member's response, the farm with its members' live
//! figures, and the header block of the contract. Built from the request path's own types; what
//! a plugin decides from them is `policy`'s.

use std::sync::atomic::Ordering;

use http::header;
use http::request::Parts;

use crate::config::RuleConfig;
use crate::farm::{Farm, MemberState};
use crate::generation::{ConnInfo, Generation};
use crate::plugins::{FarmView, MemberStateView, MemberView, RequestView, ResponseView};

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
