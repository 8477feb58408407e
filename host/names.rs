//! Host names as the config and the request path write them: the public-name patterns of rules
//! and certificates ([`HostPattern`]), splitting `host:port`, and the form of a host name.
//!
//! This module owns only the form of names. It is a leaf: it imports no other farmgate module,
//! so `config`, `routing`, `tls` and `https` can all use it without importing each other. It must
//! not resolve names or do any other I/O.

use std::fmt;
use std::net::IpAddr;

/// One entry of a rule's public names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `*`: any host.
    Any,
    /// `www.contoso.com`, lower-cased.
    Exact(String),
    /// `*.contoso.com`, kept as `.contoso.com`: matches `a.contoso.com` and `a.b.contoso.com`.
    Suffix(String),
}

impl HostPattern {
    pub fn parse(s: &str) -> Result<HostPattern, String> {
        let s = s.trim().to_ascii_lowercase();
        if s == "*" {
            return Ok(HostPattern::Any);
        }
        if let Some(rest) = s.strip_prefix("*.") {
            if is_host_name_or_ip(rest) && !rest.contains('*') {
                return Ok(HostPattern::Suffix(format!(".{rest}")));
            }
        } else if is_host_name_or_ip(&s) {
            return Ok(HostPattern::Exact(s));
        }
        Err(format!(
            "public name \"{s}\" must be a host name, \"*.domain\" or \"*\" (no port: ports are ignored)"
        ))
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Any => f.write_str("*"),
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Suffix(s) => write!(f, "*{s}"),
        }
    }
}

/// Splits `host:port`, `[v6]:port`, `host` or `v6` into host and optional port text.
pub fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if let Some(rest) = s.strip_prefix('[') {
        return match rest.find(']') {
            Some(end) => (&rest[..end], rest[end + 1..].strip_prefix(':')),
            None => (s, None),
        };
    }
    match s.rfind(':') {
        // More than one colon without brackets: an IPv6 literal, no port.
        Some(i) if s[..i].contains(':') => (s, None),
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

/// A DNS name (letters, digits, hyphens, dots; labels of 1..=63) or an IP literal.
pub fn is_host_name_or_ip(s: &str) -> bool {
    if s.parse::<IpAddr>().is_ok() {
        return true;
    }
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert_eq!(
            HostPattern::parse("*.A.com"),
            Ok(HostPattern::Suffix(".a.com".into()))
        );
        assert!(HostPattern::parse("a.com:80").is_err());
        assert!(HostPattern::parse("*.*.com").is_err());
        assert_eq!(
            HostPattern::parse("::1"),
            Ok(HostPattern::Exact("::1".into()))
        );
    }

    #[test]
    fn host_port_split() {
        assert_eq!(split_host_port("a.b:80"), ("a.b", Some("80")));
        assert_eq!(split_host_port("[::1]:80"), ("::1", Some("80")));
        assert_eq!(split_host_port("::1"), ("::1", None));
        assert_eq!(split_host_port("a.b"), ("a.b", None));
    }
}
