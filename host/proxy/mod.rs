//! The request path as named phases over one per-request context, the [`Exchange`]:
//!
//! 1. **accept** ([`Proxy::handle`]): load the current [`Generation`], start the access-log
//!    record and the request's span;
//! 2. **route**: listener + Host + path -> publishing rule; plain HTTP to a rule that wants HTTPS
//!    is redirected;
//! 3. **router chain**: another farm, a rewritten head, or an answer without a member;
//! 4. **upstream request**: the head rewritten for the member (hop-by-hop headers, forwarding
//!    headers, Via, Host, the router's changes);
//! 5. **choose member, attempt, retry**: the farm's balancer picks a member, the pool gives a
//!    connection, and a failure the error says may be retried goes to another member;
//! 6. **response filter**: the member's head rewritten (hop-by-hop headers, the affinity cookie),
//!    live traffic judged, an upgrade handed to a tunnel;
//! 7. **link translation**: what the chain decides is applied as the body streams;
//! 8. **finish**: a failure becomes its response (in [`crate::error`], the one place), Via and
//!    HSTS go on, and the one access-log record is filled in and handed to the body.
//!
//! This module sequences the phases and nothing else: what plugins decide and what that does is
//! `policy`'s, how heads are rewritten `headers`', how connections are had `pool`'s. A request
//! loads the generation once and uses it to the end, so a reload never changes the rules under a
//! request in flight. Bodies are streamed, never buffered.

mod exchange;
mod head;

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::header;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tracing::Instrument;

use crate::access_log::AccessLog;
use crate::body::{Completion, ProxyBody};
use crate::error::{ProxyError, Retry};
use crate::farm::{InFlight, Member, Tried};
use crate::generation::{ConnInfo, Generation};
use crate::headers;
use crate::plugins::{RequestFacts, Runtime};
use crate::policy::{Balancer, Chosen, LinksChain, ResponseHead, Rewrite, Routed, RouterChain};
use crate::pool::{Pool, Pooled};
use crate::upgrade::Upgrade;
use crate::upstream::{ConnectError, ReqBody, Route};
use exchange::{Exchange, Origin, request_span};
use head::{clone_head, fit_request, replayable};

pub struct Proxy {
    generation: ArcSwap<Generation>,
    pub pool: Arc<Pool>,
    access_log: AccessLog,
    /// The plugin runtime: the built-in plugins, and those of the watched folder.
    pub plugins: Arc<Runtime>,
}

/// The request as it goes to members, with what the attempts need to know about it.
struct Outgoing {
    req: Request<ReqBody>,
    upgrade: Option<Upgrade>,
    /// Host is each member's own name (no rule, plugin or client Host applies).
    per_member_host: bool,
    /// The request body's declared length, counted into the member's traffic.
    request_bytes: u64,
    head_only: bool,
}

/// The member that answered, with what the response keeps until its body ends.
struct Answered {
    chosen: Chosen,
    pooled: Pooled,
    in_flight: InFlight,
}

/// How one attempt on one member ended without a response.
struct Failed {
    error: ProxyError,
    /// The request, when it never left (no connection could be made), for another member.
    unsent: Option<Request<ReqBody>>,
}

impl Proxy {
    pub fn new(
        generation: Generation,
        pool: Arc<Pool>,
        access_log: AccessLog,
        plugins: Arc<Runtime>,
    ) -> Proxy {
        Proxy {
            generation: ArcSwap::from_pointee(generation),
            pool,
            access_log,
            plugins,
        }
    }

    /// Swaps in a new generation: requests in flight finish on the one they loaded.
    pub fn install(&self, generation: Generation) {
        self.generation.store(Arc::new(generation));
    }

    /// Access log lines dropped because the writer fell behind.
    /// Writes the access-log line of a request the framing checks refused.
    pub fn log_refused(&self, client: std::net::SocketAddr, reason: &str) {
        self.access_log.refused(client, reason);
    }

    pub fn access_log_dropped(&self) -> u64 {
        self.access_log.dropped()
    }

    pub fn generation(&self) -> Arc<Generation> {
        self.generation.load_full()
    }

    /// Phase 1, accept: serves one request; never fails (failures become responses).
    pub async fn handle(&self, req: Request<Incoming>, conn: &ConnInfo) -> Response<ProxyBody> {
        let start = Instant::now();
        let busy = conn.framing.busy();
        let generation = self.generation.load_full();
        let log = self.access_log.record(&req, conn.client, start);
        let span = request_span(&req, conn);
        let mut ex = Exchange::new(&generation, conn, span.clone());
        let result = self.forward(&mut ex, req, start).instrument(span).await;
        let resp = ex.finish(result, log);
        // Whether the bytes after an upgrade request are HTTP/1 again is for the framing
        // checks to hear, and the connection is not idle until the response has gone out.
        conn.framing
            .answered(resp.status() == StatusCode::SWITCHING_PROTOCOLS);
        resp.map(|b| b.holding(busy))
    }

    /// Phases 2 to 7, in order.
    async fn forward(
        &self,
        ex: &mut Exchange<'_>,
        req: Request<Incoming>,
        start: Instant,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (parts, body) = req.into_parts();
        ex.route(&parts)?;
        if let Some(resp) = ex.https_redirect(&parts) {
            return Ok(resp);
        }
        let mut facts = None;
        let rewrite = match self.router_chain(ex, &parts, &mut facts).await? {
            Routed::Forward(rewrite) => rewrite,
            Routed::Respond(resp) => {
                ex.origin = Origin::Router;
                return Ok(*resp);
            }
        };
        let farm = rewrite.farm.unwrap_or(ex.rule_config().farm);
        ex.farm = Some(farm);
        ex.span
            .record("farm", ex.generation.farms[farm].name.as_str());
        let balancer = Balancer::for_farm(&self.plugins, ex.generation, farm, &parts.headers);
        if balancer.asks_plugins() && facts.is_none() {
            facts = Some(ex.request_facts(&parts));
        }
        let out = ex.upstream_request(parts, body, rewrite)?;
        let head_only = out.head_only;
        let (resp, answered, upgrade) = self.attempts(ex, &balancer, facts.as_ref(), out).await?;
        tracing::trace!(
            elapsed_ms = start.elapsed().as_secs_f64() * 1000.0,
            "response head forwarded"
        );
        self.response_filter(ex, resp, answered, upgrade, head_only)
            .await
    }

    /// Phase 3, the router chain: `Forward` with no changes when no plugin is asked or all pass.
    async fn router_chain(
        &self,
        ex: &Exchange<'_>,
        parts: &Parts,
        facts: &mut Option<Arc<RequestFacts>>,
    ) -> Result<Routed, ProxyError> {
        let Some(chain) = RouterChain::for_rule(&self.plugins, ex.generation, ex.rule_index())
        else {
            return Ok(Routed::Forward(Rewrite::default()));
        };
        let facts = facts.insert(ex.request_facts(parts));
        Ok(chain
            .decide(facts)
            .await?
            .unwrap_or_else(|| Routed::Forward(Rewrite::default())))
    }

    /// Phase 5, choose a member and attempt; a failure that the error says may be retried goes
    /// to another member, within the retry budget.
    async fn attempts(
        &self,
        ex: &mut Exchange<'_>,
        balancer: &Balancer<'_>,
        facts: Option<&Arc<RequestFacts>>,
        out: Outgoing,
    ) -> Result<(Response<Incoming>, Answered, Option<Upgrade>), ProxyError> {
        let Outgoing {
            mut req,
            upgrade,
            per_member_host,
            request_bytes,
            ..
        } = out;
        let farm = ex.farm();
        let mut tried = Tried::default();
        let mut retries_left = ex.generation.config.proxy.connect_retries;
        // An idempotent request without a body can be sent again, elsewhere or on a fresh
        // connection, if a member fails it before answering: one copy of its head is kept for
        // that, and copied again only when it is needed.
        let again = (upgrade.is_none() && replayable(&req)).then(|| clone_head(&req));
        loop {
            let chosen = balancer.choose(facts, &tried).await?;
            let member = Arc::clone(&chosen.member);
            ex.member = Some(Arc::clone(&member));
            if per_member_host {
                req.headers_mut()
                    .insert(header::HOST, member.authority.clone());
            }
            let route = ex.generation.upstreams[ex.farm_index()].route(
                &member.host,
                ex.rule_config().internal_site_name.as_deref(),
                upgrade.is_some(),
            );
            let in_flight = member.begin();
            let sent_at = Instant::now();
            let failed = match self.attempt(ex, &member, &route, req, again.as_ref()).await {
                Ok((resp, pooled)) => {
                    let upstream = sent_at.elapsed();
                    member.record_latency(upstream);
                    member
                        .stats
                        .bytes
                        .fetch_add(request_bytes, std::sync::atomic::Ordering::Relaxed);
                    ex.span.record("member", member.name.as_str());
                    ex.span
                        .record("upstream_ms", upstream.as_secs_f64() * 1000.0);
                    let answered = Answered {
                        chosen,
                        pooled,
                        in_flight,
                    };
                    return Ok((resp, answered, upgrade));
                }
                Err(failed) => failed,
            };
            if let Some(kind) = failed.error.member_failure() {
                ex.live_traffic(&member, Err(kind));
            }
            tried.insert(chosen.index);
            let (next, why) = match failed.error.retry() {
                Retry::Unsent => (failed.unsent, "no connection to the member; trying another"),
                Retry::IfReplayable => (
                    again.as_ref().map(clone_head),
                    "member failed the request before answering; trying another",
                ),
                Retry::Never => (None, ""),
            };
            match next {
                Some(next) if retries_left > 0 && tried.len() < farm.members().len() => {
                    tracing::warn!(member = %member.name, error = %failed.error, "{why}");
                    retries_left -= 1;
                    req = next;
                }
                _ => return Err(failed.error),
            }
        }
    }

    /// One attempt on one member. A pooled connection that turns out to be closed is replaced
    /// by a fresh one once: when hyper hands the unsent request back, or, for a request with no
    /// body and an idempotent method (`again`, its head), when the stale connection closed
    /// before answering.
    async fn attempt(
        &self,
        ex: &Exchange<'_>,
        member: &Member,
        route: &Route,
        mut req: Request<ReqBody>,
        again: Option<&Request<ReqBody>>,
    ) -> Result<(Response<Incoming>, Pooled), Failed> {
        let farm = &ex.farm().name;
        let timeout = ex.generation.config.proxy.response_timeout;
        let failed = |error| Failed {
            error,
            unsent: None,
        };
        let mut fresh = false;
        loop {
            let mut pooled = match self.connect(member, route, fresh).await {
                Ok(p) => p,
                Err(source) => {
                    let error = ProxyError::Connect {
                        farm: farm.clone(),
                        member: member.name.clone(),
                        source,
                    };
                    return Err(Failed {
                        error,
                        unsent: Some(req),
                    });
                }
            };
            // What the copy lacks that this attempt set: the member's own Host.
            let host = req.headers().get(header::HOST).cloned();
            fit_request(&mut req, pooled.sender.is_h2(), route.scheme());
            match tokio::time::timeout(timeout, pooled.sender.try_send_request(req)).await {
                Ok(Ok(resp)) => return Ok((resp, pooled)),
                Ok(Err(mut e)) if pooled.reused && !fresh => {
                    fresh = true;
                    match (e.take_message(), again) {
                        (Some(unsent), _) => req = unsent,
                        (None, Some(head)) => {
                            req = clone_head(head);
                            if let Some(host) = host {
                                req.headers_mut().insert(header::HOST, host);
                            }
                        }
                        (None, None) => {
                            return Err(failed(ProxyError::exchange(
                                farm,
                                &member.name,
                                e.into_error(),
                            )));
                        }
                    }
                    tracing::debug!(rule = %ex.rule_config().name, member = %member.name, "pooled connection was stale; retrying on a new one");
                }
                Ok(Err(e)) => {
                    return Err(failed(ProxyError::exchange(
                        farm,
                        &member.name,
                        e.into_error(),
                    )));
                }
                Err(_) => {
                    return Err(failed(ProxyError::ResponseTimeout {
                        farm: farm.clone(),
                        member: member.name.clone(),
                        timeout,
                    }));
                }
            }
        }
    }

    /// A connection to the member, trying its addresses in resolver order.
    async fn connect(
        &self,
        member: &Member,
        route: &Route,
        fresh: bool,
    ) -> Result<Pooled, ConnectError> {
        let addrs = member.addrs();
        let mut last = None;
        for &addr in addrs.iter() {
            let key = route.key(addr);
            let got = if fresh {
                self.pool.connect_new(&key, route).await
            } else {
                self.pool.checkout(&key, route).await
            };
            match got {
                Ok(p) => return Ok(p),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| ConnectError::Io {
            addr: std::net::SocketAddr::from(([0, 0, 0, 0], member.port)),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "member has no address"),
        }))
    }

    /// Phases 6 and 7, response filter and link translation: the member's head rewritten, live
    /// traffic judged, then the body streamed through link translation where the chain asks for
    /// it. A member that switched protocols gets a tunnel instead.
    async fn response_filter(
        &self,
        ex: &mut Exchange<'_>,
        resp: Response<Incoming>,
        answered: Answered,
        upgrade: Option<Upgrade>,
        head_only: bool,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            // A switch nobody asked for (an upgrade refused here) is never passed on: it would
            // be a tunnel past the proxy.
            let Some(upgrade) = upgrade else {
                return Err(ProxyError::Switched {
                    farm: ex.farm().name.clone(),
                    member: answered.chosen.member.name.clone(),
                });
            };
            return Ok(ex.tunnel(resp, upgrade, answered));
        }
        let (mut parts, body) = resp.into_parts();
        headers::remove_hop_by_hop(&mut parts.headers);
        answered.chosen.pin(&mut parts.headers, ex.conn.proto);
        ex.live_traffic(&answered.chosen.member, Ok(parts.status));
        ex.origin = Origin::Member;
        let completion = Completion {
            pooled: Some(answered.pooled),
            in_flight: Some(answered.in_flight),
            log: None,
        };
        let rule = ex.rule_index();
        let body = match LinksChain::for_rule(&self.plugins, ex.generation, rule) {
            None => ProxyBody::upstream(body, completion),
            Some(chain) => {
                let head = ResponseHead {
                    parts: &mut parts,
                    public_host: ex.client_host.as_ref(),
                    proto: ex.conn.proto,
                    head_only,
                };
                chain.translate(head, body, completion).await?
            }
        };
        Ok(Response::from_parts(parts, body))
    }
}
