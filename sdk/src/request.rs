//! The request as routing and affinity plugins read it: each field crosses from farmgate into
//! the plugin the first time it is read, and is kept for the rest of the call.

use std::cell::OnceCell;

use crate::bindings::farmgate::plugin::types as wit;
use crate::headers::{find_header, header_lines};

/// Header names whose single values are fetched one by one before a request reads its whole
/// header block instead (a policy reads a header or two; one that reads many pays once).
const SINGLE_HEADERS: usize = 4;

/// A client request. Read it through its methods; [`crate::testing::request`] builds one for
/// native tests.
pub struct Request<'a> {
    host_side: Option<&'a wit::Request>,
    method: OnceCell<String>,
    scheme: OnceCell<String>,
    host: OnceCell<String>,
    path: OnceCell<String>,
    query: OnceCell<Option<String>>,
    client_addr: OnceCell<String>,
    listener: OnceCell<String>,
    rule: OnceCell<String>,
    /// The whole header block, once read.
    headers: OnceCell<String>,
    /// Headers read one at a time: (lower-case name, first value).
    single: [OnceCell<(String, Option<String>)>; SINGLE_HEADERS],
}

impl<'a> Request<'a> {
    /// The request farmgate handed to this call.
    #[doc(hidden)]
    pub fn from_host(host_side: &'a wit::Request) -> Request<'a> {
        Request {
            host_side: Some(host_side),
            ..Request::empty()
        }
    }

    pub(crate) fn empty() -> Request<'a> {
        Request {
            host_side: None,
            method: OnceCell::new(),
            scheme: OnceCell::new(),
            host: OnceCell::new(),
            path: OnceCell::new(),
            query: OnceCell::new(),
            client_addr: OnceCell::new(),
            listener: OnceCell::new(),
            rule: OnceCell::new(),
            headers: OnceCell::new(),
            single: Default::default(),
        }
    }

    /// Fills a field of a request built for a test.
    pub(crate) fn fill(cell: &mut OnceCell<String>, value: &str) {
        *cell = OnceCell::from(value.to_string());
    }

    fn read<'s>(&'s self, cell: &'s OnceCell<String>, get: fn(&wit::Request) -> String) -> &'s str {
        cell.get_or_init(|| self.host_side.map(get).unwrap_or_default())
    }

    /// `GET`, `POST`, ...
    pub fn method(&self) -> &str {
        self.read(&self.method, wit::Request::method)
    }

    /// `http` or `https`: the listener's scheme.
    pub fn scheme(&self) -> &str {
        self.read(&self.scheme, wit::Request::scheme)
    }

    /// The Host the client asked for, port included when sent.
    pub fn host(&self) -> &str {
        self.read(&self.host, wit::Request::host)
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.read(&self.path, wit::Request::path)
    }

    /// The query (after `?`), if there is one.
    pub fn query(&self) -> Option<&str> {
        self.query
            .get_or_init(|| self.host_side.and_then(wit::Request::query))
            .as_deref()
    }

    /// The client's IP address: the connection's peer, or, behind a trusted proxy, the address
    /// it forwarded.
    pub fn client_addr(&self) -> &str {
        self.read(&self.client_addr, wit::Request::client_addr)
    }

    /// The listener's name from the config.
    pub fn listener(&self) -> &str {
        self.read(&self.listener, wit::Request::listener)
    }

    /// The publishing rule that matched.
    pub fn rule(&self) -> &str {
        self.read(&self.rule, wit::Request::rule)
    }

    /// The first value of a header (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        if let Some(block) = self.headers.get() {
            return find_header(block, name);
        }
        if let Some(host_side) = self.host_side {
            for slot in &self.single {
                let (n, v) = slot.get_or_init(|| {
                    (
                        name.to_ascii_lowercase(),
                        host_side.header(&name.to_ascii_lowercase()),
                    )
                });
                if n.eq_ignore_ascii_case(name) {
                    return v.as_deref();
                }
            }
        }
        find_header(self.header_block(), name)
    }

    /// Every header as `(name, value)`, names lower-case, in arrival order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        header_lines(self.header_block())
    }

    /// The header block: one `name: value` line per header.
    pub fn header_block(&self) -> &str {
        self.read(&self.headers, wit::Request::headers)
    }

    /// A cookie's value from the Cookie header(s).
    pub fn cookie(&self, name: &str) -> Option<&str> {
        fn from<'v>(v: &'v str, name: &str) -> Option<&'v str> {
            v.split(';')
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v)
        }
        match self.headers.get() {
            // Several Cookie lines are possible only in the whole block.
            Some(_) => self
                .headers()
                .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
                .find_map(|(_, v)| from(v, name)),
            None => self.header("cookie").and_then(|v| from(v, name)),
        }
    }

    /// A query parameter's raw (undecoded) value.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query()?
            .split('&')
            .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// The path's segments between `/`s, empty ones skipped: `/v2//orders/7` gives `v2`,
    /// `orders`, `7`.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.path().split('/').filter(|s| !s.is_empty())
    }

    /// The path with the query after `?`, as a forward's `path` is written.
    pub fn path_and_query(&self) -> String {
        match self.query() {
            Some(q) => format!("{}?{q}", self.path()),
            None => self.path().to_string(),
        }
    }

    /// The path with `prefix` replaced by `with`, and the query kept: what a forward's path is
    /// for a prefix rewrite. `None` when the path does not start with `prefix` as whole segments
    /// (`/v1` matches `/v1` and `/v1/orders`, not `/v10`). `/v1/orders?id=7` with prefix `/v1`
    /// and `with` `""` gives `/orders?id=7`; an empty result path becomes `/`.
    pub fn replace_prefix(&self, prefix: &str, with: &str) -> Option<String> {
        let prefix = prefix.trim_end_matches('/');
        let rest = self.path().strip_prefix(prefix)?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        let mut path = format!("{}{rest}", with.trim_end_matches('/'));
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        if let Some(q) = self.query() {
            path.push('?');
            path.push_str(q);
        }
        Some(path)
    }

    /// The path's first segment, if there is one: `v2` of `/v2/orders`.
    pub fn first_segment(&self) -> Option<&str> {
        self.segments().next()
    }

    /// The path with its first segment replaced by `with` (an empty `with` removes it), and the
    /// query kept: `/current/orders?id=7` with `v2` is `/v2/orders?id=7`, with `""` it is
    /// `/orders?id=7`; `/` stays `/`.
    pub fn replace_first_segment(&self, with: &str) -> String {
        let path = self.path().trim_start_matches('/');
        let rest = path.find('/').map_or("", |i| &path[i..]);
        let with = with.trim_matches('/');
        let mut out = String::with_capacity(path.len() + with.len() + 2);
        if !with.is_empty() {
            out.push('/');
            out.push_str(with);
        }
        out.push_str(rest);
        if out.is_empty() {
            out.push('/');
        }
        if let Some(q) = self.query() {
            out.push('?');
            out.push_str(q);
        }
        out
    }

    /// Mutable access to the fields of a request built for a test.
    pub(crate) fn fields(&mut self) -> TestFields<'_, 'a> {
        TestFields(self)
    }
}

/// The fields of a test request, filled by [`crate::testing::RequestBuilder`].
pub(crate) struct TestFields<'r, 'a>(&'r mut Request<'a>);

impl TestFields<'_, '_> {
    pub(crate) fn method(&mut self, v: &str) {
        Request::fill(&mut self.0.method, v);
    }
    pub(crate) fn scheme(&mut self, v: &str) {
        Request::fill(&mut self.0.scheme, v);
    }
    pub(crate) fn host(&mut self, v: &str) {
        Request::fill(&mut self.0.host, v);
    }
    pub(crate) fn path(&mut self, v: &str) {
        Request::fill(&mut self.0.path, v);
    }
    pub(crate) fn query(&mut self, v: Option<&str>) {
        self.0.query = OnceCell::from(v.map(str::to_string));
    }
    pub(crate) fn client_addr(&mut self, v: &str) {
        Request::fill(&mut self.0.client_addr, v);
    }
    pub(crate) fn listener(&mut self, v: &str) {
        Request::fill(&mut self.0.listener, v);
    }
    pub(crate) fn rule(&mut self, v: &str) {
        Request::fill(&mut self.0.rule, v);
    }
    pub(crate) fn headers(&mut self) -> &mut String {
        if self.0.headers.get().is_none() {
            self.0.headers = OnceCell::from(String::new());
        }
        self.0
            .headers
            .get_mut()
            .expect("the header block was just filled")
    }
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method.get())
            .field("host", &self.host.get())
            .field("path", &self.path.get())
            .field("query", &self.query.get())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use crate::testing;

    #[test]
    fn a_test_request_reads_like_one_from_farmgate() {
        let r = testing::request("GET", "/a//b?x=1&y")
            .header("Cookie", "a=1; sess=abc")
            .header("X-Tenant", "t1")
            .build();
        assert_eq!(r.header("x-tenant"), Some("t1"));
        assert_eq!(r.header("X-TENANT"), Some("t1"));
        assert_eq!(r.header("absent"), None);
        assert_eq!(r.cookie("sess"), Some("abc"));
        assert_eq!(r.cookie("nope"), None);
        assert_eq!(r.query_param("x"), Some("1"));
        assert_eq!(r.query_param("y"), Some(""));
        assert_eq!(r.path(), "/a//b");
        assert_eq!(r.segments().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(r.path_and_query(), "/a//b?x=1&y");
        assert_eq!(r.host(), "www.example.com");
    }

    #[test]
    fn a_prefix_is_replaced_as_whole_segments_and_the_query_kept() {
        let r = testing::request("GET", "/v1/orders?id=7").build();
        assert_eq!(r.replace_prefix("/v1", "").as_deref(), Some("/orders?id=7"));
        assert_eq!(
            r.replace_prefix("/v1/", "/api/v1").as_deref(),
            Some("/api/v1/orders?id=7")
        );
        assert_eq!(r.replace_prefix("/v", ""), None);
        assert_eq!(r.first_segment(), Some("v1"));
        let bare = testing::request("GET", "/v1").build();
        assert_eq!(bare.replace_prefix("/v1", "").as_deref(), Some("/"));
        assert_eq!(bare.replace_prefix("/v1", "v2").as_deref(), Some("/v2"));
        assert_eq!(testing::request("GET", "/").build().first_segment(), None);
        assert_eq!(r.replace_first_segment("v2"), "/v2/orders?id=7");
        assert_eq!(r.replace_first_segment(""), "/orders?id=7");
        assert_eq!(r.replace_first_segment("/api/v2/"), "/api/v2/orders?id=7");
        assert_eq!(bare.replace_first_segment(""), "/");
        assert_eq!(bare.replace_first_segment("v2"), "/v2");
        let root = testing::request("GET", "/?a=1").build();
        assert_eq!(root.replace_first_segment(""), "/?a=1");
        assert_eq!(root.replace_first_segment("v2"), "/v2?a=1");
    }

    #[test]
    fn setting_the_host_replaces_the_host_header() {
        let r = testing::request("GET", "/")
            .header("accept", "*/*")
            .host("api.example.com")
            .build();
        assert_eq!(r.host(), "api.example.com");
        assert_eq!(r.header("host"), Some("api.example.com"));
        assert_eq!(r.headers().count(), 2);
    }
}
