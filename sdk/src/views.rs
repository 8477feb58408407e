//! Conveniences on the views and decisions plugins work with.

use crate::{
    AffinityDecision, Farm, ForwardTo, HealthVerdict, Member, MemberChoice, MemberState,
    RedirectTo, Request, Response, RouteDecision,
};

/// The `(name, value)` pairs of a header block (`name: value` lines).
pub fn header_lines(block: &str) -> impl Iterator<Item = (&str, &str)> {
    block
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim(), v.trim()))
}

/// The first value of header `name` in a header block (names compare case-insensitively).
pub fn find_header<'a>(block: &'a str, name: &str) -> Option<&'a str> {
    header_lines(block)
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// Appends one header to a header block.
pub fn push_header(block: &mut String, name: &str, value: &str) {
    if !block.is_empty() {
        block.push('\n');
    }
    block.push_str(&name.to_ascii_lowercase());
    block.push_str(": ");
    block.push_str(value);
}

impl Request {
    /// Every header as `(name, value)`, names lower-case, in arrival order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        header_lines(&self.headers)
    }

    /// The first value of a header (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// A cookie's value from the Cookie header(s).
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers()
            .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
            .flat_map(|(_, v)| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// A query parameter's raw (undecoded) value.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .as_deref()?
            .split('&')
            .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

impl Response {
    /// Every header as `(name, value)`.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        header_lines(&self.headers)
    }

    /// The first value of a header (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

impl Member {
    /// Whether the member takes new requests.
    pub fn is_online(&self) -> bool {
        self.state == MemberState::Active
    }
}

impl Farm {
    /// Members that take new requests.
    pub fn online_members(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.is_online())
    }

    pub fn member(&self, id: u32) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    pub fn member_named(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }
}

impl RouteDecision {
    /// Forward to another farm, otherwise unchanged.
    pub fn to_farm(farm: &str) -> RouteDecision {
        RouteDecision::Forward(ForwardTo {
            farm: Some(farm.to_string()),
            ..ForwardTo::unchanged()
        })
    }

    /// Redirect the client (301, 302, 303, 307 or 308).
    pub fn redirect(status: u16, location: &str) -> RouteDecision {
        RouteDecision::Redirect(RedirectTo {
            status,
            location: location.to_string(),
        })
    }

    /// Answer the client directly.
    pub fn respond(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> RouteDecision {
        RouteDecision::Respond(crate::DirectResponse {
            status,
            headers: vec![("content-type".to_string(), content_type.to_string())],
            body: body.into(),
        })
    }
}

impl ForwardTo {
    /// A forward that changes nothing: start here and set what should change.
    pub fn unchanged() -> ForwardTo {
        ForwardTo {
            farm: None,
            path: None,
            host: None,
            set_headers: Vec::new(),
            remove_headers: Vec::new(),
        }
    }
}

impl AffinityDecision {
    /// Choose the member with this id.
    pub fn member(id: u32) -> AffinityDecision {
        AffinityDecision::Member(MemberChoice { id, stick: false })
    }

    /// Choose the member and pin the client to it (farmgate writes the affinity cookie).
    pub fn stick_to(id: u32) -> AffinityDecision {
        AffinityDecision::Member(MemberChoice { id, stick: true })
    }
}

impl HealthVerdict {
    pub fn unhealthy(reason: impl Into<String>) -> HealthVerdict {
        HealthVerdict::Unhealthy(reason.into())
    }
}

#[cfg(test)]
mod tests {
    use crate::testing;

    #[test]
    fn request_helpers() {
        let r = testing::request("GET", "/a?x=1&y")
            .header("Cookie", "a=1; sess=abc")
            .header("X-Tenant", "t1")
            .build();
        assert_eq!(r.header("x-tenant"), Some("t1"));
        assert_eq!(r.cookie("sess"), Some("abc"));
        assert_eq!(r.cookie("nope"), None);
        assert_eq!(r.query_param("x"), Some("1"));
        assert_eq!(r.query_param("y"), Some(""));
        assert_eq!(r.path, "/a");
    }

    #[test]
    fn farm_helpers() {
        let f = testing::farm("web", 3)
            .state(1, crate::MemberState::Draining)
            .build();
        let online: Vec<u32> = f.online_members().map(|m| m.id).collect();
        assert_eq!(online, [0, 2]);
        assert_eq!(f.member_named("web2").map(|m| m.id), Some(1));
    }
}
