//! What plugins are handed, made from the request path's own types: the request (once per
//! request, shared by every call about it), a member's response, the farm's live state per call
//! and, when a plugin asks, its member table and figures. What a plugin decides from them is
//! `policy`'s.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::HeaderValue;
use http::request::Parts;

use crate::farm::{Farm, MemberState, Tried};
use crate::generation::{ConnInfo, Generation};
use crate::plugins::{
    FarmFacts, FarmLive, FarmTable, MemberFigures, MemberInfo, MemberLive, MemberStateView,
    RequestFacts, ResponseFacts,
};

/// The request as plugins read it. The head is copied once (its values are shared buffers, so
/// this copies no header bytes), only for requests a plugin is asked about.
pub fn request_facts(
    parts: &Parts,
    conn: &ConnInfo,
    generation: &Generation,
    rule: usize,
    host: Option<&HeaderValue>,
) -> Arc<RequestFacts> {
    Arc::new(RequestFacts {
        method: parts.method.clone(),
        scheme: conn.proto,
        host: host.cloned().unwrap_or(HeaderValue::from_static("")),
        uri: parts.uri.clone(),
        headers: parts.headers.clone(),
        client_addr: crate::headers::client_ip(
            conn.client.ip(),
            &parts.headers,
            &generation.config.proxy.trusted_proxies,
        ),
        listener: Arc::clone(&conn.listener),
        rule: Arc::clone(&generation.rule_names[rule]),
    })
}

/// A member's response as link-translation plugins read it. The headers are lent: they move
/// into the facts and back out with [`ResponseFacts::into_headers`].
pub fn response_facts(
    parts: &mut http::response::Parts,
    generation: &Generation,
    rule: usize,
    public_host: Option<&HeaderValue>,
    scheme: &'static str,
) -> Arc<ResponseFacts> {
    Arc::new(ResponseFacts {
        rule: Arc::clone(&generation.rule_names[rule]),
        internal_name: Arc::clone(&generation.internal_names[rule]),
        public_name: public_host.cloned().unwrap_or(HeaderValue::from_static("")),
        public_scheme: scheme,
        status: parts.status.as_u16(),
        headers: std::mem::take(&mut parts.headers),
    })
}

/// The farm's live state for one member choice: each member's state and requests in flight,
/// `sticky` the member the client's genuine affinity cookie names. Members in `tried` (a
/// request being tried again) are handed as out of service. Each takes the next number of the
/// farm's choice sequence.
pub fn farm_live(farm: &Farm, sticky: Option<u32>, tried: &Tried) -> FarmLive {
    FarmLive {
        table: farm.table_number(),
        members: farm
            .members()
            .iter()
            .enumerate()
            .map(|(i, m)| MemberLive {
                state: if tried.contains(i) {
                    MemberStateView::OutOfService
                } else {
                    state_view(farm.effective_state(m))
                },
                in_flight: m.stats.in_flight.load(Ordering::Relaxed),
            })
            .collect(),
        sticky_member: sticky,
        sequence: farm.sequence.fetch_add(1, Ordering::Relaxed),
    }
}

fn state_view(s: MemberState) -> MemberStateView {
    match s {
        MemberState::Active => MemberStateView::Active,
        MemberState::OutOfService => MemberStateView::OutOfService,
        MemberState::Draining => MemberStateView::Draining,
        MemberState::Removed => MemberStateView::Removed,
        MemberState::UnableToVerify => MemberStateView::UnableToVerify,
    }
}

impl FarmFacts for Farm {
    fn table(&self) -> FarmTable {
        FarmTable {
            name: self.name.clone(),
            members: self
                .members()
                .iter()
                .map(|m| MemberInfo {
                    name: m.name.clone(),
                    weight: m.weight(),
                })
                .collect(),
        }
    }

    fn figures(&self) -> Vec<MemberFigures> {
        self.members()
            .iter()
            .map(|m| MemberFigures {
                latency_ewma_us: m.stats.latency_ewma_us.load(Ordering::Relaxed),
                requests: m.stats.requests.load(Ordering::Relaxed),
                failures: m.stats.failures.load(Ordering::Relaxed),
                bytes: m.stats.bytes.load(Ordering::Relaxed),
            })
            .collect()
    }
}
