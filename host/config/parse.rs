//! General parsing helpers of the validators: status code ranges, tokens, socket addresses, path
//! prefixes and durations with their defaults. Each takes text (or a raw value) and returns the
//! value or a message; the validator adds the file, line and key.
//!
//! These must not know which key they are parsing for, nor build a [`super::ConfigError`].

use std::net::SocketAddr;
use std::time::Duration;

use toml::Spanned;

use super::raw::Dur;

/// `"200-399"`, `"200, 301-302"`: status codes and ranges, each within 100..=599.
pub fn parse_status_ranges(s: &str) -> Result<Vec<(u16, u16)>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let code = |t: &str| {
            t.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
        };
        match (code(lo), code(hi)) {
            (Some(lo), Some(hi)) if lo <= hi => out.push((lo, hi)),
            _ => {
                return Err(format!(
                    "\"{part}\" is not a status code or range such as 200-399 (codes are 100..=599)"
                ));
            }
        }
    }
    Ok(out)
}

/// An RFC 9110 token (header names, cookie names, media type parts).
pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `127.0.0.1:8080` or `[::1]:8080`.
pub(super) fn parse_socket_addr(s: &Spanned<String>) -> Result<SocketAddr, String> {
    s.get_ref().trim().parse().map_err(|_| {
        format!(
            "\"{}\" is not an address:port such as \"127.0.0.1:8080\"",
            s.get_ref()
        )
    })
}

/// `/app/*`, `/app/` and `/app` all mean "the `/app` subtree"; `/*` and `/` mean everything.
pub(super) fn normalize_path_prefix(p: &str) -> Result<String, String> {
    let p = p.trim();
    if !p.starts_with('/') {
        return Err(format!("path \"{p}\" must start with '/'"));
    }
    let mut prefix = p.strip_suffix('*').unwrap_or(p);
    if prefix.contains('*') || prefix.contains('?') || prefix.contains('#') {
        return Err(format!(
            "path \"{p}\" may end in '*' but contain no other '*', '?' or '#'"
        ));
    }
    while prefix.len() > 1 && prefix.ends_with('/') {
        prefix = &prefix[..prefix.len() - 1];
    }
    Ok(prefix.to_string())
}

/// `Duration` of a spanned raw duration, or `default` when the key is absent.
pub(super) fn duration(d: &Option<Spanned<Dur>>, default: Duration) -> Duration {
    d.as_ref().map(|d| d.get_ref().0).unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalise() {
        assert_eq!(normalize_path_prefix("/app/*").unwrap(), "/app");
        assert_eq!(normalize_path_prefix("/app/").unwrap(), "/app");
        assert_eq!(normalize_path_prefix("/*").unwrap(), "/");
        assert!(normalize_path_prefix("app").is_err());
        assert!(normalize_path_prefix("/a*b").is_err());
    }
}
