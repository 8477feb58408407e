//! Publishing-rule matching: listener + Host + path -> rule. Pure data, no I/O.
//!
//! Precedence, most specific first: an exact public name, then `*.suffix` wildcards (longest
//! suffix first), then `*`; within the first of those that has a rule for the path, the longest
//! path prefix wins. Host ports are ignored and names compare case-insensitively; paths compare
//! ASCII case-insensitively on segment boundaries, as TMG and IIS do (`/app` matches `/app`,
//! `/APP/x` and `/app?q`, not `/apple`).

use std::collections::HashMap;

use crate::config::Config;
use crate::names::{HostPattern, split_host_port};

/// Compiled matching tables, one per listener.
#[derive(Debug, Default)]
pub struct RouteTable {
    listeners: Vec<ListenerRoutes>,
}

#[derive(Debug, Default)]
struct ListenerRoutes {
    exact: HashMap<String, Vec<Prefix>>,
    /// Keyed by suffix with its leading dot (`.contoso.com`).
    wildcard: HashMap<String, Vec<Prefix>>,
    any: Vec<Prefix>,
}

/// A path prefix and the rule it leads to; lists are kept longest prefix first.
#[derive(Debug, Clone)]
struct Prefix {
    prefix: String,
    rule: usize,
}

impl RouteTable {
    pub fn new(config: &Config) -> RouteTable {
        let mut listeners: Vec<ListenerRoutes> = (0..config.listeners.len())
            .map(|_| ListenerRoutes::default())
            .collect();
        for (rule_idx, rule) in config.rules.iter().enumerate() {
            for &l in &rule.listeners {
                let routes = &mut listeners[l];
                for pattern in &rule.public_names {
                    let list = match pattern {
                        HostPattern::Any => &mut routes.any,
                        HostPattern::Exact(h) => routes.exact.entry(h.clone()).or_default(),
                        HostPattern::Suffix(s) => routes.wildcard.entry(s.clone()).or_default(),
                    };
                    for p in &rule.paths {
                        // The first rule to claim a host + prefix keeps it.
                        if !list.iter().any(|e| e.prefix.eq_ignore_ascii_case(p)) {
                            list.push(Prefix {
                                prefix: p.clone(),
                                rule: rule_idx,
                            });
                        }
                    }
                }
            }
        }
        for routes in &mut listeners {
            let by_len = |a: &Prefix, b: &Prefix| b.prefix.len().cmp(&a.prefix.len());
            routes.exact.values_mut().for_each(|v| v.sort_by(by_len));
            routes.wildcard.values_mut().for_each(|v| v.sort_by(by_len));
            routes.any.sort_by(by_len);
        }
        RouteTable { listeners }
    }

    /// The rule for a request on `listener` with `host` (a Host header value, port allowed) and
    /// `path` (without the query).
    pub fn route(&self, listener: usize, host: &str, path: &str) -> Option<usize> {
        let routes = self.listeners.get(listener)?;
        let host = normalize_host(host);
        if let Some(list) = routes.exact.get(host.as_ref())
            && let Some(rule) = longest_prefix(list, path)
        {
            return Some(rule);
        }
        if !routes.wildcard.is_empty() {
            // Each dot after the first label starts a candidate suffix, longest first.
            for (i, _) in host.match_indices('.').filter(|(i, _)| *i > 0) {
                if let Some(list) = routes.wildcard.get(&host[i..])
                    && let Some(rule) = longest_prefix(list, path)
                {
                    return Some(rule);
                }
            }
        }
        longest_prefix(&routes.any, path)
    }
}

fn longest_prefix(list: &[Prefix], path: &str) -> Option<usize> {
    list.iter()
        .find(|p| path_has_prefix(path, &p.prefix))
        .map(|p| p.rule)
}

/// Whether `path` is in the subtree `prefix` (segment boundaries, ASCII case-insensitive).
pub fn path_has_prefix(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    let (p, pre) = (path.as_bytes(), prefix.as_bytes());
    p.len() >= pre.len()
        && p[..pre.len()].eq_ignore_ascii_case(pre)
        && (p.len() == pre.len() || p[pre.len()] == b'/')
}

/// Lower-cases a Host value and drops its port and any trailing dot; borrows when already clean.
fn normalize_host(host: &str) -> std::borrow::Cow<'_, str> {
    let h = split_host_port(host).0;
    let h = h.strip_suffix('.').unwrap_or(h);
    if h.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(h.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rules: &str) -> (Config, RouteTable) {
        let text = format!(
            r#"
[[listeners]]
name = "a"
bind = "127.0.0.1:0"
[[listeners]]
name = "b"
bind = "127.0.0.1:0"
[[farms]]
name = "f"
members = [{{ host = "127.0.0.1" }}]
{rules}"#
        );
        let c = Config::parse(&text, "t").unwrap();
        let t = RouteTable::new(&c);
        (c, t)
    }

    fn name(c: &Config, r: Option<usize>) -> Option<&str> {
        r.map(|i| c.rules[i].name.as_str())
    }

    #[test]
    fn precedence_exact_wildcard_any_and_longest_prefix() {
        let (c, t) = table(
            r#"
[[rules]]
name = "any"
public_names = ["*"]
farm = "f"
[[rules]]
name = "wild"
public_names = ["*.contoso.com"]
farm = "f"
[[rules]]
name = "deep-wild"
public_names = ["*.eu.contoso.com"]
farm = "f"
[[rules]]
name = "www"
public_names = ["www.contoso.com"]
paths = ["/app/*"]
farm = "f"
[[rules]]
name = "www-api"
public_names = ["WWW.contoso.com"]
paths = ["/app/api"]
farm = "f"
[[rules]]
name = "only-b"
listeners = ["b"]
public_names = ["b.example"]
farm = "f"
"#,
        );
        assert_eq!(
            name(&c, t.route(0, "www.contoso.com:8080", "/app/x")),
            Some("www")
        );
        assert_eq!(
            name(&c, t.route(0, "www.contoso.com", "/APP/API/v1")),
            Some("www-api")
        );
        assert_eq!(name(&c, t.route(0, "www.contoso.com", "/app")), Some("www"));
        // An exact name with no matching path falls through to the wildcard.
        assert_eq!(
            name(&c, t.route(0, "www.contoso.com", "/apple")),
            Some("wild")
        );
        assert_eq!(
            name(&c, t.route(0, "x.eu.contoso.com.", "/")),
            Some("deep-wild")
        );
        assert_eq!(name(&c, t.route(0, "contoso.com", "/")), Some("any"));
        assert_eq!(name(&c, t.route(0, "b.example", "/")), Some("any"));
        assert_eq!(name(&c, t.route(1, "b.example", "/")), Some("only-b"));
        assert_eq!(t.route(7, "b.example", "/"), None);
    }

    #[test]
    fn no_rule() {
        let (_, t) = table(
            r#"
[[rules]]
name = "one"
public_names = ["one.example"]
farm = "f"
"#,
        );
        assert_eq!(t.route(0, "two.example", "/"), None);
        assert_eq!(t.route(0, "[::1]:8080", "/"), None);
    }

    #[test]
    fn prefixes() {
        assert!(path_has_prefix("/a/b", "/a"));
        assert!(path_has_prefix("/a", "/a"));
        assert!(!path_has_prefix("/ab", "/a"));
        assert!(path_has_prefix("/anything", "/"));
    }
}
