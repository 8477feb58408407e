//! URL rewrite rules in the style of the IIS URL Rewrite module (as used with Application Request
//! Routing in front of a server farm), attached to publishing rules as Microsoft TMG attaches
//! paths and farms to a web publishing rule.
//!
//! Each publishing rule has an ordered list of rewrite rules. A rewrite rule matches when its
//! `host` regex (if any) matches the request's host without the port and its `path` regex (if
//! any) matches the current path (without the query; farmgate's paths keep their leading `/`,
//! unlike IIS's). Its action then:
//!
//! - `rewrite`: replaces the path (and the query when the new URL has one) and may switch the
//!   farm; later rules see the rewritten path, unless `stop` is set;
//! - `none`: only changes headers (and the farm), then goes on unless `stop` is set;
//! - `redirect`: answers with a redirect (301 unless `status` says otherwise);
//! - `respond`: answers directly with `status`, `content_type` and `body`.
//!
//! Header changes and farm switches accumulate over the rules that forward; a later change of
//! the same header wins. A field that has no effect for its action (a status on a rewrite,
//! headers on a redirect, ...) is ignored.
//!
//! URLs, header values and bodies may refer back to the match: `{R:n}` is capture `n` of the
//! path regex (`{R:0}` the whole match), `{C:n}` capture `n` of the host regex, and `{PATH}`,
//! `{QUERY_STRING}` and `{HTTP_HOST}` the current path, the current query and the Host as sent
//! (port included). A capture that did not take part in the match expands to nothing; any other
//! text in braces is kept as written, so JSON bodies need no escaping.
//!
//! Settings: `{"rules": {"<publishing rule>": [{"name": "...", "host": "...", "path": "...",
//! "ignore_case": true, "action": "rewrite", "url": "...", "append_query": true, "farm": "...",
//! "status": 301, "body": "...", "content_type": "...", "set_headers": [["name", "value"]],
//! "remove_headers": ["name"], "stop": false}]}}`.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;

use farmgate_sdk::{
    DirectResponse, ForwardTo, Plugin, RedirectTo, Request, RouteDecision, Router, Settings,
    export_plugin,
};
// regex-lite rather than regex: it has no Unicode tables and no DFA engines, so the plugin's wasm
// stays small, and short paths and host names do not need the faster engines. Its classes such
// as `\w` and its case folding are ASCII-only, which suits paths and host names.
use regex_lite::{CaptureLocations, Regex, RegexBuilder};
use serde::Deserialize;

/// Status of a redirect when the rule names none (IIS's "Permanent").
const DEFAULT_REDIRECT_STATUS: u16 = 301;
const REDIRECT_STATUSES: &[u16] = &[301, 302, 303, 307, 308];
const DEFAULT_RESPOND_STATUS: u16 = 200;
const DEFAULT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    #[serde(default)]
    rules: HashMap<String, Vec<serde_json::Value>>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum ActionKind {
    Rewrite,
    Redirect,
    Respond,
    None,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[allow(dead_code)]
    name: Option<String>,
    host: Option<String>,
    path: Option<String>,
    #[serde(default = "yes")]
    ignore_case: bool,
    action: ActionKind,
    url: Option<String>,
    #[serde(default = "yes")]
    append_query: bool,
    farm: Option<String>,
    status: Option<u16>,
    body: Option<String>,
    content_type: Option<String>,
    #[serde(default)]
    set_headers: Vec<(String, String)>,
    #[serde(default)]
    remove_headers: Vec<String>,
    #[serde(default)]
    stop: bool,
}

fn yes() -> bool {
    true
}

/// One piece of a URL, header value or body with back-references.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    /// `{R:n}`: a capture of the path regex.
    PathCapture(usize),
    /// `{C:n}`: a capture of the host regex.
    HostCapture(usize),
    Path,
    QueryString,
    HttpHost,
}

#[derive(Debug, Clone, PartialEq)]
struct Template(Vec<Piece>);

impl Template {
    fn parse(text: &str) -> Template {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            literal.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let reference = after
                .find('}')
                .and_then(|close| Some((reference(&after[..close])?, close)));
            match reference {
                Some((piece, close)) => {
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(piece);
                    rest = &after[close + 1..];
                }
                None => {
                    literal.push('{');
                    rest = after;
                }
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Template(pieces)
    }

    fn uses(&self, f: impl Fn(&Piece) -> bool) -> bool {
        self.0.iter().any(f)
    }

    fn expand(&self, m: &Match<'_>, out: &mut String) {
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::PathCapture(i) => out.push_str(m.path_capture(*i)),
                Piece::HostCapture(i) => out.push_str(m.host_capture(*i)),
                Piece::Path => out.push_str(m.path),
                Piece::QueryString => out.push_str(m.query.unwrap_or_default()),
                Piece::HttpHost => out.push_str(m.http_host),
            }
        }
    }

    /// Expands for a header value or a Location: line breaks and NULs from the request are
    /// dropped, since they would split or truncate the header.
    fn expand_header(&self, m: &Match<'_>) -> String {
        let mut out = String::new();
        self.expand(m, &mut out);
        out.retain(|c| !matches!(c, '\r' | '\n' | '\0'));
        out
    }
}

/// The piece a `{...}` names, if it is a back-reference.
fn reference(inner: &str) -> Option<Piece> {
    if let Some((kind, n)) = inner.split_once(':') {
        if n.is_empty() || n.len() > 3 || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n = n.parse().ok()?;
        return match kind {
            "R" | "r" => Some(Piece::PathCapture(n)),
            "C" | "c" => Some(Piece::HostCapture(n)),
            _ => None,
        };
    }
    // Server variable names are case-insensitive in IIS.
    if inner.eq_ignore_ascii_case("PATH") {
        Some(Piece::Path)
    } else if inner.eq_ignore_ascii_case("QUERY_STRING") {
        Some(Piece::QueryString)
    } else if inner.eq_ignore_ascii_case("HTTP_HOST") {
        Some(Piece::HttpHost)
    } else {
        None
    }
}

/// A compiled regex with room for its captures, reused across calls so that matching does not
/// allocate.
struct Pattern {
    re: Regex,
    locations: RefCell<CaptureLocations>,
    /// Whether a template refers to the captures; otherwise a plain match test is enough.
    captures: bool,
}

impl Pattern {
    fn new(pattern: &str, ignore_case: bool, captures: bool) -> Result<Pattern, String> {
        let re = RegexBuilder::new(pattern)
            .case_insensitive(ignore_case)
            .build()
            .map_err(|e| e.to_string())?;
        let locations = RefCell::new(re.capture_locations());
        Ok(Pattern {
            re,
            locations,
            captures,
        })
    }

    fn matches(&self, haystack: &str) -> bool {
        if self.captures {
            self.re
                .captures_read(&mut self.locations.borrow_mut(), haystack)
                .is_some()
        } else {
            self.re.is_match(haystack)
        }
    }
}

/// What a template's references expand to for one matching rule.
struct Match<'a> {
    path: &'a str,
    query: Option<&'a str>,
    host: &'a str,
    http_host: &'a str,
    path_pattern: Option<&'a Pattern>,
    host_pattern: Option<&'a Pattern>,
}

impl Match<'_> {
    fn path_capture(&self, i: usize) -> &str {
        capture(self.path_pattern, self.path, i)
    }

    fn host_capture(&self, i: usize) -> &str {
        capture(self.host_pattern, self.host, i)
    }
}

fn capture<'h>(pattern: Option<&Pattern>, haystack: &'h str, i: usize) -> &'h str {
    let Some(pattern) = pattern.filter(|p| p.captures) else {
        return "";
    };
    match pattern.locations.borrow().get(i) {
        Some((start, end)) => haystack.get(start..end).unwrap_or_default(),
        None => "",
    }
}

enum Action {
    Rewrite {
        url: Template,
        append_query: bool,
    },
    None,
    Redirect {
        status: u16,
        url: Template,
        append_query: bool,
    },
    Respond {
        status: u16,
        content_type: String,
        body: Template,
    },
}

struct Rule {
    host: Option<Pattern>,
    path: Option<Pattern>,
    action: Action,
    farm: Option<String>,
    set_headers: Vec<(String, Template)>,
    remove_headers: Vec<String>,
    stop: bool,
}

impl Rule {
    fn from_raw(raw: RawRule) -> Result<Rule, String> {
        let kind = raw.action;
        let action_name = match kind {
            ActionKind::Rewrite => "rewrite",
            ActionKind::Redirect => "redirect",
            ActionKind::Respond => "respond",
            ActionKind::None => "none",
        };
        // Fields that do not apply to the action are ignored rather than refused: farmgate's
        // config check reports mistakes with their line, and a built-in that refuses settings
        // the config check passed would stop farmgate from starting.
        let forwards = matches!(kind, ActionKind::Rewrite | ActionKind::None);
        let responds = kind == ActionKind::Respond;
        let raw = RawRule {
            url: raw
                .url
                .filter(|_| matches!(kind, ActionKind::Rewrite | ActionKind::Redirect)),
            status: raw.status.filter(|_| !forwards),
            body: raw.body.filter(|_| responds),
            content_type: raw.content_type.filter(|_| responds),
            farm: raw.farm.filter(|_| forwards),
            set_headers: if forwards {
                raw.set_headers
            } else {
                Vec::new()
            },
            remove_headers: if forwards {
                raw.remove_headers
            } else {
                Vec::new()
            },
            ..raw
        };
        if raw.farm.as_deref() == Some("") {
            return Err("farm is empty".into());
        }

        let mut set_headers = Vec::with_capacity(raw.set_headers.len());
        for (name, value) in &raw.set_headers {
            let name = header_name(name)?;
            if value.contains(['\r', '\n', '\0']) {
                return Err(format!(
                    "the value of header \"{name}\" contains a line break or NUL"
                ));
            }
            set_headers.push((name, Template::parse(value)));
        }
        let remove_headers = raw
            .remove_headers
            .iter()
            .map(|name| header_name(name))
            .collect::<Result<Vec<_>, _>>()?;

        let url = match (kind, &raw.url) {
            (ActionKind::Rewrite | ActionKind::Redirect, None) => {
                return Err(format!("action \"{action_name}\" needs a url"));
            }
            (_, Some(url)) if url.trim().is_empty() => return Err("url is empty".into()),
            (_, Some(url)) if url.contains(['\r', '\n', '\0']) => {
                return Err("url contains a line break or NUL".into());
            }
            (_, url) => url.as_deref().map(Template::parse),
        };
        if let (ActionKind::Rewrite, Some(url)) = (kind, &url) {
            // Rewrites stay within farmgate: another server is reached through `farm`.
            if let Some(Piece::Text(first)) = url.0.first()
                && !first.starts_with('/')
            {
                return Err(format!(
                    "rewrite url \"{}\" must be a path starting with / (use farm to send the \
                     request to another farm, or action redirect to send the client elsewhere)",
                    raw.url.as_deref().unwrap_or_default()
                ));
            }
        }

        let action = match (kind, url) {
            (ActionKind::Rewrite, Some(url)) => Action::Rewrite {
                url,
                append_query: raw.append_query,
            },
            (ActionKind::Redirect, Some(url)) => {
                let status = raw.status.unwrap_or(DEFAULT_REDIRECT_STATUS);
                if !REDIRECT_STATUSES.contains(&status) {
                    return Err(format!(
                        "redirect status {status} is not one of 301, 302, 303, 307, 308"
                    ));
                }
                Action::Redirect {
                    status,
                    url,
                    append_query: raw.append_query,
                }
            }
            (ActionKind::Respond, _) => {
                let status = raw.status.unwrap_or(DEFAULT_RESPOND_STATUS);
                if !(200..=599).contains(&status) {
                    return Err(format!(
                        "respond status {status} is not a final status from 200 to 599"
                    ));
                }
                let content_type = raw
                    .content_type
                    .clone()
                    .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_string());
                if content_type.contains(['\r', '\n', '\0']) {
                    return Err(format!(
                        "content_type \"{content_type}\" is not a header value"
                    ));
                }
                Action::Respond {
                    status,
                    content_type,
                    body: Template::parse(raw.body.as_deref().unwrap_or_default()),
                }
            }
            _ => Action::None,
        };

        let templates: Vec<&Template> = match &action {
            Action::Rewrite { url, .. } | Action::Redirect { url, .. } => vec![url],
            Action::Respond { body, .. } => vec![body],
            Action::None => Vec::new(),
        }
        .into_iter()
        .chain(set_headers.iter().map(|(_, v)| v))
        .collect();
        let uses_path = templates
            .iter()
            .any(|t| t.uses(|p| matches!(p, Piece::PathCapture(_))));
        let uses_host = templates
            .iter()
            .any(|t| t.uses(|p| matches!(p, Piece::HostCapture(_))));

        let host = match &raw.host {
            Some(re) => Some(
                Pattern::new(re, raw.ignore_case, uses_host)
                    .map_err(|e| format!("host regex \"{re}\" is invalid: {e}"))?,
            ),
            None => None,
        };
        let path = match &raw.path {
            Some(re) => Some(
                Pattern::new(re, raw.ignore_case, uses_path)
                    .map_err(|e| format!("path regex \"{re}\" is invalid: {e}"))?,
            ),
            None => None,
        };

        Ok(Rule {
            host,
            path,
            action,
            farm: raw.farm,
            set_headers,
            remove_headers,
            stop: raw.stop,
        })
    }
}

/// A header name, lower-cased, or why it is not one.
fn header_name(name: &str) -> Result<String, String> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if valid {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(format!("\"{name}\" is not a header name"))
    }
}

/// The host without a `:port` suffix (`[::1]:8080` gives `[::1]`).
fn without_port(host: &str) -> &str {
    if let Some(colon) = host.rfind(':') {
        let (name, port) = (&host[..colon], &host[colon + 1..]);
        let bracketed = name.starts_with('[') && name.ends_with(']');
        if port.bytes().all(|b| b.is_ascii_digit()) && (bracketed || !name.contains(':')) {
            return name;
        }
    }
    host
}

/// Header changes collected over the rules, kept consistent so that the order in which the host
/// applies the two lists does not matter: a later set or remove of a name overrides an earlier
/// one.
#[derive(Default)]
struct HeaderChanges {
    set: Vec<(String, String)>,
    remove: Vec<String>,
}

impl HeaderChanges {
    fn set(&mut self, name: &str, value: String) {
        self.remove.retain(|n| n != name);
        match self.set.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = value,
            None => self.set.push((name.to_string(), value)),
        }
    }

    fn remove(&mut self, name: &str) {
        self.set.retain(|(n, _)| n != name);
        if !self.remove.iter().any(|n| n == name) {
            self.remove.push(name.to_string());
        }
    }

    fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

pub struct Rewriter {
    rules: HashMap<String, Vec<Rule>>,
}

impl Plugin for Rewriter {
    fn new(settings: &Settings) -> Result<Self, String> {
        let raw: RawSettings = settings.deserialize()?;
        let mut rules = HashMap::with_capacity(raw.rules.len());
        for (name, list) in raw.rules {
            let mut compiled = Vec::with_capacity(list.len());
            for (index, value) in list.into_iter().enumerate() {
                let label = value
                    .get("name")
                    .and_then(|n| n.as_str())
                    .map(|n| format!(" (\"{n}\")"))
                    .unwrap_or_default();
                let rule = serde_json::from_value::<RawRule>(value)
                    .map_err(|e| e.to_string())
                    .and_then(Rule::from_raw)
                    .map_err(|e| format!("rule \"{name}\", rewrite {index}{label}: {e}"))?;
                compiled.push(rule);
            }
            rules.insert(name, compiled);
        }
        Ok(Rewriter { rules })
    }
}

impl Router for Rewriter {
    fn route(&self, req: &Request) -> RouteDecision {
        let Some(rules) = self.rules.get(req.rule()) else {
            return RouteDecision::Pass;
        };
        let host = without_port(req.host());
        let mut path: Cow<'_, str> = Cow::Borrowed(req.path());
        let mut query: Option<Cow<'_, str>> = req.query().map(Cow::Borrowed);
        let mut farm: Option<&str> = None;
        let mut headers = HeaderChanges::default();

        for rule in rules {
            if let Some(p) = &rule.host
                && !p.matches(host)
            {
                continue;
            }
            if let Some(p) = &rule.path
                && !p.matches(&path)
            {
                continue;
            }
            let m = Match {
                path: &path,
                query: query.as_deref(),
                host,
                http_host: req.host(),
                path_pattern: rule.path.as_ref(),
                host_pattern: rule.host.as_ref(),
            };
            match &rule.action {
                Action::Redirect {
                    status,
                    url,
                    append_query,
                } => {
                    let mut location = url.expand_header(&m);
                    if *append_query
                        && !location.contains('?')
                        && let Some(q) = m.query.filter(|q| !q.is_empty())
                    {
                        location.push('?');
                        location.push_str(q);
                    }
                    return RouteDecision::Redirect(RedirectTo {
                        status: *status,
                        location,
                    });
                }
                Action::Respond {
                    status,
                    content_type,
                    body,
                } => {
                    let mut text = String::new();
                    body.expand(&m, &mut text);
                    return RouteDecision::Respond(DirectResponse {
                        status: *status,
                        headers: vec![("content-type".to_string(), content_type.clone())],
                        body: text.into_bytes(),
                    });
                }
                Action::Rewrite { url, append_query } => {
                    let mut target = String::new();
                    url.expand(&m, &mut target);
                    target.retain(|c| !matches!(c, '\r' | '\n' | '\0'));
                    for (name, value) in &rule.set_headers {
                        headers.set(name, value.expand_header(&m));
                    }
                    // The URL's own query, even an empty one (`/a?`), replaces the current one.
                    let (new_path, own_query) = match target.split_once('?') {
                        Some((p, q)) => {
                            (p.to_string(), Some((!q.is_empty()).then(|| q.to_string())))
                        }
                        None => (target, None),
                    };
                    path = Cow::Owned(if new_path.starts_with('/') {
                        new_path
                    } else {
                        format!("/{new_path}")
                    });
                    match own_query {
                        Some(q) => query = q.map(Cow::Owned),
                        None if !append_query => query = None,
                        None => {}
                    }
                }
                Action::None => {
                    for (name, value) in &rule.set_headers {
                        headers.set(name, value.expand_header(&m));
                    }
                }
            }
            for name in &rule.remove_headers {
                headers.remove(name);
            }
            if let Some(f) = &rule.farm {
                farm = Some(f);
            }
            if rule.stop {
                break;
            }
        }

        let path_changed = path != req.path() || query.as_deref() != req.query();
        if !path_changed && farm.is_none() && headers.is_empty() {
            return RouteDecision::Pass;
        }
        RouteDecision::Forward(ForwardTo {
            farm: farm.map(str::to_string),
            path: path_changed.then(|| match &query {
                Some(q) => format!("{path}?{q}"),
                None => path.into_owned(),
            }),
            host: None,
            set_headers: headers.set,
            remove_headers: headers.remove,
        })
    }
}

export_plugin!(Rewriter);

#[cfg(test)]
mod tests;
