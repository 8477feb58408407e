//! Affinity cookie decoding: whatever Cookie headers a client sends, `Farm::sticky_member` names
//! a member only when one of the cookies with the farm's cookie name carries exactly that
//! member's token, and the member is not removed; a genuine cookie among any others is found;
//! the Set-Cookie the farm hands out reads back as its member.

#![no_main]

use std::sync::OnceLock;

use farmgate::Config;
use farmgate::affinity::{cookie_values, set_cookie_values, token};
use farmgate::farm::{Farm, MemberState};
use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

const KEY: &str = "fuzz-affinity-key-0123456789";
const COOKIE_NAME: &str = "farmgate_affinity";
const MEMBERS: usize = 4;

const CONFIG: &str = r#"
[proxy]
affinity_key = "fuzz-affinity-key-0123456789"

[[listeners]]
name = "web"
bind = "127.0.0.1:0"

[[farms]]
name = "f"
affinity = "cookie"
affinity_cookie = "farmgate_affinity"
members = [
  { name = "m0", host = "127.0.0.1", port = 9000 },
  { name = "m1", host = "127.0.0.1", port = 9001 },
  { name = "m2", host = "127.0.0.1", port = 9002 },
  { name = "m3", host = "127.0.0.1", port = 9003 },
]

[[rules]]
name = "r"
public_names = ["*"]
farm = "f"
"#;

fn farm() -> &'static Farm {
    static FARM: OnceLock<Farm> = OnceLock::new();
    FARM.get_or_init(|| {
        let config = Config::parse(CONFIG, "affinity_cookie.toml").expect("fuzz config is valid");
        assert_eq!(config.proxy.affinity_key.bytes, KEY.as_bytes());
        Farm::new(&config.farms[0], &config.proxy.affinity_key.bytes)
    })
}

#[derive(Arbitrary, Debug)]
enum Part {
    /// The farm's cookie with a member's genuine token.
    Genuine { member: u8, quoted: bool },
    /// The farm's cookie with a genuine token changed in one byte.
    Altered { member: u8, at: u8, byte: u8 },
    /// The farm's cookie with any value.
    Named(String),
    /// Any other cookie.
    Other(String, String),
    /// Any text between separators.
    Raw(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Bit i: member i is removed for this run.
    removed: u8,
    /// Bit i: member i is draining (sessions stay).
    draining: u8,
    /// Each header: its parts, and the whitespace around each separator.
    headers: Vec<(Vec<Part>, u8)>,
    /// Raw header values, bytes as sent (they may be no valid text at all).
    raw_headers: Vec<Vec<u8>>,
    /// A token made with any key, farm and member name.
    other_key: Vec<u8>,
    other_farm: String,
    other_member: String,
}

fn render(parts: &[Part], space: u8) -> String {
    let members = farm().members();
    let sep = match space % 4 {
        0 => ";",
        1 => "; ",
        2 => " ; ",
        _ => ";\t",
    };
    let mut out = String::new();
    for (i, p) in parts.iter().take(16).enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        match p {
            Part::Genuine { member, quoted } => {
                let t = &members[usize::from(*member) % members.len()].affinity.token;
                if *quoted {
                    out.push_str(&format!("{COOKIE_NAME}=\"{t}\""));
                } else {
                    out.push_str(&format!("{COOKIE_NAME}={t}"));
                }
            }
            Part::Altered { member, at, byte } => {
                let mut t = members[usize::from(*member) % members.len()]
                    .affinity
                    .token
                    .clone()
                    .into_bytes();
                let at = usize::from(*at) % t.len();
                t[at] = *byte;
                out.push_str(COOKIE_NAME);
                out.push('=');
                out.push_str(&String::from_utf8_lossy(&t));
            }
            Part::Named(v) => {
                out.push_str(COOKIE_NAME);
                out.push('=');
                out.push_str(v);
            }
            Part::Other(n, v) => {
                out.push_str(n);
                out.push('=');
                out.push_str(v);
            }
            Part::Raw(r) => out.push_str(r),
        }
    }
    out
}

/// An independent reading of the Cookie headers: the member the first cookie named
/// `COOKIE_NAME` with a live member's exact token names.
fn model(headers: &HeaderMap, farm: &Farm) -> Option<u32> {
    let members = farm.members();
    for value in headers.get_all(COOKIE) {
        // Pairs are read from the header's bytes: a pair of another application that is not
        // UTF-8 (or not ASCII) hides nothing but itself.
        for pair in value.as_bytes().split(|b| *b == b';') {
            let Some(eq) = pair.iter().position(|b| *b == b'=') else {
                continue;
            };
            if pair[..eq].trim_ascii() != COOKIE_NAME.as_bytes() {
                continue;
            }
            let Ok(mut v) = std::str::from_utf8(pair[eq + 1..].trim_ascii()) else {
                continue;
            };
            while let Some(rest) = v.strip_prefix('"') {
                v = rest;
            }
            while let Some(rest) = v.strip_suffix('"') {
                v = rest;
            }
            if let Some(i) = members
                .iter()
                .position(|m| m.affinity.token == v && m.admin_state() != MemberState::Removed)
            {
                return Some(i as u32);
            }
        }
    }
    None
}

fuzz_target!(|input: Input| {
    let farm = farm();
    let members = farm.members();
    assert_eq!(members.len(), MEMBERS);
    for (i, m) in members.iter().enumerate() {
        let state = if input.removed & (1 << i) != 0 {
            MemberState::Removed
        } else if input.draining & (1 << i) != 0 {
            MemberState::Draining
        } else {
            MemberState::Active
        };
        m.set_admin(state, "fuzz");
    }

    let mut headers = HeaderMap::new();
    let mut genuine_live = false;
    for (parts, space) in input.headers.iter().take(4) {
        let text = render(parts, *space);
        if let Ok(v) = HeaderValue::from_str(&text) {
            // A header that is not all visible ASCII (say another application's UTF-8 cookie
            // in the same Cookie header) still yields a genuine affinity cookie in it.
            genuine_live |= parts.iter().take(16).any(|p| match p {
                Part::Genuine { member, .. } => {
                    members[usize::from(*member) % MEMBERS].admin_state() != MemberState::Removed
                }
                _ => false,
            });
            headers.append(COOKIE, v);
        }
    }
    for raw in input.raw_headers.iter().take(2) {
        if let Ok(v) = HeaderValue::from_bytes(raw) {
            headers.append(COOKIE, v);
        }
    }

    // Every value handed out is the value of one `name=value` pair, unquoted.
    for v in cookie_values(&headers, COOKIE_NAME) {
        assert!(!v.contains(';'), "cookie value spans a separator: {v:?}");
        assert!(!v.starts_with('"') && !v.ends_with('"'), "cookie value still quoted: {v:?}");
    }

    let sticky = farm.sticky_member(&headers);
    if let Some(i) = sticky {
        let m = &members[i as usize];
        assert_ne!(m.admin_state(), MemberState::Removed, "a removed member is sticky");
        assert!(
            cookie_values(&headers, COOKIE_NAME).any(|v| v == m.affinity.token),
            "sticky member {i} whose token no cookie carries"
        );
        let token = m.affinity.token.as_bytes();
        assert!(
            headers
                .get_all(COOKIE)
                .iter()
                .any(|h| h.as_bytes().windows(token.len()).any(|w| w == token)),
            "sticky member {i} whose token is in no header"
        );
    }
    assert_eq!(sticky, model(&headers, farm), "sticky member differs from the model");
    if genuine_live {
        assert!(sticky.is_some(), "a genuine cookie of a live member was not found");
    }

    // What the farm hands out reads back as the same member.
    for (i, m) in members.iter().enumerate() {
        let [plain, secure] = &m.affinity.set_cookie;
        let plain = plain.to_str().expect("Set-Cookie is text");
        assert!(secure.to_str().expect("Set-Cookie is text").starts_with(plain));
        let pair = plain.split(';').next().unwrap_or_default();
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_str(pair).expect("cookie pair is a header value"));
        let expected = (m.admin_state() != MemberState::Removed).then_some(i as u32);
        assert_eq!(farm.sticky_member(&h), expected, "Set-Cookie of member {i} does not read back");
    }

    // Tokens: 22 base64url characters, a function of key, farm and member only.
    let key = if input.other_key.is_empty() { KEY.as_bytes() } else { &input.other_key[..] };
    let t = token(key, &input.other_farm, &input.other_member);
    assert_eq!(t.len(), 22);
    assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(t, token(key, &input.other_farm, &input.other_member));
    if key == KEY.as_bytes() && input.other_farm == "f" {
        let named = members.iter().position(|m| m.name == input.other_member);
        let matched = members.iter().position(|m| m.affinity.token == t);
        assert_eq!(named, matched, "a token matches a member it was not made for");
    } else if key != KEY.as_bytes() {
        assert!(members.iter().all(|m| m.affinity.token != t), "a token made with another key matches");
    }
    let [plain, _] = set_cookie_values(COOKIE_NAME, &t);
    assert!(plain.to_str().is_ok_and(|p| p.starts_with(&format!("{COOKIE_NAME}={t};"))));
});
