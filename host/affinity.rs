//! The affinity cookie: which member a client is pinned to, signed so that it can be neither
//! forged nor read for an address, and agreed on by every farmgate instance with the same key.
//!
//! The cookie's value is a token per (farm, member name): the first 16 bytes of
//! HMAC-SHA256(key, farm NUL member), base64url. Verifying is a table lookup of the token among
//! the farm's members; a forged token, or one of a member that no longer exists, matches nothing
//! and is ignored. The plugin decides who sticks where; this module only reads and writes.
//!
//! It does no I/O and decides nothing about balancing.

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use http::HeaderValue;
use sha2::Sha256;

use crate::config::FarmConfig;

/// One farm's affinity cookie: its name and the token of each member.
#[derive(Debug)]
pub struct AffinityCookie {
    pub name: String,
    /// Token -> member index.
    by_token: HashMap<String, u32>,
    /// Per member: the Set-Cookie value, plain and with `Secure` (for HTTPS listeners).
    set_cookie: Vec<[HeaderValue; 2]>,
}

impl AffinityCookie {
    pub fn new(farm: &FarmConfig, key: &[u8]) -> AffinityCookie {
        let mut by_token = HashMap::new();
        let mut set_cookie = Vec::new();
        for (i, m) in farm.members.iter().enumerate() {
            let token = token(key, &farm.name, &m.name);
            let plain = format!(
                "{}={token}; Path=/; HttpOnly; SameSite=Lax",
                farm.affinity_cookie
            );
            let secure = format!("{plain}; Secure");
            // Names are tokens and values base64url, so these are always valid header values.
            set_cookie.push([
                HeaderValue::from_str(&plain).unwrap_or(HeaderValue::from_static("")),
                HeaderValue::from_str(&secure).unwrap_or(HeaderValue::from_static("")),
            ]);
            by_token.insert(token, i as u32);
        }
        AffinityCookie {
            name: farm.affinity_cookie.clone(),
            by_token,
            set_cookie,
        }
    }

    /// The member a request's affinity cookie names, if the cookie is present and genuine.
    pub fn member(&self, headers: &http::HeaderMap) -> Option<u32> {
        headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(k, _)| *k == self.name)
            .find_map(|(_, v)| self.by_token.get(v.trim().trim_matches('"')).copied())
    }

    /// The Set-Cookie value that pins a client to `member`.
    pub fn set_cookie(&self, member: usize, secure: bool) -> Option<HeaderValue> {
        self.set_cookie
            .get(member)
            .map(|v| v[usize::from(secure)].clone())
    }
}

fn token(key: &[u8], farm: &str, member: &str) -> String {
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
    use crate::config::Config;

    fn farm() -> FarmConfig {
        let c = Config::parse(
            r#"
[[listeners]]
name = "web"
bind = "127.0.0.1:0"
[[farms]]
name = "f"
affinity = "cookie"
members = [{ name = "a", host = "10.0.0.1" }, { name = "b", host = "10.0.0.2" }]
[[rules]]
name = "r"
public_names = ["*"]
farm = "f"
"#,
            "t.toml",
        )
        .unwrap();
        c.farms[0].clone()
    }

    fn cookie_header(v: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::COOKIE, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn round_trip_forgery_and_key_agreement() {
        let f = farm();
        let one = AffinityCookie::new(&f, b"0123456789abcdef");
        let other_instance = AffinityCookie::new(&f, b"0123456789abcdef");
        let other_key = AffinityCookie::new(&f, b"fedcba9876543210");
        let set = one.set_cookie(1, false).unwrap();
        let set = set.to_str().unwrap();
        assert!(set.starts_with("farmgate_affinity="), "{set}");
        assert!(!set.contains("10.0.0.2"), "{set}");
        let pair = set.split(';').next().unwrap();
        let h = cookie_header(&format!("x=1; {pair}"));
        assert_eq!(one.member(&h), Some(1));
        assert_eq!(other_instance.member(&h), Some(1));
        assert_eq!(other_key.member(&h), None);
        assert_eq!(
            one.member(&cookie_header("farmgate_affinity=AAAAAAAAAAAAAAAAAAAAAA")),
            None
        );
        assert_eq!(one.member(&cookie_header("farmgate_affinity=")), None);
        assert_eq!(one.member(&http::HeaderMap::new()), None);
        assert!(
            one.set_cookie(0, true)
                .unwrap()
                .to_str()
                .unwrap()
                .ends_with("; Secure")
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
