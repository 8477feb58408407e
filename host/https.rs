//! Per-rule HTTPS policy on the request path: plain-HTTP requests redirected to HTTPS, and the
//! `Strict-Transport-Security` header on HTTPS responses. Pure functions over request and
//! response heads; no I/O.

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};

use crate::body::ProxyBody;
use crate::config::RuleHttps;
use crate::names::split_host_port;

/// The redirect a plain-HTTP request gets when its rule asks for HTTPS: `301` for GET and HEAD,
/// `308` for other methods (so a POST stays a POST). `None` when no redirect applies, including
/// a request without a host name to send the client to.
pub fn redirect(
    https: &RuleHttps,
    proto: &str,
    parts: &Parts,
    host: &str,
) -> Option<Response<ProxyBody>> {
    if !https.redirect || proto == "https" {
        return None;
    }
    let name = split_host_port(host).0;
    if name.is_empty() {
        return None;
    }
    let mut location = String::with_capacity(16 + host.len() + parts.uri.path().len());
    location.push_str("https://");
    if name.contains(':') {
        location.push('[');
        location.push_str(name);
        location.push(']');
    } else {
        location.push_str(name);
    }
    if https.port != 443 {
        location.push(':');
        location.push_str(&https.port.to_string());
    }
    location.push_str(
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/"),
    );
    let location = HeaderValue::from_str(&location).ok()?;
    let status = if parts.method == Method::GET || parts.method == Method::HEAD {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::PERMANENT_REDIRECT
    };
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::LOCATION, location);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    Some(resp)
}

/// The rule's HSTS header value, formatted once per config.
pub fn hsts_value(https: &RuleHttps) -> Option<HeaderValue> {
    https
        .hsts_value()
        .and_then(|v| HeaderValue::from_str(&v).ok())
}

/// Adds the HSTS header to a response sent over HTTPS, unless the member already set one.
pub fn add_hsts(headers: &mut HeaderMap, proto: &str, value: Option<&HeaderValue>) {
    if proto == "https"
        && let Some(v) = value
        && !headers.contains_key(header::STRICT_TRANSPORT_SECURITY)
    {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, v.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rule(port: u16) -> RuleHttps {
        RuleHttps {
            redirect: true,
            port,
            hsts: true,
            hsts_max_age: Duration::from_secs(600),
            hsts_include_subdomains: true,
        }
    }

    fn parts(method: Method, uri: &str) -> Parts {
        http::Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn redirects_keep_path_query_and_method() {
        let r = redirect(
            &rule(443),
            "http",
            &parts(Method::GET, "/a/b?c=1"),
            "www.contoso.com:8080",
        )
        .unwrap();
        assert_eq!(r.status(), 301);
        assert_eq!(r.headers()["location"], "https://www.contoso.com/a/b?c=1");
        let r = redirect(
            &rule(8443),
            "http",
            &parts(Method::POST, "/form"),
            "[::1]:80",
        )
        .unwrap();
        assert_eq!(r.status(), 308);
        assert_eq!(r.headers()["location"], "https://[::1]:8443/form");
        assert!(redirect(&rule(443), "https", &parts(Method::GET, "/"), "a").is_none());
        assert!(redirect(&rule(443), "http", &parts(Method::GET, "/"), "").is_none());
    }

    #[test]
    fn hsts_only_over_https_and_never_over_the_members_own() {
        let v = hsts_value(&rule(443)).unwrap();
        assert_eq!(v, "max-age=600; includeSubDomains");
        let mut h = HeaderMap::new();
        add_hsts(&mut h, "http", Some(&v));
        assert!(h.is_empty());
        add_hsts(&mut h, "https", Some(&v));
        assert_eq!(h["strict-transport-security"], v);
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=1"),
        );
        add_hsts(&mut h, "https", Some(&v));
        assert_eq!(h["strict-transport-security"], "max-age=1");
    }
}
