//! `[[rules.rewrite]]`: URL rewrite rules in the shape the built-in router plugin reads. Regexes
//! are compiled here once to check them and count their groups, so a `{R:n}` or `{C:n}` that
//! names a group the regex lacks is a config error, not a surprise on the request path.

use toml::Spanned;

use super::Validator;
use crate::config::{ConfigError, FarmConfig, RewriteRule, defaults, raw};

/// Capture groups of a rewrite rule's path and host regexes.
#[derive(Clone, Copy)]
struct Groups {
    path: usize,
    host: usize,
}

impl Validator<'_> {
    pub(super) fn rewrites(
        &self,
        r: &raw::RawRule,
        key: &str,
        farms: &[FarmConfig],
    ) -> Result<Vec<RewriteRule>, ConfigError> {
        let mut out = Vec::new();
        for (i, w) in r.rewrite.iter().enumerate() {
            out.push(self.rewrite(w, &format!("{key}.rewrite[{i}]"), farms)?);
        }
        Ok(out)
    }

    fn rewrite(
        &self,
        w: &raw::RawRewrite,
        key: &str,
        farms: &[FarmConfig],
    ) -> Result<RewriteRule, ConfigError> {
        let src = self.source;
        let ignore_case = w.ignore_case.unwrap_or(defaults::REWRITE_IGNORE_CASE);
        let groups = Groups {
            path: self.rewrite_regex(&w.path, ignore_case, key, "path")?,
            host: self.rewrite_regex(&w.host, ignore_case, key, "host")?,
        };
        let action = self.rewrite_action(w, key)?;
        self.rewrite_url(w, &action, groups, key)?;
        let status = self.rewrite_status(w, &action, key)?;
        let farm = match &w.farm {
            None => None,
            Some(f) if !farms.iter().any(|x| &x.name == f.get_ref()) => {
                return Err(src.error(
                    f,
                    format!("{key}.farm"),
                    format!("no farm is named \"{}\"", f.get_ref()),
                ));
            }
            Some(f) => Some(f.get_ref().clone()),
        };
        let set_headers = self.rewrite_set_headers(w, groups, key)?;
        let remove_headers = self.rewrite_remove_headers(w, key)?;
        if let Some(ct) = &w.content_type
            && http::HeaderValue::from_str(ct.get_ref()).is_err()
        {
            return Err(src.error(
                ct,
                format!("{key}.content_type"),
                "is not a valid header value",
            ));
        }
        Ok(RewriteRule {
            name: w.name.clone(),
            host: w.host.as_ref().map(|h| h.get_ref().clone()),
            path: w.path.as_ref().map(|p| p.get_ref().clone()),
            ignore_case,
            action,
            url: w.url.as_ref().map(|u| u.get_ref().clone()),
            append_query: w.append_query.unwrap_or(defaults::REWRITE_APPEND_QUERY),
            farm,
            status,
            body: w.body.clone(),
            content_type: w.content_type.as_ref().map(|c| c.get_ref().clone()),
            set_headers,
            remove_headers,
            stop: w.stop.unwrap_or(defaults::REWRITE_STOP),
        })
    }

    /// Compiles a path or host regex to check it; its number of capture groups (0 when absent).
    fn rewrite_regex(
        &self,
        p: &Option<Spanned<String>>,
        ignore_case: bool,
        key: &str,
        what: &str,
    ) -> Result<usize, ConfigError> {
        let Some(p) = p else { return Ok(0) };
        regex_lite::RegexBuilder::new(p.get_ref())
            .case_insensitive(ignore_case)
            .build()
            .map(|re| re.captures_len() - 1)
            .map_err(|e| {
                let first = e.to_string();
                let first = first.lines().last().unwrap_or("invalid").trim().to_string();
                self.source.error(
                    p,
                    format!("{key}.{what}"),
                    format!("invalid regex: {first}"),
                )
            })
    }

    fn rewrite_action(&self, w: &raw::RawRewrite, key: &str) -> Result<String, ConfigError> {
        let action = w.action.get_ref().trim().to_ascii_lowercase();
        if !matches!(action.as_str(), "rewrite" | "redirect" | "respond" | "none") {
            return Err(self.source.error(
                &w.action,
                format!("{key}.action"),
                format!(
                    "\"{}\" is not an action; use rewrite, redirect, respond or none",
                    w.action.get_ref()
                ),
            ));
        }
        Ok(action)
    }

    /// The url: present when the action needs one, its references, no line breaks (nor in the
    /// values of `set_headers`, checked here so errors keep their order), and a path for a
    /// rewrite.
    fn rewrite_url(
        &self,
        w: &raw::RawRewrite,
        action: &str,
        groups: Groups,
        key: &str,
    ) -> Result<(), ConfigError> {
        let src = self.source;
        let needs_url = matches!(action, "rewrite" | "redirect");
        if needs_url && w.url.is_none() {
            return Err(src.error(
                &w.action,
                format!("{key}.url"),
                format!("action \"{action}\" needs a url"),
            ));
        }
        if let Some(u) = &w.url {
            if u.get_ref().trim().is_empty() {
                return Err(src.error(u, format!("{key}.url"), "is empty"));
            }
            check_references(u.get_ref(), groups.path, groups.host)
                .map_err(|m| src.error(u, format!("{key}.url"), m))?;
        }
        if let Some(u) = &w.url {
            self.one_line(u, key, "url")?;
        }
        for v in w.set_headers.values() {
            self.one_line(v, key, "set_headers")?;
        }
        if action == "rewrite"
            && let Some(u) = &w.url
            && !u.get_ref().starts_with('/')
        {
            return Err(src.error(
                u,
                format!("{key}.url"),
                "a rewrite url is a path starting with '/' (use action = \"redirect\" to send clients elsewhere)",
            ));
        }
        Ok(())
    }

    /// Line breaks would split a header or a request line.
    fn one_line(&self, t: &Spanned<String>, key: &str, what: &str) -> Result<(), ConfigError> {
        if t.get_ref().contains(['\r', '\n', '\0']) {
            Err(self.source.error(
                t,
                format!("{key}.{what}"),
                "may not contain line breaks or NUL",
            ))
        } else {
            Ok(())
        }
    }

    fn rewrite_status(
        &self,
        w: &raw::RawRewrite,
        action: &str,
        key: &str,
    ) -> Result<Option<u16>, ConfigError> {
        let src = self.source;
        match (&w.status, action) {
            (Some(s), "redirect") if !matches!(*s.get_ref(), 301 | 302 | 303 | 307 | 308) => {
                Err(src.error(
                    s,
                    format!("{key}.status"),
                    "a redirect status is 301, 302, 303, 307 or 308",
                ))
            }
            (Some(s), "respond") if !(200..=599).contains(s.get_ref()) => {
                Err(src.error(s, format!("{key}.status"), "must be 200..=599"))
            }
            (Some(s), "rewrite" | "none") => Err(src.error(
                s,
                format!("{key}.status"),
                "applies only to redirect and respond",
            )),
            (s, _) => Ok(s.as_ref().map(|s| *s.get_ref())),
        }
    }

    /// `set_headers`: names checked and lower-cased, values' references checked.
    fn rewrite_set_headers(
        &self,
        w: &raw::RawRewrite,
        groups: Groups,
        key: &str,
    ) -> Result<Vec<(String, String)>, ConfigError> {
        let src = self.source;
        let mut set_headers = Vec::new();
        for (n, v) in &w.set_headers {
            if http::HeaderName::from_bytes(n.as_bytes()).is_err() {
                return Err(src.error(
                    v,
                    format!("{key}.set_headers"),
                    format!("\"{n}\" is not a header name"),
                ));
            }
            check_references(v.get_ref(), groups.path, groups.host)
                .map_err(|m| src.error(v, format!("{key}.set_headers"), m))?;
            set_headers.push((n.to_ascii_lowercase(), v.get_ref().clone()));
        }
        Ok(set_headers)
    }

    /// `remove_headers`: names checked and lower-cased.
    fn rewrite_remove_headers(
        &self,
        w: &raw::RawRewrite,
        key: &str,
    ) -> Result<Vec<String>, ConfigError> {
        let mut remove_headers = Vec::new();
        for n in &w.remove_headers {
            if http::HeaderName::from_bytes(n.get_ref().as_bytes()).is_err() {
                return Err(self.source.error(
                    n,
                    format!("{key}.remove_headers"),
                    format!("\"{}\" is not a header name", n.get_ref()),
                ));
            }
            remove_headers.push(n.get_ref().to_ascii_lowercase());
        }
        Ok(remove_headers)
    }
}

/// Checks `{R:n}` and `{C:n}` references against the capture groups of the path and host regexes.
fn check_references(text: &str, path_groups: usize, host_groups: usize) -> Result<(), String> {
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else { break };
        let inner = &after[..end];
        if let Some((kind, n)) = inner.split_once(':')
            && let Ok(n) = n.parse::<usize>()
        {
            let (have, what) = match kind {
                "R" => (path_groups, "path"),
                "C" => (host_groups, "host"),
                _ => (usize::MAX, ""),
            };
            if n > have {
                return Err(format!(
                    "{{{inner}}} refers to capture {n}, but the {what} regex has {have} group(s)"
                ));
            }
        }
        rest = &after[end + 1..];
    }
    Ok(())
}
