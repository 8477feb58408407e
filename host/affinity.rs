//! The affinity cookie: which member a client is pinned to, signed so that it can be neither
//! forged nor read for an address, and agreed on by every farmgate instance with the same key.
//!
//! The cookie's value is a token per (farm, member name): the first 16 bytes of
//! HMAC-SHA256(key, farm NUL member), base64url. Verifying is comparing the token with the
//! farm's members' tokens ([`crate::farm::Farm::sticky_member`]); a forged token, or one of a
//! member that no longer exists, matches nothing and is ignored. The plugin decides who sticks
//! where; this module only makes and reads cookies.
//!
//! It does no I/O and decides nothing about balancing.

use hmac::{Hmac, Mac};
use http::HeaderValue;
use sha2::Sha256;

/// The token that names `member` of `farm` under `key`.
pub fn token(key: &[u8], farm: &str, member: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        // HMAC takes keys of any length; this arm cannot be reached.
        Err(_) => return String::new(),
    };
    mac.update(farm.as_bytes());
    mac.update(&[0]);
    mac.update(member.as_bytes());
    let digest = mac.finalize().into_bytes();
    base64url(&digest[..16])
}

/// The Set-Cookie values that pin a client to the member with `token`: plain, and with `Secure`
/// (for HTTPS listeners). A session cookie, as ARR's: it ends with the browser session.
pub fn set_cookie_values(cookie_name: &str, token: &str) -> [HeaderValue; 2] {
    let plain = format!("{cookie_name}={token}; Path=/; HttpOnly; SameSite=Lax");
    let secure = format!("{plain}; Secure");
    // Cookie names are validated tokens and values base64url: always valid header values.
    [
        HeaderValue::from_str(&plain).unwrap_or(HeaderValue::from_static("")),
        HeaderValue::from_str(&secure).unwrap_or(HeaderValue::from_static("")),
    ]
}

/// The values of every cookie named `name` in a request's Cookie headers. Headers are read as
/// bytes: another cookie with a non-ASCII value must not hide this one.
pub fn cookie_values<'a>(
    headers: &'a http::HeaderMap,
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .filter_map(|pair| {
            let eq = pair.iter().position(|b| *b == b'=')?;
            Some((pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii()))
        })
        .filter(move |(k, _)| *k == name.as_bytes())
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .map(|v| v.trim_matches('"'))
}

/// Unpadded base64url (RFC 4648 §5): cookie-safe without quoting.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie_header(v: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::COOKIE, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn tokens_are_keyed_and_name_no_address() {
        let t = token(b"0123456789abcdef", "f", "10.0.0.2:80");
        assert_eq!(t.len(), 22);
        assert_eq!(t, token(b"0123456789abcdef", "f", "10.0.0.2:80"));
        assert_ne!(t, token(b"fedcba9876543210", "f", "10.0.0.2:80"));
        assert_ne!(t, token(b"0123456789abcdef", "g", "10.0.0.2:80"));
        assert!(!t.contains("10.0.0.2"));
        let [plain, secure] = set_cookie_values("farmgate_affinity", &t);
        assert!(
            plain
                .to_str()
                .unwrap()
                .starts_with(&format!("farmgate_affinity={t};"))
        );
        assert!(secure.to_str().unwrap().ends_with("; Secure"));
    }

    #[test]
    fn cookie_values_are_found_among_others() {
        let h = cookie_header("x=1; farmgate_affinity=abc; y=\"2\"");
        assert_eq!(
            cookie_values(&h, "farmgate_affinity").collect::<Vec<_>>(),
            ["abc"]
        );
        assert_eq!(cookie_values(&h, "y").collect::<Vec<_>>(), ["2"]);
        assert_eq!(cookie_values(&h, "z").count(), 0);
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            HeaderValue::from_bytes(b"pref=caf\xc3\xa9; farmgate_affinity=tok").unwrap(),
        );
        assert_eq!(
            cookie_values(&h, "farmgate_affinity").collect::<Vec<_>>(),
            ["tok"]
        );
    }

    #[test]
    fn base64url_encodes() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }
}
