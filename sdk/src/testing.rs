//! Builders for the views farmgate hands to plugins, so plugin logic is unit-tested natively with
//! `cargo test`:
//!
//! ```
//! use farmgate_sdk::testing;
//! let req = testing::request("GET", "/v2/orders?id=7").host("api.example.com").header("x-tenant", "t1").build();
//! let farm = testing::farm("web", 3).in_flight(0, 4).state(2, farmgate_sdk::MemberState::Draining).build();
//! assert_eq!(req.query.as_deref(), Some("id=7"));
//! assert_eq!(farm.online_members().count(), 2);
//! ```

use crate::{Farm, Member, MemberState, Probe, Request, Response, Settings};

/// Settings from JSON text; panics on invalid JSON (it is test input).
pub fn settings(json: &str) -> Settings {
    Settings::from_json(json).expect("test settings are a JSON object")
}

pub struct RequestBuilder(Request);

/// A request with `method` and `path_and_query`, Host `www.example.com`, from 192.0.2.1.
pub fn request(method: &str, path_and_query: &str) -> RequestBuilder {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (path_and_query.to_string(), None),
    };
    RequestBuilder(Request {
        method: method.to_string(),
        scheme: "http".into(),
        host: "www.example.com".into(),
        path,
        query,
        headers: "host: www.example.com".into(),
        client_addr: "192.0.2.1".into(),
        listener: "web".into(),
        rule: "site".into(),
    })
}

impl RequestBuilder {
    pub fn host(mut self, host: &str) -> Self {
        self.0.host = host.to_string();
        let rest: Vec<(String, String)> = crate::views::header_lines(&self.0.headers)
            .filter(|(n, _)| *n != "host")
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        self.0.headers = format!("host: {host}");
        for (n, v) in rest {
            crate::views::push_header(&mut self.0.headers, &n, &v);
        }
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        crate::views::push_header(&mut self.0.headers, name, value);
        self
    }
    pub fn client(mut self, addr: &str) -> Self {
        self.0.client_addr = addr.to_string();
        self
    }
    pub fn scheme(mut self, scheme: &str) -> Self {
        self.0.scheme = scheme.to_string();
        self
    }
    pub fn rule(mut self, rule: &str) -> Self {
        self.0.rule = rule.to_string();
        self
    }
    pub fn build(self) -> Request {
        self.0
    }
}

pub struct FarmBuilder(Farm);

/// A farm of `members` active members with ids 0.. and names `<farm>1`, `<farm>2`, ...
pub fn farm(name: &str, members: u32) -> FarmBuilder {
    FarmBuilder(Farm {
        name: name.to_string(),
        members: (0..members)
            .map(|id| Member {
                id,
                name: format!("{name}{}", id + 1),
                weight: 1,
                state: MemberState::Active,
                in_flight: 0,
                latency_ewma_us: 0,
                requests: 0,
                failures: 0,
                bytes: 0,
            })
            .collect(),
        sticky_member: None,
        sequence: 0,
    })
}

impl FarmBuilder {
    fn member(&mut self, id: u32) -> &mut Member {
        self.0
            .members
            .iter_mut()
            .find(|m| m.id == id)
            .expect("member id exists in the test farm")
    }
    pub fn state(mut self, id: u32, state: MemberState) -> Self {
        self.member(id).state = state;
        self
    }
    pub fn in_flight(mut self, id: u32, n: u32) -> Self {
        self.member(id).in_flight = n;
        self
    }
    pub fn weight(mut self, id: u32, w: u32) -> Self {
        self.member(id).weight = w;
        self
    }
    pub fn latency_us(mut self, id: u32, us: u64) -> Self {
        self.member(id).latency_ewma_us = us;
        self
    }
    pub fn requests(mut self, id: u32, n: u64) -> Self {
        self.member(id).requests = n;
        self
    }
    pub fn bytes(mut self, id: u32, n: u64) -> Self {
        self.member(id).bytes = n;
        self
    }
    /// The farm's choice counter (what round-robin policies rotate by).
    pub fn sequence(mut self, n: u64) -> Self {
        self.0.sequence = n;
        self
    }
    pub fn sticky(mut self, id: u32) -> Self {
        self.0.sticky_member = Some(id);
        self
    }
    pub fn build(self) -> Farm {
        self.0
    }
}

/// A response with `status` and `content_type`, published as `public` from `internal`.
pub fn response(status: u16, content_type: &str, public: &str, internal: &str) -> Response {
    Response {
        rule: "site".into(),
        public_name: public.to_string(),
        internal_name: internal.to_string(),
        public_scheme: "http".into(),
        status,
        content_type: Some(content_type.to_string()),
        headers: format!("content-type: {content_type}"),
    }
}

/// A probe that got `status` with `body` after `latency_us`.
pub fn probe(status: u16, body: &str, latency_us: u64) -> Probe {
    Probe {
        farm: "web".into(),
        member: "web1".into(),
        url: "http://web1/status.htm".into(),
        status: Some(status),
        headers: String::new(),
        body_prefix: body.as_bytes().to_vec(),
        latency_us,
        error: None,
    }
}
