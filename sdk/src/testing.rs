//! Builders for what farmgate hands to plugins, so plugin logic is unit-tested natively with
//! `cargo test`:
//!
//! ```
//! use farmgate_sdk::testing;
//! let req = testing::request("GET", "/v2/orders?id=7").host("api.example.com").header("x-tenant", "t1").build();
//! let farm = testing::farm("web", 3).in_flight(0, 4).state(2, farmgate_sdk::MemberState::Draining).build();
//! assert_eq!(req.query(), Some("id=7"));
//! assert_eq!(req.header("X-Tenant"), Some("t1"));
//! assert_eq!(farm.online_members().count(), 2);
//! ```

use crate::bindings::farmgate::plugin::types::MemberLive;
use crate::farm::{Figures, Info, Table};
use crate::headers::{header_lines, push_header};
use crate::{Farm, MemberState, Probe, Request, Response, Settings};

/// Settings from JSON text; panics on invalid JSON (it is test input).
pub fn settings(json: &str) -> Settings {
    Settings::from_json(json).expect("test settings are a JSON object")
}

/// Builds a [`Request`].
pub struct RequestBuilder(Request<'static>);

/// A request with `method` and `path_and_query`, Host `www.example.com`, from 192.0.2.1, on
/// listener `web`, matched by rule `site`.
pub fn request(method: &str, path_and_query: &str) -> RequestBuilder {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let mut req = Request::empty();
    let mut f = req.fields();
    f.method(method);
    f.scheme("http");
    f.host("www.example.com");
    f.path(path);
    f.query(query);
    f.client_addr("192.0.2.1");
    f.listener("web");
    f.rule("site");
    f.headers().push_str("host: www.example.com");
    RequestBuilder(req)
}

impl RequestBuilder {
    /// The Host asked for (and the `host` header).
    pub fn host(mut self, host: &str) -> Self {
        let mut f = self.0.fields();
        f.host(host);
        let block = f.headers();
        let mut next = format!("host: {host}");
        for (n, v) in header_lines(block).filter(|(n, _)| *n != "host") {
            push_header(&mut next, n, v);
        }
        *block = next;
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        push_header(self.0.fields().headers(), name, value);
        self
    }
    pub fn client(mut self, addr: &str) -> Self {
        self.0.fields().client_addr(addr);
        self
    }
    pub fn scheme(mut self, scheme: &str) -> Self {
        self.0.fields().scheme(scheme);
        self
    }
    pub fn rule(mut self, rule: &str) -> Self {
        self.0.fields().rule(rule);
        self
    }
    pub fn listener(mut self, listener: &str) -> Self {
        self.0.fields().listener(listener);
        self
    }
    pub fn build(self) -> Request<'static> {
        self.0
    }
}

/// Builds a [`Farm`].
pub struct FarmBuilder {
    table: Table,
    live: Vec<MemberLive>,
    figures: Vec<Figures>,
    sticky: Option<u32>,
    sequence: u64,
}

/// A farm of `members` active members with ids 0.. and names `<farm>1`, `<farm>2`, ...
pub fn farm(name: &str, members: u32) -> FarmBuilder {
    FarmBuilder {
        table: Table {
            name: name.to_string(),
            members: (0..members)
                .map(|id| Info {
                    name: format!("{name}{}", id + 1),
                    weight: 1,
                })
                .collect(),
        },
        live: (0..members)
            .map(|_| MemberLive {
                state: MemberState::Active,
                in_flight: 0,
            })
            .collect(),
        figures: vec![Figures::default(); members as usize],
        sticky: None,
        sequence: 0,
    }
}

impl FarmBuilder {
    fn at(&self, id: u32) -> usize {
        assert!(
            (id as usize) < self.live.len(),
            "member id {id} does not exist in the test farm"
        );
        id as usize
    }
    pub fn state(mut self, id: u32, state: MemberState) -> Self {
        let i = self.at(id);
        self.live[i].state = state;
        self
    }
    pub fn in_flight(mut self, id: u32, n: u32) -> Self {
        let i = self.at(id);
        self.live[i].in_flight = n;
        self
    }
    pub fn weight(mut self, id: u32, w: u32) -> Self {
        let i = self.at(id);
        self.table.members[i].weight = w;
        self
    }
    pub fn name(mut self, id: u32, name: &str) -> Self {
        let i = self.at(id);
        self.table.members[i].name = name.to_string();
        self
    }
    pub fn latency_us(mut self, id: u32, us: u64) -> Self {
        let i = self.at(id);
        self.figures[i].latency_ewma_us = us;
        self
    }
    pub fn requests(mut self, id: u32, n: u64) -> Self {
        let i = self.at(id);
        self.figures[i].requests = n;
        self
    }
    pub fn failures(mut self, id: u32, n: u64) -> Self {
        let i = self.at(id);
        self.figures[i].failures = n;
        self
    }
    pub fn bytes(mut self, id: u32, n: u64) -> Self {
        let i = self.at(id);
        self.figures[i].bytes = n;
        self
    }
    /// The farm's choice counter (what round-robin policies rotate by).
    pub fn sequence(mut self, n: u64) -> Self {
        self.sequence = n;
        self
    }
    pub fn sticky(mut self, id: u32) -> Self {
        self.sticky = Some(id);
        self
    }
    pub fn build(self) -> Farm<'static> {
        Farm::built(
            self.table,
            self.live,
            self.figures,
            self.sticky,
            self.sequence,
        )
    }
}

/// Builds a [`Response`].
pub struct ResponseBuilder(Response<'static>);

/// A response with `status` and `content_type`, published as `public` from `internal` by rule
/// `site` over `http`.
pub fn response(status: u16, content_type: &str, public: &str, internal: &str) -> ResponseBuilder {
    let r = Response::empty();
    let _ = r.rule.set("site".into());
    let _ = r.public_name.set(public.to_string());
    let _ = r.internal_name.set(internal.to_string());
    let _ = r.public_scheme.set("http".into());
    let _ = r.status.set(status);
    let _ = r.content_type.set(Some(content_type.to_string()));
    let _ = r.headers.set(format!("content-type: {content_type}"));
    ResponseBuilder(r)
}

impl ResponseBuilder {
    pub fn rule(mut self, rule: &str) -> Self {
        self.0.rule = rule.to_string().into();
        self
    }
    /// The scheme the client used.
    pub fn public_scheme(mut self, scheme: &str) -> Self {
        self.0.public_scheme = scheme.to_string().into();
        self
    }
    /// No Content-Type (and no such header).
    pub fn no_content_type(mut self) -> Self {
        self.0.content_type = None.into();
        self.0.headers = String::new().into();
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        append_header(&mut self.0.headers, name, value);
        self
    }
    pub fn build(self) -> Response<'static> {
        self.0
    }
}

/// Builds a [`Probe`].
pub struct ProbeBuilder(Probe<'static>);

/// A probe of member `web1` of farm `web` that got `status` with `body` after `latency_us`.
pub fn probe(status: u16, body: &str, latency_us: u64) -> ProbeBuilder {
    let p = Probe::empty();
    let _ = p.farm.set("web".into());
    let _ = p.member.set("web1".into());
    let _ = p.url.set("http://web1/status.htm".into());
    let _ = p.status.set(Some(status));
    let _ = p.headers.set(String::new());
    let _ = p.body_prefix.set(body.as_bytes().to_vec());
    let _ = p.latency_us.set(latency_us);
    let _ = p.error.set(None);
    ProbeBuilder(p)
}

impl ProbeBuilder {
    pub fn farm(mut self, farm: &str) -> Self {
        self.0.farm = farm.to_string().into();
        self
    }
    pub fn member(mut self, member: &str) -> Self {
        self.0.member = member.to_string().into();
        self
    }
    pub fn body(mut self, body: &[u8]) -> Self {
        self.0.body_prefix = body.to_vec().into();
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        append_header(&mut self.0.headers, name, value);
        self
    }
    /// No status (and no error saying why): what a probe reads as when no response arrived and
    /// farmgate gave no reason.
    pub fn no_status(mut self) -> Self {
        self.0.status = None.into();
        self
    }
    /// No response arrived: `status` is none and `error` says why.
    pub fn failed(mut self, error: &str) -> Self {
        self.0.status = None.into();
        self.0.error = Some(error.to_string()).into();
        self
    }
    /// A response arrived but reading it failed part-way: the status stays, `error` says why.
    pub fn error(mut self, error: &str) -> Self {
        self.0.error = Some(error.to_string()).into();
        self
    }
    pub fn build(self) -> Probe<'static> {
        self.0
    }
}

/// Appends one header to the header block of a response or probe built for a test.
fn append_header(block: &mut std::cell::OnceCell<String>, name: &str, value: &str) {
    let mut text = block.take().unwrap_or_default();
    push_header(&mut text, name, value);
    *block = text.into();
}
