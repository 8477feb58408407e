//! The per-request context of the phases, [`Exchange`], and the phases that work on the request
//! and response heads alone: route, the upstream request, the tunnel of an upgrade, and finish.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use tracing::Span;
use tracing::field::Empty;

use super::head::request_host;
use super::{Answered, Outgoing};
use crate::access_log::AccessRecord;
use crate::body::ProxyBody;
use crate::config::RuleConfig;
use crate::error::ProxyError;
use crate::farm::{FailureKind, Farm, Member};
use crate::generation::{ConnInfo, Generation};
use crate::headers::{self, Forwarding};
use crate::plugins::RequestFacts;
use crate::policy::Rewrite;
use crate::upgrade::{Requested, Upgrade};
use crate::upstream::ReqBody;

/// One request on its way through the phases: what it was served with and what the phases have
/// found so far. The access log and the span are filled in from it.
pub(super) struct Exchange<'a> {
    pub(super) generation: &'a Generation,
    pub(super) conn: &'a ConnInfo,
    pub(super) span: Span,
    /// The host the client asked for (checked), set by routing.
    pub(super) client_host: Option<HeaderValue>,
    /// The publishing rule (an index into the config's rules), set by routing.
    pub(super) rule: Option<usize>,
    /// The farm (an index into the generation's farms), set after the router chain.
    pub(super) farm: Option<usize>,
    /// The member tried last: the access log names it, whether or not it answered.
    pub(super) member: Option<Arc<Member>>,
    /// Where the response comes from, which decides what `finish` adds to its head.
    pub(super) origin: Origin,
}

/// Where a response comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// The redirect of plain HTTP to HTTPS.
    HttpsRedirect,
    /// A failure's response, from `error`.
    Failure,
    /// A router plugin's answer.
    Router,
    /// A member switched protocols; the connections are tunnelled.
    Tunnel,
    /// A member's response.
    Member,
}

impl Origin {
    /// Every response but the HTTPS redirect carries this proxy's `Via`.
    pub(super) fn via(self) -> bool {
        self != Origin::HttpsRedirect
    }

    /// Responses with content of the site carry its HSTS header (over HTTPS).
    pub(super) fn hsts(self) -> bool {
        matches!(self, Origin::Router | Origin::Member)
    }
}

impl<'a> Exchange<'a> {
    pub(super) fn new(generation: &'a Generation, conn: &'a ConnInfo, span: Span) -> Exchange<'a> {
        Exchange {
            generation,
            conn,
            span,
            client_host: None,
            rule: None,
            farm: None,
            member: None,
            origin: Origin::Failure,
        }
    }

    /// The host the client asked for, as text (empty when it gave none).
    pub(super) fn host(&self) -> &str {
        self.client_host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
    }

    /// The rule's index; only asked for after routing found one.
    pub(super) fn rule_index(&self) -> usize {
        self.rule.unwrap_or_default()
    }

    pub(super) fn rule_config(&self) -> &'a RuleConfig {
        &self.generation.config.rules[self.rule_index()]
    }

    /// The farm's index; only asked for after the router chain.
    pub(super) fn farm_index(&self) -> usize {
        self.farm.unwrap_or_default()
    }

    pub(super) fn farm(&self) -> &'a Arc<Farm> {
        &self.generation.farms[self.farm_index()]
    }

    /// Phase 2, route: the publishing rule for the listener, Host and path.
    pub(super) fn route(&mut self, parts: &Parts) -> Result<(), ProxyError> {
        self.client_host = request_host(parts)?;
        let host = self.host();
        let rule = self
            .generation
            .listener(&self.conn.listener)
            .and_then(|l| self.generation.routes.route(l, host, parts.uri.path()))
            .ok_or_else(|| ProxyError::NoRule {
                host: host.to_string(),
                path: parts.uri.path().to_string(),
            })?;
        self.rule = Some(rule);
        self.span.record("rule", self.rule_config().name.as_str());
        Ok(())
    }

    /// Phase 2, route: a plain-HTTP request to a rule that wants HTTPS is sent there.
    pub(super) fn https_redirect(&mut self, parts: &Parts) -> Option<Response<ProxyBody>> {
        let resp = crate::https::redirect(
            &self.rule_config().https,
            self.conn.proto,
            parts,
            self.host(),
        )?;
        self.origin = Origin::HttpsRedirect;
        Some(resp)
    }

    /// The request as plugins see it (built at most once, before the head is rewritten).
    pub(super) fn request_facts(&self, parts: &Parts) -> Arc<RequestFacts> {
        crate::views::request_facts(
            parts,
            self.conn,
            self.generation,
            self.rule_index(),
            self.client_host.as_ref(),
        )
    }

    /// Phase 4, upstream request: the head rewritten for members. An upgrade (WebSocket) keeps
    /// the two headers it needs; the router's changes go on last.
    pub(super) fn upstream_request(
        &self,
        mut parts: Parts,
        body: Incoming,
        mut rewrite: Rewrite,
    ) -> Result<Outgoing, ProxyError> {
        let rule = self.rule_config();
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
        let head_only = parts.method == Method::HEAD;
        let upgrade = match crate::upgrade::requested(&mut parts, &rule.upgrade_protocols) {
            Requested::Allowed(u) => Some(u),
            Requested::No => None,
            Requested::Refused {
                meaningless_without: true,
            } => {
                return Err(ProxyError::BadRequest(
                    "this rule does not pass the upgrade the request asks for (upgrade_protocols)",
                ));
            }
            Requested::Refused { .. } => None,
        };
        headers::remove_hop_by_hop(&mut parts.headers);
        if let Some(u) = &upgrade {
            crate::upgrade::restore(&mut parts.headers, u.protocol());
        }
        headers::add_forwarding(
            &mut parts.headers,
            &Forwarding {
                client: &self.conn.client_addr,
                proto: self.conn.proto,
                host: self.client_host.as_ref(),
            },
        );
        self.generation
            .via
            .append(&mut parts.headers, parts.version);
        parts.uri = rewrite.target(&parts);
        parts.version = Version::HTTP_11;
        let plugin_host = rewrite.host.take();
        let per_member_host =
            plugin_host.is_none() && !rule.preserve_host && rule.internal_site_name.is_none();
        let host = match plugin_host {
            Some(h) => Some(h),
            None if !rule.preserve_host => self.generation.rule_hosts[self.rule_index()].clone(),
            None => self.client_host.clone(),
        };
        if let Some(h) = host {
            parts.headers.insert(header::HOST, h);
        }
        rewrite.apply_headers(&mut parts.headers);
        Ok(Outgoing {
            req: Request::from_parts(parts, ReqBody::limited(body, rule.max_body_bytes)),
            upgrade,
            per_member_host,
            request_bytes,
            head_only,
        })
    }

    /// Phase 6 for a member that switched protocols: both connections go to a byte tunnel.
    pub(super) fn tunnel(
        &mut self,
        mut resp: Response<Incoming>,
        upgrade: Upgrade,
        answered: Answered,
    ) -> Response<ProxyBody> {
        let protocol = upgrade.protocol().clone();
        upgrade.tunnel(
            &mut resp,
            self.generation.config.proxy.upgrade_idle_timeout,
            answered.in_flight,
        );
        drop(answered.pooled);
        let (mut parts, _) = resp.into_parts();
        headers::remove_hop_by_hop(&mut parts.headers);
        crate::upgrade::restore(&mut parts.headers, &protocol);
        self.origin = Origin::Tunnel;
        Response::from_parts(parts, ProxyBody::empty())
    }

    /// The live traffic test on a member's answer (`Ok`) or on its failure without one (`Err`,
    /// the kind of failure): failures are counted, and enough of them take the member out.
    pub(super) fn live_traffic(
        &self,
        member: &Arc<Member>,
        outcome: Result<StatusCode, FailureKind>,
    ) {
        let settings = &self.generation.config.farms[self.farm_index()].health;
        crate::health::live_traffic(self.farm(), member, settings, outcome);
    }

    /// Phase 8, finish: a failure becomes its response; Via and HSTS go on as the response's
    /// origin asks; the access-log record is filled in and travels with the body, written when
    /// the body ends.
    pub(super) fn finish(
        &mut self,
        result: Result<Response<ProxyBody>, ProxyError>,
        log: Option<AccessRecord>,
    ) -> Response<ProxyBody> {
        let mut resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                self.origin = Origin::Failure;
                self.report(&e);
                e.to_response(self.generation.config.proxy.retry_after)
            }
        };
        let status = resp.status();
        self.span.record("status", status.as_u16());
        let version = resp.version();
        if self.origin.via() {
            self.generation.via.append(resp.headers_mut(), version);
        }
        if self.origin.hsts()
            && let Some(rule) = self.rule
        {
            let hsts = self.generation.hsts[rule].as_ref();
            crate::https::add_hsts(resp.headers_mut(), self.conn.proto, hsts);
        }
        let log = log.map(|mut l| {
            l.status = status.as_u16();
            l.rule = self.rule.map(|_| self.rule_config().name.clone());
            l.farm = self.farm.map(|_| self.farm().name.clone());
            l.member = self.member.as_ref().map(|m| m.name.clone());
            l
        });
        resp.map(|b| b.with_log(log))
    }

    /// Logs a failure: a warning for what the proxy or a member failed, debug for what was
    /// refused.
    pub(super) fn report(&self, e: &ProxyError) {
        let status = e.status();
        let _entered = self.span.enter();
        if status.is_server_error() {
            tracing::warn!(error = %e, status = status.as_u16(), "request failed");
        } else {
            tracing::debug!(error = %e, status = status.as_u16(), "request refused");
        }
    }
}

/// The request's span: what every log line of the request carries.
pub(super) fn request_span(req: &Request<Incoming>, conn: &ConnInfo) -> Span {
    tracing::info_span!(
        "request",
        method = %req.method(),
        path = req.uri().path(),
        client = %conn.client.ip(),
        rule = Empty,
        farm = Empty,
        member = Empty,
        status = Empty,
        upstream_ms = Empty,
    )
}
