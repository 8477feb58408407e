//! Header rewriting on the way through: hop-by-hop removal (RFC 9110 §7.6.1), the forwarding
//! headers members rely on (X-Forwarded-For/-Proto/-Host, RFC 7239 `Forwarded`) and `Via`
//! (RFC 9110 §7.6.3), and the request target's origin form. Pure functions over request heads;
//! no I/O.

use std::net::IpAddr;

use crate::config::IpNet;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Uri, Version};

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1, plus the
/// `Proxy-*` and `Keep-Alive` names still sent by old clients, and `HTTP2-Settings`).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("keep-alive"),
    // Only meaningful with an h2c upgrade, which is never passed (RFC 7540 §3.2.1).
    HeaderName::from_static("http2-settings"),
];

const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// A request target in origin form (`/path?query`), as HTTP/1.1 sends it to a member.
pub fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(_) if uri.scheme().is_none() && uri.authority().is_none() => uri.clone(),
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
    }
}

/// Removes hop-by-hop headers, including every header the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(PROXY_CONNECTION);
}

/// The client side of a connection, formatted once per connection for the forwarding headers.
#[derive(Debug, Clone)]
pub struct ClientAddr {
    /// `203.0.113.7` or `2001:db8::1`, for X-Forwarded-For.
    text: String,
    /// `for=203.0.113.7` or `for="[2001:db8::1]"`, for `Forwarded`.
    forwarded_for: String,
}

impl ClientAddr {
    pub fn new(ip: IpAddr) -> ClientAddr {
        let text = ip.to_string();
        let forwarded_for = match ip {
            IpAddr::V4(_) => format!("for={text}"),
            IpAddr::V6(_) => format!("for=\"[{text}]\""),
        };
        ClientAddr {
            text,
            forwarded_for,
        }
    }
}

/// What the forwarding headers say about the client side of a request.
pub struct Forwarding<'a> {
    pub client: &'a ClientAddr,
    /// `http` or `https`: the scheme of the listener the request came in on.
    pub proto: &'static str,
    /// The Host the client asked for, before it is rewritten.
    pub host: Option<&'a HeaderValue>,
}

/// The client's address as policies see it: the connection's peer, unless the peer is a trusted
/// proxy, in which case X-Forwarded-For is read from the right, past every trusted proxy, to the
/// first address that is not one (what the last trusted hop saw). Entries that are not addresses
/// end the walk at the last trusted address, so a forged list cannot name an arbitrary client
/// through an untrusted hop.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if trusted.is_empty() || !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    let lists: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    for entry in lists.iter().rev().flat_map(|l| l.rsplit(',')) {
        let Some(ip) = parse_forwarded_addr(entry.trim()) else {
            return client;
        };
        client = ip;
        if !is_trusted(ip) {
            return ip;
        }
    }
    client
}

/// An X-Forwarded-For entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:80`.
fn parse_forwarded_addr(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip())
}

/// Appends the client to X-Forwarded-For and `Forwarded`, and sets X-Forwarded-Proto and
/// X-Forwarded-Host to what this hop saw.
pub fn add_forwarding(headers: &mut HeaderMap, f: &Forwarding<'_>) {
    append_list(headers, X_FORWARDED_FOR, &f.client.text);

    let mut element = String::with_capacity(64);
    element.push_str(&f.client.forwarded_for);
    if let Some(host) = f.host.and_then(|h| h.to_str().ok()) {
        element.push_str(";host=");
        push_token_or_quoted(&mut element, host);
    }
    element.push_str(";proto=");
    element.push_str(f.proto);
    append_list(headers, header::FORWARDED, &element);

    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(f.proto));
    match f.host {
        Some(v) => {
            headers.insert(X_FORWARDED_HOST, v.clone());
        }
        None => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
}

/// The `Via` entries of this proxy, one per protocol version, formatted once per config.
#[derive(Debug, Clone)]
pub struct Via {
    v10: HeaderValue,
    v11: HeaderValue,
    v2: HeaderValue,
}

impl Via {
    /// `pseudonym` must be visible ASCII (the config checks it).
    pub fn new(pseudonym: &str) -> Via {
        let value = |v: &str| {
            HeaderValue::from_str(&format!("{v} {pseudonym}"))
                .unwrap_or_else(|_| HeaderValue::from_static("1.1 farmgate"))
        };
        Via {
            v10: value("1.0"),
            v11: value("1.1"),
            v2: value("2"),
        }
    }

    pub fn for_version(&self, version: Version) -> &HeaderValue {
        match version {
            Version::HTTP_09 | Version::HTTP_10 => &self.v10,
            Version::HTTP_2 | Version::HTTP_3 => &self.v2,
            _ => &self.v11,
        }
    }

    /// Appends this proxy's entry for `version` to the Via header.
    pub fn append(&self, headers: &mut HeaderMap, version: Version) {
        let entry = self.for_version(version);
        if headers.contains_key(header::VIA) {
            append_list(
                headers,
                header::VIA,
                entry.to_str().unwrap_or("1.1 farmgate"),
            );
        } else {
            headers.insert(header::VIA, entry.clone());
        }
    }
}

/// Joins all existing values of a list header and `item` into one value.
fn append_list(headers: &mut HeaderMap, name: HeaderName, item: &str) {
    if !headers.contains_key(&name) {
        if let Ok(v) = HeaderValue::from_str(item) {
            headers.insert(name, v);
        }
        return;
    }
    let mut joined = String::new();
    for v in headers.get_all(&name) {
        if let Ok(s) = v.to_str() {
            let s = s.trim();
            if !s.is_empty() {
                joined.push_str(s);
                joined.push_str(", ");
            }
        }
    }
    joined.push_str(item);
    if let Ok(v) = HeaderValue::from_str(&joined) {
        headers.insert(name, v);
    }
}

/// RFC 7230 token characters may go bare; anything else (a host with a port has ':') is quoted.
fn push_token_or_quoted(out: &mut String, v: &str) {
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !v.is_empty() && v.bytes().all(is_tchar) {
        out.push_str(v);
    } else {
        out.push('"');
        for c in v.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("connection", "x-other"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("x-other", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-connection", "keep-alive"),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn forwarding_headers_append() {
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("forwarded", "for=203.0.113.7"),
        ]);
        add_forwarding(
            &mut h,
            &Forwarding {
                client: &ClientAddr::new("::1".parse().unwrap()),
                proto: "http",
                host: Some(&HeaderValue::from_static("www.contoso.com:8080")),
            },
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, ::1");
        assert_eq!(
            h["forwarded"],
            "for=203.0.113.7, for=\"[::1]\";host=\"www.contoso.com:8080\";proto=http"
        );
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "www.contoso.com:8080");
    }

    #[test]
    fn via() {
        let mut h = map(&[("via", "1.0 fred")]);
        Via::new("farmgate").append(&mut h, Version::HTTP_11);
        assert_eq!(h["via"], "1.0 fred, 1.1 farmgate");
        let mut h = HeaderMap::new();
        Via::new("edge").append(&mut h, Version::HTTP_10);
        assert_eq!(h["via"], "1.0 edge");
    }

    #[test]
    fn client_ip_trusts_forwarded_for_only_from_trusted_peers() {
        let trusted = vec![
            IpNet::parse("10.0.0.0/8").unwrap(),
            IpNet::parse("127.0.0.1").unwrap(),
        ];
        let mut h = HeaderMap::new();
        h.append(
            X_FORWARDED_FOR,
            HeaderValue::from_static("203.0.113.9, 10.1.1.1"),
        );
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let stranger: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(client_ip(peer, &h, &trusted).to_string(), "203.0.113.9");
        assert_eq!(client_ip(stranger, &h, &trusted), stranger);
        assert_eq!(client_ip(peer, &h, &[]), peer);
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("junk, 10.2.2.2"));
        assert_eq!(client_ip(peer, &h, &trusted).to_string(), "10.2.2.2");
        h.insert(
            X_FORWARDED_FOR,
            HeaderValue::from_static("[2001:db8::1]:443"),
        );
        assert_eq!(client_ip(peer, &h, &trusted).to_string(), "2001:db8::1");
        h.remove(X_FORWARDED_FOR);
        assert_eq!(client_ip(peer, &h, &trusted), peer);
    }
}
