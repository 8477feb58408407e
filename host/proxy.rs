//! The request path, as named phases: route (listener + Host + path -> publishing rule), pick a
//! member of the rule's farm, rewrite the request head, forward over a pooled connection, rewrite
//! the response head, and map any failure to a status (in [`crate::error`], the one place).
//!
//! A request loads the current [`Generation`] once and uses it to the end, so a reload never
//! changes the rules under a request in flight. Bodies are streamed, never buffered.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use tracing::Instrument;
use tracing::field::Empty;

use crate::access_log::{AccessLog, AccessRecord};
use crate::body::{ClientFault, Completion, ProxyBody, ReqBody};
use crate::config::{Config, RuleConfig};
use crate::error::ProxyError;
use crate::farm::{Farm, Member};
use crate::headers::{self, Forwarding};
use crate::plugins::{Hook, Runtime, Translation};
use crate::policy;
use crate::pool::{ConnectError, Pool, Pooled};
use crate::routing::RouteTable;
use crate::translate::{self, BodyTranslator, Coding, Mappings};

/// Everything built from one config: immutable, swapped whole on reload.
pub struct Generation {
    pub config: Arc<Config>,
    pub routes: RouteTable,
    pub farms: Vec<Arc<Farm>>,
    /// Per rule, the Host value sent to members when it is fixed (the internal site name).
    rule_hosts: Vec<Option<HeaderValue>>,
    /// This proxy's `Via` entries.
    via: headers::Via,
    /// Per rule, whether the built-in plugins have anything to do for it: URL rewrite rules for
    /// the router, something to map for link translation. Where they have not, they are not
    /// asked (they would pass), which saves a plugin call per request.
    builtin_router: Vec<bool>,
    builtin_links: Vec<bool>,
    /// Per farm, how its members are reached (HTTP or HTTPS, HTTP/2, the TLS identity).
    pub upstreams: Vec<crate::bridge::FarmUpstream>,
    /// Per rule, its `Strict-Transport-Security` value for HTTPS responses.
    hsts: Vec<Option<HeaderValue>>,
}

impl Generation {
    pub fn new(config: Arc<Config>) -> Generation {
        Generation::carrying(config, None)
    }

    /// The index of the listener named `name` in this generation's config; `None` for a
    /// listener a reload removed while its connections finish.
    pub fn listener(&self, name: &str) -> Option<usize> {
        self.config.listeners.iter().position(|l| l.name == name)
    }

    /// The generation of `config`, carrying over from `previous` the members that persist
    /// (see [`Farm::carrying`]).
    pub fn carrying(config: Arc<Config>, previous: Option<&Generation>) -> Generation {
        let routes = RouteTable::new(&config);
        let farms = config
            .farms
            .iter()
            .map(|f| {
                let before = previous.and_then(|p| {
                    let i = p.config.farms.iter().position(|o| o.name == f.name)?;
                    Some((p.farms[i].as_ref(), &p.config.farms[i]))
                });
                let farm = Farm::carrying(f, &config.proxy.affinity_key.bytes, before);
                farm.update_panic();
                Arc::new(farm)
            })
            .collect();
        let rule_hosts = config
            .rules
            .iter()
            .map(|r| {
                r.internal_site_name
                    .as_deref()
                    .and_then(|n| HeaderValue::from_str(n).ok())
            })
            .collect();
        let via = headers::Via::new(&config.proxy.via);
        let builtin_router = config
            .rules
            .iter()
            .map(|r| !r.rewrites.is_empty())
            .collect();
        let builtin_links = config
            .rules
            .iter()
            .map(|r| {
                r.links.enabled && (r.internal_site_name.is_some() || !r.links.mappings.is_empty())
            })
            .collect();
        let upstreams = config
            .farms
            .iter()
            .map(|f| crate::bridge::FarmUpstream::new(&f.upstream))
            .collect();
        let hsts = config
            .rules
            .iter()
            .map(|r| crate::https::hsts_value(&r.https))
            .collect();
        Generation {
            config,
            routes,
            farms,
            rule_hosts,
            via,
            builtin_router,
            builtin_links,
            upstreams,
            hsts,
        }
    }
}

/// Facts about the client connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The listener's name (a reload may renumber listeners; connections outlive that).
    pub listener: Arc<str>,
    pub client: SocketAddr,
    /// The client address formatted for the forwarding headers.
    pub client_addr: headers::ClientAddr,
    /// `http` or `https`.
    pub proto: &'static str,
    /// Tells the connection's framing checks how each request was answered and when its
    /// response has gone out.
    pub framing: Arc<crate::framing::Shared>,
}

pub struct Proxy {
    generation: ArcSwap<Generation>,
    pub pool: Arc<Pool>,
    access_log: AccessLog,
    /// The plugin runtime: the built-in plugins, and those of the watched folder.
    pub plugins: Arc<Runtime>,
}

/// How one attempt on one member ended without a response.
enum AttemptError {
    /// No connection could be made; the request was not sent and is handed back.
    Connect(ConnectError, Box<Request<ReqBody>>),
    /// The request was (or may have been) sent; it cannot be tried elsewhere.
    Failed(ProxyError),
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
    pub fn access_log_dropped(&self) -> u64 {
        self.access_log.dropped()
    }

    pub fn generation(&self) -> Arc<Generation> {
        self.generation.load_full()
    }

    /// Serves one request; never fails (failures become responses).
    pub async fn handle(&self, req: Request<Incoming>, conn: &ConnInfo) -> Response<ProxyBody> {
        let start = Instant::now();
        let busy = conn.framing.busy();
        let generation = self.generation.load_full();
        let mut log = self.access_log.record(&req, conn.client, start);
        let span = tracing::info_span!(
            "request",
            method = %req.method(),
            path = req.uri().path(),
            client = %conn.client.ip(),
            rule = Empty,
            farm = Empty,
            member = Empty,
            status = Empty,
            upstream_ms = Empty,
        );
        let result = self
            .forward(&generation, req, conn, start, &mut log)
            .instrument(span.clone())
            .await;
        let resp = match result {
            Ok(resp) => {
                span.record("status", resp.status().as_u16());
                resp
            }
            Err(e) => {
                let status = e.status();
                span.record("status", status.as_u16());
                if status.is_server_error() {
                    span.in_scope(
                        || tracing::warn!(error = %e, status = status.as_u16(), "request failed"),
                    );
                } else {
                    span.in_scope(
                        || tracing::debug!(error = %e, status = status.as_u16(), "request refused"),
                    );
                }
                if let Some(l) = &mut log {
                    l.status = status.as_u16();
                }
                let resp = e.to_response(
                    generation.config.proxy.retry_after,
                    generation.via.for_version(http::Version::HTTP_11),
                );
                resp.map(|b| b.with_log(log))
            }
        };
        // Whether the bytes after an upgrade request are HTTP/1 again is for the framing
        // checks to hear, and the connection is not idle until the response has gone out.
        conn.framing
            .answered(resp.status() == http::StatusCode::SWITCHING_PROTOCOLS);
        resp.map(|b| b.holding(busy))
    }

    async fn forward(
        &self,
        generation: &Generation,
        req: Request<Incoming>,
        conn: &ConnInfo,
        start: Instant,
        log: &mut Option<AccessRecord>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (mut parts, body) = req.into_parts();

        // Route.
        let client_host = request_host(&parts)?;
        let host_str = client_host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let rule_idx = generation
            .listener(&conn.listener)
            .and_then(|l| generation.routes.route(l, host_str, parts.uri.path()))
            .ok_or_else(|| ProxyError::NoRule {
                host: host_str.to_string(),
                path: parts.uri.path().to_string(),
            })?;
        let rule = &generation.config.rules[rule_idx];
        let span = tracing::Span::current();
        span.record("rule", rule.name.as_str());

        // HTTPS: a plain-HTTP request to a rule that wants HTTPS is sent there.
        if let Some(resp) = crate::https::redirect(&rule.https, conn.proto, &parts, host_str) {
            let mut log = log.take();
            if let Some(l) = log.as_mut() {
                l.rule = Some(rule.name.clone());
                l.status = resp.status().as_u16();
            }
            return Ok(resp.map(|b| b.with_log(log)));
        }
        let hsts = generation.hsts[rule_idx].as_ref();

        // Router chain: may pick another farm, rewrite the head, or answer directly.
        let runtime = &*self.plugins;
        let mut router_chain = runtime.chain(Hook::Router, &rule.router);
        if generation.builtin_router[rule_idx] {
            router_chain.extend(runtime.builtin(Hook::Router));
        }
        let mut view = None;
        let mut rewrite = policy::Rewrite::default();
        if !router_chain.is_empty() {
            let v = view.insert(policy::request_view(
                &parts, conn, generation, rule_idx, host_str,
            ));
            match policy::route(runtime, &router_chain, v, generation).await? {
                None => {}
                Some(policy::Routed::Forward(rw)) => rewrite = rw,
                Some(policy::Routed::Respond(resp)) => {
                    let mut resp = *resp;
                    generation.via.append(resp.headers_mut(), Version::HTTP_11);
                    crate::https::add_hsts(resp.headers_mut(), conn.proto, hsts);
                    let mut log = log.take();
                    if let Some(l) = log.as_mut() {
                        l.rule = Some(rule.name.clone());
                        l.status = resp.status().as_u16();
                    }
                    return Ok(resp.map(|b| b.with_log(log)));
                }
            }
        }
        let farm_idx = rewrite.farm.unwrap_or(rule.farm);
        let farm = &generation.farms[farm_idx];
        span.record("farm", farm.name.as_str());
        if let Some(l) = log.as_mut() {
            l.rule = Some(rule.name.clone());
            l.farm = Some(farm.name.clone());
        }
        let mut affinity_chain =
            runtime.chain(Hook::Affinity, &generation.config.farms[farm_idx].affinity);
        affinity_chain.extend(runtime.builtin(Hook::Affinity));
        if !affinity_chain.is_empty() && view.is_none() {
            view = Some(policy::request_view(
                &parts, conn, generation, rule_idx, host_str,
            ));
        }
        let sticky = farm.sticky_member(&parts.headers);
        let head_only = parts.method == Method::HEAD;
        let request_bytes = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if request_bytes > rule.max_body_bytes {
            return Err(ProxyError::BodyTooLarge {
                limit: rule.max_body_bytes,
            });
        }

        // Rewrite the request head. An upgrade (WebSocket) keeps the two headers it needs.
        let upgrade = crate::upgrade::requested(&mut parts);
        headers::remove_hop_by_hop(&mut parts.headers);
        if let Some(u) = &upgrade {
            crate::upgrade::restore(&mut parts.headers, u.protocol());
        }
        headers::add_forwarding(
            &mut parts.headers,
            &Forwarding {
                client: &conn.client_addr,
                proto: conn.proto,
                host: client_host.as_ref(),
            },
        );
        generation.via.append(&mut parts.headers, parts.version);
        parts.uri = match &rewrite.path_and_query {
            Some(p) => p.parse().unwrap_or_else(|_| origin_form(&parts.uri)),
            None => origin_form(&parts.uri),
        };
        parts.version = Version::HTTP_11;
        let plugin_host = rewrite.host.take();
        let per_member_host =
            plugin_host.is_none() && !rule.preserve_host && rule.internal_site_name.is_none();
        if let Some(h) = plugin_host {
            parts.headers.insert(header::HOST, h);
        } else if !rule.preserve_host
            && let Some(h) = &generation.rule_hosts[rule_idx]
        {
            parts.headers.insert(header::HOST, h.clone());
        } else if rule.preserve_host
            && let Some(h) = &client_host
        {
            parts.headers.insert(header::HOST, h.clone());
        }
        for name in &rewrite.remove_headers {
            parts.headers.remove(name);
        }
        for (name, value) in rewrite.set_headers.drain(..) {
            parts.headers.insert(name, value);
        }
        let mut req = Request::from_parts(parts, ReqBody::limited(body, rule.max_body_bytes));

        // Pick a member and forward; a member that refuses the connection is skipped (nothing was
        // sent, so this is safe for any method) within the retry budget.
        let mut tried = 0u64;
        let mut retries_left = generation.config.proxy.connect_retries;
        // A member failed the exchange without a response: counted, and judged by the live
        // traffic test.
        let member_failed = |member: &Arc<Member>| {
            member
                .stats
                .failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            crate::health::live_traffic(
                farm,
                member,
                &generation.config.farms[farm_idx].health,
                None,
            );
        };
        loop {
            // Affinity chain first (on the first attempt), then the host's own balancing.
            let chosen = match &view {
                Some(v) if tried == 0 && !affinity_chain.is_empty() => {
                    policy::choose(runtime, &affinity_chain, v, farm, sticky).await?
                }
                _ => None,
            };
            let (member, pin) = match chosen {
                Some(c) => {
                    let pin = c.stick && sticky != Some(c.index as u32);
                    (c.member, pin)
                }
                None => (
                    farm.pick_least_current(tried)
                        .map_err(|reason| ProxyError::NoMember {
                            farm: farm.name.clone(),
                            reason,
                        })?,
                    false,
                ),
            };
            if per_member_host {
                req.headers_mut()
                    .insert(header::HOST, member.authority.clone());
            }
            let route = generation.upstreams[farm_idx].route(
                &member.host,
                rule.internal_site_name.as_deref(),
                upgrade.is_some(),
            );
            // An idempotent request without a body can be sent again elsewhere if this member
            // fails it before answering; keep its head for that.
            let again = (upgrade.is_none()
                && is_idempotent(req.method())
                && http_body::Body::is_end_stream(req.body()))
            .then(|| clone_head(&req));
            let in_flight = member.begin();
            let sent_at = Instant::now();
            match self
                .attempt(generation, rule, farm, &member, &route, req)
                .await
            {
                Ok((mut resp, pooled)) => {
                    let upstream = sent_at.elapsed();
                    member.record_latency(upstream);
                    member
                        .stats
                        .bytes
                        .fetch_add(request_bytes, std::sync::atomic::Ordering::Relaxed);
                    span.record("member", member.name.as_str());
                    span.record("upstream_ms", upstream.as_secs_f64() * 1000.0);
                    // The member switched protocols: hand both connections to a tunnel.
                    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS
                        && let Some(u) = upgrade
                    {
                        let protocol = u.protocol().clone();
                        u.tunnel(
                            &mut resp,
                            generation.config.proxy.upgrade_idle_timeout,
                            in_flight,
                        );
                        drop(pooled);
                        let (mut parts, _) = resp.into_parts();
                        headers::remove_hop_by_hop(&mut parts.headers);
                        crate::upgrade::restore(&mut parts.headers, &protocol);
                        generation.via.append(&mut parts.headers, parts.version);
                        let mut log = log.take();
                        if let Some(l) = log.as_mut() {
                            l.status = parts.status.as_u16();
                            l.member = Some(member.name.clone());
                        }
                        return Ok(Response::from_parts(
                            parts,
                            ProxyBody::empty().with_log(log),
                        ));
                    }
                    let (mut parts, body) = resp.into_parts();
                    headers::remove_hop_by_hop(&mut parts.headers);
                    generation.via.append(&mut parts.headers, parts.version);
                    crate::https::add_hsts(&mut parts.headers, conn.proto, hsts);
                    if pin {
                        let secure = usize::from(conn.proto == "https");
                        parts.headers.append(
                            header::SET_COOKIE,
                            member.affinity.set_cookie[secure].clone(),
                        );
                    }
                    crate::health::live_traffic(
                        farm,
                        &member,
                        &generation.config.farms[farm_idx].health,
                        Some(parts.status),
                    );
                    let mut log = log.take();
                    if let Some(l) = log.as_mut() {
                        l.status = parts.status.as_u16();
                        l.member = Some(member.name.clone());
                    }
                    tracing::trace!(
                        elapsed_ms = start.elapsed().as_secs_f64() * 1000.0,
                        "response head forwarded"
                    );
                    let completion = Completion {
                        pooled: Some(pooled),
                        in_flight: Some(in_flight),
                        log,
                    };
                    // Link translation: the chain decides what, the host rewrites.
                    let mut links_chain =
                        runtime.chain(Hook::LinkTranslation, &rule.link_translation);
                    if generation.builtin_links[rule_idx] {
                        links_chain.extend(runtime.builtin(Hook::LinkTranslation));
                    }
                    let translation = if links_chain.is_empty() {
                        None
                    } else {
                        let view = policy::response_view(&parts, rule, host_str, conn.proto);
                        policy::translation(runtime, &links_chain, &view).await?
                    };
                    let body = match translation {
                        Some(t) => translate_response(t, &mut parts, body, head_only, completion),
                        None => ProxyBody::upstream(body, completion),
                    };
                    return Ok(Response::from_parts(parts, body));
                }
                Err(AttemptError::Connect(e, back)) => {
                    member_failed(&member);
                    if let Some(i) = farm.index_of(&member).filter(|i| *i < 64) {
                        tried |= 1 << i;
                    }
                    if retries_left == 0 || farm.members().len() <= tried.count_ones() as usize {
                        return Err(ProxyError::Connect {
                            farm: farm.name.clone(),
                            member: member.name.clone(),
                            source: e,
                        });
                    }
                    tracing::warn!(member = %member.name, error = %e, "no connection to the member; trying another");
                    retries_left -= 1;
                    req = *back;
                }
                Err(AttemptError::Failed(
                    e @ (ProxyError::BodyTooLarge { .. } | ProxyError::BadRequest(_)),
                )) => return Err(e),
                Err(AttemptError::Failed(e)) => {
                    member_failed(&member);
                    // The member closed the exchange before any response byte: an idempotent
                    // bodiless request goes to another member, within the retry budget.
                    let broke_before_answer = matches!(e, ProxyError::Upstream { .. });
                    if let Some(head) = again
                        && broke_before_answer
                        && retries_left > 0
                    {
                        if let Some(i) = farm.index_of(&member).filter(|i| *i < 64) {
                            tried |= 1 << i;
                        }
                        if farm.members().len() > tried.count_ones() as usize {
                            tracing::warn!(member = %member.name, error = %e, "member failed the request before answering; trying another");
                            retries_left -= 1;
                            req = head;
                            continue;
                        }
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Sends the request to one member. A pooled connection that turns out to be closed is
    /// replaced by a fresh one once: when hyper hands the unsent request back, or, for a request
    /// with no body and an idempotent method, when the stale connection closed before answering.
    async fn attempt(
        &self,
        generation: &Generation,
        rule: &RuleConfig,
        farm: &Farm,
        member: &Member,
        route: &crate::bridge::Route,
        mut req: Request<ReqBody>,
    ) -> Result<(Response<Incoming>, Pooled), AttemptError> {
        let timeout = generation.config.proxy.response_timeout;
        let failed = |source: hyper::Error| {
            // A body over the rule's limit, malformed or cut short is the client's doing, not
            // the member's.
            match crate::body::client_fault(&source) {
                Some(ClientFault::TooLarge(limit)) => {
                    return AttemptError::Failed(ProxyError::BodyTooLarge { limit });
                }
                Some(ClientFault::Failed) => {
                    return AttemptError::Failed(ProxyError::BadRequest(
                        "the request body is malformed or was cut short",
                    ));
                }
                None => {}
            }
            AttemptError::Failed(ProxyError::Upstream {
                farm: farm.name.clone(),
                member: member.name.clone(),
                source,
            })
        };
        let mut fresh = false;
        loop {
            let mut pooled = match self.connect(member, route, fresh).await {
                Ok(p) => p,
                Err(e) => return Err(AttemptError::Connect(e, Box::new(req))),
            };
            fit_request(&mut req, pooled.sender.is_h2(), route.scheme());
            let replay = (pooled.reused
                && is_idempotent(req.method())
                && http_body::Body::is_end_stream(req.body()))
            .then(|| clone_head(&req));
            match tokio::time::timeout(timeout, pooled.sender.try_send_request(req)).await {
                Ok(Ok(resp)) => return Ok((resp, pooled)),
                Ok(Err(mut e)) if pooled.reused && !fresh => {
                    fresh = true;
                    match (e.take_message(), replay) {
                        (Some(unsent), _) => req = unsent,
                        (None, Some(head)) => req = head,
                        (None, None) => return Err(failed(e.into_error())),
                    }
                    tracing::debug!(rule = %rule.name, member = %member.name, "pooled connection was stale; retrying on a new one");
                }
                Ok(Err(e)) => return Err(failed(e.into_error())),
                Err(_) => {
                    return Err(AttemptError::Failed(ProxyError::ResponseTimeout {
                        farm: farm.name.clone(),
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
        route: &crate::bridge::Route,
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
            addr: SocketAddr::from(([0, 0, 0, 0], member.port)),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "member has no address"),
        }))
    }
}

/// Applies a link-translation decision to a member's response: the named headers now, the body
/// as it streams (decoded and re-encoded when compressed). Bodies that cannot be translated (an
/// unknown or stacked content coding, a partial response) pass through untouched.
fn translate_response(
    t: Translation,
    parts: &mut http::response::Parts,
    body: Incoming,
    head_only: bool,
    completion: Completion,
) -> ProxyBody {
    let pairs: Vec<(String, String)> = t.mappings.into_iter().map(|m| (m.from, m.to)).collect();
    let Some(mappings) = Mappings::new(&pairs) else {
        return ProxyBody::upstream(body, completion);
    };
    for name in &t.headers {
        let Ok(name) = header::HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        let values: Vec<HeaderValue> = parts.headers.get_all(&name).iter().cloned().collect();
        let mut changed = false;
        let translated: Vec<HeaderValue> = values
            .into_iter()
            .map(|v| {
                let new = v
                    .to_str()
                    .ok()
                    .and_then(|s| translate::translate_header(&mappings, name.as_str(), s))
                    .and_then(|s| HeaderValue::from_str(&s).ok());
                changed |= new.is_some();
                new.unwrap_or(v)
            })
            .collect();
        if changed {
            parts.headers.remove(&name);
            for v in translated {
                parts.headers.append(&name, v);
            }
        }
    }
    let coding = match parts.headers.get(header::CONTENT_ENCODING) {
        None => Some(Coding::Identity),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| Coding::from_content_encoding(Some(s))),
    };
    let has_body = !head_only
        && !http_body::Body::is_end_stream(&body)
        && parts.status != http::StatusCode::PARTIAL_CONTENT
        && !parts.status.is_informational()
        && parts.status != http::StatusCode::NO_CONTENT
        && parts.status != http::StatusCode::NOT_MODIFIED;
    match coding {
        Some(coding) if t.body && has_body => {
            parts.headers.remove(header::CONTENT_LENGTH);
            if let Some(etag) = parts
                .headers
                .get(header::ETAG)
                .and_then(|v| v.to_str().ok())
                && let Ok(weak) = HeaderValue::from_str(&translate::weaken_etag(etag))
            {
                parts.headers.insert(header::ETAG, weak);
            }
            let translator = BodyTranslator::new(coding, Arc::new(mappings));
            ProxyBody::translated(body, translator, completion)
        }
        _ => ProxyBody::upstream(body, completion),
    }
}

/// The host the client asked for: the authority of an absolute-form URI, else the Host header.
/// A HTTP/1.1 request without either is refused (RFC 9112 §3.2).
fn request_host(parts: &Parts) -> Result<Option<HeaderValue>, ProxyError> {
    if let Some(auth) = parts.uri.authority() {
        let v = HeaderValue::from_str(auth.as_str())
            .map_err(|_| ProxyError::BadRequest("the request target's authority is not valid"))?;
        return Ok(Some(v));
    }
    match parts.headers.get(header::HOST) {
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| ProxyError::BadRequest("the Host header is not ASCII"))?;
            if s.is_empty()
                || s.bytes()
                    .any(|b| b.is_ascii_whitespace() || b == b'/' || b == b'@')
            {
                return Err(ProxyError::BadRequest("the Host header is not a host name"));
            }
            Ok(Some(v.clone()))
        }
        None if parts.version == Version::HTTP_11 => Err(ProxyError::BadRequest(
            "an HTTP/1.1 request needs a Host header",
        )),
        None => Ok(None),
    }
}

fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(_) if uri.scheme().is_none() && uri.authority().is_none() => uri.clone(),
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
    }
}

/// Shapes a request for the connection it goes out on: HTTP/2 carries the host in the
/// `:authority` of an absolute URI (and the scheme in `:scheme`), HTTP/1.1 in `Host` with an
/// origin-form target. Free when the request already has the right shape.
fn fit_request(req: &mut Request<ReqBody>, h2: bool, scheme: http::uri::Scheme) {
    if h2 {
        if req.uri().authority().is_none()
            && let Some(host) = req.headers_mut().remove(header::HOST)
            && let Ok(authority) = http::uri::Authority::try_from(host.as_bytes())
        {
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(scheme);
            parts.authority = Some(authority);
            parts.path_and_query = req.uri().path_and_query().cloned();
            if let Ok(uri) = Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
        *req.version_mut() = Version::HTTP_2;
    } else {
        if let Some(authority) = req.uri().authority() {
            if !req.headers().contains_key(header::HOST)
                && let Ok(v) = HeaderValue::from_str(authority.as_str())
            {
                req.headers_mut().insert(header::HOST, v);
            }
            *req.uri_mut() = origin_form(req.uri());
        }
        *req.version_mut() = Version::HTTP_11;
    }
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// A copy of a bodiless request, kept to replay it on a new connection.
fn clone_head(req: &Request<ReqBody>) -> Request<ReqBody> {
    let mut copy = Request::new(ReqBody::Empty);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}
