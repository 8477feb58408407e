//! Microsoft TMG's link translation: responses from a published server must not leak its
//! internal name, so links to `http://internal/...` become links to the public name. This plugin
//! only decides what to translate; farmgate rewrites headers and bodies natively while streaming.
//!
//! Per publishing rule, the mappings are the configured `[from, to]` pairs plus, when the rule
//! publishes an internal site name different from the public one, `http://internal`,
//! `https://internal` and `//internal` to the public name. The scheme follows the listener, as
//! in TMG: an `http://` link of a site published over HTTPS becomes `https://`. Headers are
//! always translated; bodies only for the configured media types and for responses that have a
//! body.
//!
//! Settings: `{"rules": {"<rule>": {"enabled": true, "mappings": [["from", "to"]],
//! "content_types": ["text/html"], "headers": ["location"]}}}`; every field is optional and a
//! rule missing from the map gets the defaults.

use std::collections::HashMap;

use farmgate_sdk::{
    LinkTranslation, Mapping, Plugin, Response, Settings, Translation, TranslationDecision,
    export_plugin,
};
use serde::Deserialize;

/// Media types whose bodies carry links in text, as TMG translates by default.
const DEFAULT_CONTENT_TYPES: &[&str] = &[
    "text/html",
    "text/css",
    "text/javascript",
    "application/javascript",
    "application/json",
    "application/xml",
];

/// Response headers that carry URLs or cookie domains.
const DEFAULT_HEADERS: &[&str] = &["location", "content-location", "refresh", "set-cookie"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    #[serde(default)]
    rules: HashMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default = "enabled_by_default")]
    enabled: bool,
    #[serde(default)]
    mappings: Vec<(String, String)>,
    content_types: Option<Vec<String>>,
    headers: Option<Vec<String>>,
}

fn enabled_by_default() -> bool {
    true
}

/// One rule's link translation, normalised.
#[derive(Debug, Clone)]
struct Policy {
    enabled: bool,
    mappings: Vec<Mapping>,
    /// Lower-case media types without parameters.
    content_types: Vec<String>,
    /// Lower-case header names.
    headers: Vec<String>,
}

impl Policy {
    fn from_raw(raw: RawRule) -> Result<Policy, String> {
        let mut mappings = Vec::with_capacity(raw.mappings.len());
        for (from, to) in raw.mappings {
            if from.is_empty() {
                return Err(format!("mapping to \"{to}\" has an empty \"from\""));
            }
            mappings.push(Mapping { from, to });
        }
        let content_types = match raw.content_types {
            None => DEFAULT_CONTENT_TYPES
                .iter()
                .map(|t| t.to_string())
                .collect(),
            Some(types) => types
                .iter()
                .map(|t| {
                    let media = media_type(t);
                    if media.is_empty() || !media.contains('/') {
                        Err(format!(
                            "content type \"{t}\" is not a media type like \"text/html\""
                        ))
                    } else {
                        Ok(media)
                    }
                })
                .collect::<Result<_, _>>()?,
        };
        let headers = match raw.headers {
            None => DEFAULT_HEADERS.iter().map(|h| h.to_string()).collect(),
            Some(names) => names
                .iter()
                .map(|h| {
                    let name = h.trim();
                    if name.is_empty() || !name.bytes().all(is_token_byte) {
                        Err(format!("header \"{h}\" is not a header name"))
                    } else {
                        Ok(name.to_ascii_lowercase())
                    }
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Policy {
            enabled: raw.enabled,
            mappings,
            content_types,
            headers,
        })
    }

    fn decide(&self, resp: &Response) -> TranslationDecision {
        if !self.enabled {
            return TranslationDecision::Pass;
        }
        let internal = resp.internal_name();
        let public = resp.public_name();
        let automatic = !internal.is_empty() && !internal.eq_ignore_ascii_case(public);
        if self.mappings.is_empty() && !automatic {
            return TranslationDecision::Pass;
        }
        let mut mappings = Vec::with_capacity(self.mappings.len() + 3);
        mappings.extend(self.mappings.iter().cloned());
        if automatic {
            let scheme = match resp.public_scheme() {
                "" => "http",
                scheme => scheme,
            };
            let to = format!("{scheme}://{public}");
            mappings.push(Mapping {
                from: format!("http://{internal}"),
                to: to.clone(),
            });
            mappings.push(Mapping {
                from: format!("https://{internal}"),
                to,
            });
            mappings.push(Mapping {
                from: format!("//{internal}"),
                to: format!("//{public}"),
            });
        }
        TranslationDecision::Translate(Translation {
            mappings,
            headers: self.headers.clone(),
            body: self.translates_body(resp),
        })
    }

    fn translates_body(&self, resp: &Response) -> bool {
        // 1xx, 204 and 304 responses have no body to translate.
        let status = resp.status();
        if status < 200 || status == 204 || status == 304 {
            return false;
        }
        let Some(content_type) = resp.content_type() else {
            return false;
        };
        let media = content_type.split(';').next().unwrap_or_default().trim();
        self.content_types
            .iter()
            .any(|t| t.eq_ignore_ascii_case(media))
    }
}

/// The media type of a Content-Type value: before any `;`, trimmed, lower-case.
fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Whether a byte may appear in an HTTP token (a header name).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

pub struct Links {
    rules: HashMap<String, Policy>,
    default: Policy,
}

impl Plugin for Links {
    fn new(settings: &Settings) -> Result<Self, String> {
        let raw: RawSettings = settings.deserialize()?;
        let mut rules = HashMap::with_capacity(raw.rules.len());
        for (name, value) in raw.rules {
            let policy = serde_json::from_value::<RawRule>(value)
                .map_err(|e| e.to_string())
                .and_then(Policy::from_raw)
                .map_err(|e| format!("rule \"{name}\": {e}"))?;
            rules.insert(name, policy);
        }
        let default = Policy::from_raw(RawRule {
            enabled: true,
            mappings: Vec::new(),
            content_types: None,
            headers: None,
        })?;
        Ok(Links { rules, default })
    }
}

impl LinkTranslation for Links {
    fn decide(&self, resp: &Response) -> TranslationDecision {
        self.rules
            .get(resp.rule())
            .unwrap_or(&self.default)
            .decide(resp)
    }
}

export_plugin!(Links);

#[cfg(test)]
mod tests {
    use super::*;
    use farmgate_sdk::testing;

    fn plugin(json: &str) -> Links {
        match Links::new(&testing::settings(json)) {
            Ok(p) => p,
            Err(e) => panic!("settings {json} refused: {e}"),
        }
    }

    fn error(json: &str) -> String {
        match Links::new(&testing::settings(json)) {
            Ok(_) => panic!("settings {json} accepted"),
            Err(e) => e,
        }
    }

    fn translation(d: TranslationDecision) -> Translation {
        match d {
            TranslationDecision::Translate(t) => t,
            other => panic!("expected a translation, got {other:?}"),
        }
    }

    fn pairs(t: &Translation) -> Vec<(&str, &str)> {
        t.mappings
            .iter()
            .map(|m| (m.from.as_str(), m.to.as_str()))
            .collect()
    }

    #[test]
    fn internal_name_maps_to_the_public_name_over_http() {
        let p = plugin("{}");
        let t = translation(p.decide(
            &testing::response(200, "text/html", "www.example.com", "web01.corp.local").build(),
        ));
        assert_eq!(
            pairs(&t),
            [
                ("http://web01.corp.local", "http://www.example.com"),
                ("https://web01.corp.local", "http://www.example.com"),
                ("//web01.corp.local", "//www.example.com"),
            ]
        );
        assert_eq!(
            t.headers,
            ["location", "content-location", "refresh", "set-cookie"]
        );
        assert!(t.body);
    }

    #[test]
    fn scheme_follows_an_https_listener() {
        let p = plugin("{}");
        let t = translation(
            p.decide(
                &testing::response(200, "text/html", "www.example.com", "web01:8080")
                    .public_scheme("https")
                    .build(),
            ),
        );
        assert_eq!(
            pairs(&t),
            [
                ("http://web01:8080", "https://www.example.com"),
                ("https://web01:8080", "https://www.example.com"),
                ("//web01:8080", "//www.example.com"),
            ]
        );
    }

    #[test]
    fn configured_mappings_come_first() {
        let p = plugin(
            r#"{"rules": {"site": {"mappings": [["http://cdn.corp.local", "https://cdn.example.com"]],
                                    "headers": ["Location", "X-Backend-Url"]}}}"#,
        );
        let t = translation(
            p.decide(&testing::response(302, "text/html", "www.example.com", "web01").build()),
        );
        assert_eq!(
            pairs(&t),
            [
                ("http://cdn.corp.local", "https://cdn.example.com"),
                ("http://web01", "http://www.example.com"),
                ("https://web01", "http://www.example.com"),
                ("//web01", "//www.example.com"),
            ]
        );
        assert_eq!(t.headers, ["location", "x-backend-url"]);
        // Configured mappings alone are enough to translate.
        let t = translation(
            p.decide(&testing::response(200, "text/css", "www.example.com", "").build()),
        );
        assert_eq!(
            pairs(&t),
            [("http://cdn.corp.local", "https://cdn.example.com")]
        );
        assert!(t.body);
    }

    #[test]
    fn no_internal_name_or_the_same_name_passes() {
        let p = plugin("{}");
        for internal in ["", "www.example.com", "WWW.Example.COM"] {
            assert_eq!(
                p.decide(&testing::response(200, "text/html", "www.example.com", internal).build()),
                TranslationDecision::Pass,
                "{internal:?}"
            );
        }
    }

    #[test]
    fn disabled_rule_passes() {
        let p = plugin(r#"{"rules": {"site": {"enabled": false, "mappings": [["a", "b"]]}}}"#);
        assert_eq!(
            p.decide(&testing::response(200, "text/html", "www.example.com", "web01").build()),
            TranslationDecision::Pass
        );
        // Another rule still gets the defaults.
        let resp = testing::response(200, "text/html", "www.example.com", "web01")
            .rule("other")
            .build();
        assert_eq!(translation(p.decide(&resp)).mappings.len(), 3);
    }

    #[test]
    fn content_types_with_parameters_and_case() {
        let p = plugin("{}");
        let body = |status, ct: &str| {
            translation(
                p.decide(&testing::response(status, ct, "www.example.com", "web01").build()),
            )
            .body
        };
        assert!(body(200, "text/html; charset=utf-8"));
        assert!(body(200, "Text/HTML;charset=UTF-8"));
        assert!(body(200, "  application/json  "));
        assert!(body(404, "application/xml; charset=utf-8"));
        assert!(body(500, "text/javascript"));
        assert!(!body(200, "image/png"));
        assert!(!body(200, "application/octet-stream"));
        assert!(!body(200, "text/plain"));
        assert!(!body(200, ""));
        let resp = testing::response(200, "text/html", "www.example.com", "web01")
            .no_content_type()
            .build();
        assert!(!translation(p.decide(&resp)).body);

        let custom = plugin(
            r#"{"rules": {"site": {"content_types": ["Text/Plain; charset=utf-8", " application/xhtml+xml "]}}}"#,
        );
        let body = |ct: &str| {
            translation(
                custom.decide(&testing::response(200, ct, "www.example.com", "web01").build()),
            )
            .body
        };
        assert!(body("text/plain"));
        assert!(body("application/XHTML+xml; charset=utf-8"));
        assert!(!body("text/html"));
    }

    #[test]
    fn responses_without_a_body_translate_headers_only() {
        let p = plugin("{}");
        for status in [100, 101, 204, 304] {
            let t = translation(p.decide(
                &testing::response(status, "text/html", "www.example.com", "web01").build(),
            ));
            assert!(!t.body, "{status}");
            assert_eq!(t.mappings.len(), 3);
            assert_eq!(t.headers.len(), 4);
        }
        for status in [200, 201, 206, 301, 302, 404, 503] {
            assert!(
                translation(p.decide(
                    &testing::response(status, "text/html", "www.example.com", "web01").build()
                ))
                .body,
                "{status}"
            );
        }
    }

    #[test]
    fn invalid_settings_name_the_rule() {
        for (json, expected) in [
            (
                r#"{"rules": {"site": {"mappings": [["", "x"]]}}}"#,
                "empty \"from\"",
            ),
            (
                r#"{"rules": {"site": {"mappings": [["a"]]}}}"#,
                "rule \"site\"",
            ),
            (
                r#"{"rules": {"site": {"mappings": {"a": "b"}}}}"#,
                "rule \"site\"",
            ),
            (
                r#"{"rules": {"site": {"content_types": ["html"]}}}"#,
                "\"html\" is not a media type",
            ),
            (
                r#"{"rules": {"site": {"content_types": [" ; x"]}}}"#,
                "is not a media type",
            ),
            (
                r#"{"rules": {"site": {"headers": ["bad header"]}}}"#,
                "not a header name",
            ),
            (
                r#"{"rules": {"site": {"headers": [""]}}}"#,
                "not a header name",
            ),
            (
                r#"{"rules": {"site": {"enabled": "yes"}}}"#,
                "rule \"site\"",
            ),
            (
                r#"{"rules": {"site": {"translate": true}}}"#,
                "unknown field `translate`",
            ),
            (r#"{"mappings": []}"#, "unknown field `mappings`"),
        ] {
            let e = error(json);
            assert!(e.contains(expected), "{json}: {e}");
        }
    }
}
