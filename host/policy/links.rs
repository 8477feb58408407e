//! The link-translation chain: the plugins bound to a rule, then the built-in where the rule has
//! something to map. The chain decides what to translate in a member's response; the decision is
//! applied here: the named headers at once, the body as it streams (decoded and re-encoded when
//! compressed), by `translate`'s matcher.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use hyper::body::Incoming;

use super::fail;
use crate::body::{Completion, ProxyBody};
use crate::error::ProxyError;
use crate::generation::Generation;
use crate::plugins::{Chain, Hook, ResponseFacts, Runtime, Translation, TranslationDecision};
use crate::translate::{self, BodyTranslator, Coding, Mappings, MatcherCache};
use crate::views::response_facts;

/// A rule's link-translation chain.
pub struct LinksChain<'a> {
    runtime: &'a Runtime,
    generation: &'a Generation,
    rule: usize,
    plugins: Chain,
}

/// A member's response head on its way to the client, with what link translation needs to know
/// about the request.
pub struct ResponseHead<'a> {
    pub parts: &'a mut http::response::Parts,
    /// The Host the client asked for.
    pub public_host: Option<&'a HeaderValue>,
    /// `http` or `https`, as the client spoke.
    pub proto: &'static str,
    /// The request was HEAD: the response has no body whatever its headers say.
    pub head_only: bool,
}

impl<'a> LinksChain<'a> {
    /// The chain of rule `rule`; `None` when no plugin is to be asked.
    pub fn for_rule(
        runtime: &'a Runtime,
        generation: &'a Generation,
        rule: usize,
    ) -> Option<LinksChain<'a>> {
        let plugins = runtime.chain_in(
            &generation.chains.links[rule],
            Hook::LinkTranslation,
            &generation.config.rules[rule].link_translation,
            generation.builtin_links[rule],
        );
        (!plugins.is_empty()).then_some(LinksChain {
            runtime,
            generation,
            rule,
            plugins,
        })
    }

    /// Asks the chain about a response and applies what it decides; the body streams through
    /// untranslated when nothing is to be translated.
    pub async fn translate(
        &self,
        head: ResponseHead<'_>,
        body: Incoming,
        completion: Completion,
    ) -> Result<ProxyBody, ProxyError> {
        let facts = response_facts(
            head.parts,
            self.generation,
            self.rule,
            head.public_host,
            head.proto,
        );
        let decided = self.decide(&facts).await;
        head.parts.headers = ResponseFacts::into_headers(facts);
        Ok(match decided? {
            Some(t) => translate_response(
                t,
                &self.generation.matchers,
                head.parts,
                body,
                head.head_only,
                completion,
            ),
            None => ProxyBody::upstream(body, completion),
        })
    }

    /// Asks the chain what to rewrite in a response. `Ok(None)`: nothing.
    async fn decide(&self, resp: &Arc<ResponseFacts>) -> Result<Option<Translation>, ProxyError> {
        for plugin in self.plugins.iter().filter(|p| self.runtime.enabled(p)) {
            match self.runtime.decide_translation(plugin, resp).await {
                Ok(TranslationDecision::Pass) => {}
                Ok(TranslationDecision::Translate(t)) => return Ok(Some(t)),
                Ok(TranslationDecision::Transform) => fail(self.runtime.invalid(
                    plugin,
                    "link-translation",
                    "asked to transform the body itself, which this farmgate does not offer yet; decide `translate` with mappings instead".into(),
                ))?,
                Err(f) => fail(f)?,
            }
        }
        Ok(None)
    }
}

/// Applies a link-translation decision to a member's response: the named headers now, the body
/// as it streams (decoded and re-encoded when compressed). Bodies that cannot be translated (an
/// unknown or stacked content coding, a partial response) pass through untouched.
fn translate_response(
    t: Translation,
    matchers: &MatcherCache,
    parts: &mut http::response::Parts,
    body: Incoming,
    head_only: bool,
    completion: Completion,
) -> ProxyBody {
    let pairs: Vec<(String, String)> = t.mappings.into_iter().map(|m| (m.from, m.to)).collect();
    let Some(mappings) = matchers.get(&pairs) else {
        return ProxyBody::upstream(body, completion);
    };
    translate_headers(&mappings, &t.headers, &mut parts.headers);
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
            let translator = BodyTranslator::new(coding, mappings);
            ProxyBody::translated(body, translator, completion)
        }
        _ => ProxyBody::upstream(body, completion),
    }
}

/// Rewrites the values of the named headers (Location, Content-Location, Refresh, Set-Cookie
/// domains, ...); a value that does not change, or would not be a valid value, stays.
fn translate_headers(mappings: &Mappings, names: &[String], headers: &mut header::HeaderMap) {
    for name in names {
        let Ok(name) = header::HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        let values: Vec<HeaderValue> = headers.get_all(&name).iter().cloned().collect();
        let mut changed = false;
        let translated: Vec<HeaderValue> = values
            .into_iter()
            .map(|v| {
                let new = v
                    .to_str()
                    .ok()
                    .and_then(|s| translate::translate_header(mappings, name.as_str(), s))
                    .and_then(|s| HeaderValue::from_str(&s).ok());
                changed |= new.is_some();
                new.unwrap_or(v)
            })
            .collect();
        if changed {
            headers.remove(&name);
            for v in translated {
                headers.append(&name, v);
            }
        }
    }
}
