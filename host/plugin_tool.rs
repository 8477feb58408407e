//! `farmgate plugin new | build | test`: scaffolding a plugin crate, building it for
//! `wasm32-wasip2`, and running the built artifact against a request and farm snapshot.
//!
//! `new` and `build` only write files and run cargo; `test` loads the component with the same
//! runtime the proxy uses, so the artifact tested is the artifact deployed.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::config::PluginSettings;
use std::sync::Arc;

use crate::plugins::{
    FarmFacts, FarmLive, FarmTable, Hook, MemberFigures, MemberInfo, MemberLive, MemberStateView,
    ProbeResult, RequestFacts, ResponseFacts, Runtime,
};

/// The hooks a scaffolded plugin can start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HookKind {
    Router,
    Affinity,
    LinkTranslation,
    HealthEvaluation,
}

/// Where the scaffolded crate gets `farmgate-sdk` from.
pub fn default_sdk_dependency(sdk: Option<&Path>) -> String {
    let path = sdk
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("FARMGATE_SDK").map(PathBuf::from))
        .or_else(|| {
            let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk");
            built_from.join("Cargo.toml").exists().then_some(built_from)
        });
    match path {
        Some(p) => format!("{{ path = {:?} }}", p.display().to_string()),
        None => format!("\"{}\"", env!("CARGO_PKG_VERSION")),
    }
}

/// Creates `dir/name` as a plugin crate for `hook`; returns its directory.
pub fn new_plugin(
    dir: &Path,
    name: &str,
    hook: HookKind,
    sdk_dependency: &str,
) -> Result<PathBuf, String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "plugin name \"{name}\" may use only letters, digits, '-' and '_'"
        ));
    }
    let root = dir.join(name);
    if root.exists() {
        return Err(format!("{} already exists", root.display()));
    }
    let type_name: String = name
        .split(['-', '_'])
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    let type_name = if type_name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
    {
        type_name
    } else {
        format!("Plugin{type_name}")
    };
    let write = |rel: &str, text: String| -> Result<(), String> {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    write(
        "Cargo.toml",
        format!(
            r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
farmgate-sdk = {sdk_dependency}

[profile.release]
opt-level = "s"
lto = true
# Debug info goes; function names stay, so a trap in the plugin names where it was.
strip = "debuginfo"
codegen-units = 1

# A crate of its own, even inside another workspace's directory.
[workspace]
"#
        ),
    )?;
    write("src/lib.rs", template(hook, &type_name))?;
    write(".gitignore", "/target\n".into())?;
    write("input.json", input_template(hook))?;
    write(
        "README.md",
        format!(
            "# {name}\n\nA farmgate {hook:?} plugin.\n\n\
             - `cargo test`: the plugin's logic, natively.\n\
             - `farmgate plugin build`: builds `target/wasm32-wasip2/release/{file}.wasm`.\n\
             - `farmgate plugin test target/wasm32-wasip2/release/{file}.wasm --input input.json`: runs the built\n  \
             artifact against the request (and farm) in `input.json` and prints its decision.\n\
             - Deploy: copy the `.wasm` next to farmgate's plugin folder, then rename it in (`mv`), so\n  \
             farmgate never reads a half-written file. Settings go in `[plugins.config.<file name>]`.\n",
            file = name.replace('-', "_"),
        ),
    )?;
    Ok(root)
}

fn template(hook: HookKind, ty: &str) -> String {
    let (imports, body, test) = match hook {
        HookKind::Router => (
            "Plugin, Request, RouteDecision, Router, Settings",
            format!(
                r#"impl Router for {ty} {{
    fn route(&self, req: &Request) -> RouteDecision {{
        if req.path().starts_with(&self.prefix) {{
            RouteDecision::to_farm(&self.farm)
        }} else {{
            RouteDecision::Pass
        }}
    }}
}}"#
            ),
            format!(
                r##"    #[test]
    fn routes_the_prefix_to_the_farm() {{
        let p = {ty}::new(&testing::settings(r#"{{"prefix": "/api/", "farm": "api"}}"#)).unwrap();
        assert_eq!(p.route(&testing::request("GET", "/api/x").build()), RouteDecision::to_farm("api"));
        assert_eq!(p.route(&testing::request("GET", "/other").build()), RouteDecision::Pass);
    }}"##
            ),
        ),
        HookKind::Affinity => (
            "Affinity, AffinityDecision, Farm, Plugin, Request, Settings",
            format!(
                r#"impl Affinity for {ty} {{
    fn choose(&self, _req: &Request, farm: &Farm) -> AffinityDecision {{
        // The online member with the fewest requests in flight.
        match farm.online_members().min_by_key(|m| m.in_flight()) {{
            Some(m) => AffinityDecision::member(m.id()),
            None => AffinityDecision::Pass,
        }}
    }}
}}"#
            ),
            format!(
                r#"    #[test]
    fn picks_the_least_busy_member() {{
        let p = {ty}::new(&testing::settings("{{}}")).unwrap();
        let farm = testing::farm("web", 3).in_flight(0, 5).in_flight(1, 1).in_flight(2, 3).build();
        assert_eq!(p.choose(&testing::request("GET", "/").build(), &farm), AffinityDecision::member(1));
    }}"#
            ),
        ),
        HookKind::LinkTranslation => (
            "LinkTranslation, Mapping, Plugin, Response, Settings, Translation, TranslationDecision",
            format!(
                r#"impl LinkTranslation for {ty} {{
    fn decide(&self, resp: &Response) -> TranslationDecision {{
        if !resp.content_type().unwrap_or("").starts_with("text/html") {{
            return TranslationDecision::Pass;
        }}
        TranslationDecision::Translate(Translation {{
            mappings: vec![Mapping {{
                from: format!("http://{{}}", resp.internal_name()),
                to: format!("{{}}://{{}}", resp.public_scheme(), resp.public_name()),
            }}],
            headers: vec!["location".into()],
            body: true,
        }})
    }}
}}"#
            ),
            format!(
                r#"    #[test]
    fn translates_html_only() {{
        let p = {ty}::new(&testing::settings("{{}}")).unwrap();
        let html = testing::response(200, "text/html", "www.example.com", "intranet.local").build();
        assert!(matches!(p.decide(&html), TranslationDecision::Translate(_)));
        let png = testing::response(200, "image/png", "www.example.com", "intranet.local").build();
        assert_eq!(p.decide(&png), TranslationDecision::Pass);
    }}"#
            ),
        ),
        HookKind::HealthEvaluation => (
            "HealthEvaluation, HealthVerdict, Plugin, Probe, Settings",
            format!(
                r#"impl HealthEvaluation for {ty} {{
    fn evaluate(&self, probe: &Probe) -> HealthVerdict {{
        match probe.status() {{
            Some(s) if (200..400).contains(&s) => HealthVerdict::Healthy,
            Some(s) => HealthVerdict::unhealthy(format!("status {{s}}")),
            None => HealthVerdict::Pass,
        }}
    }}
}}"#
            ),
            format!(
                r#"    #[test]
    fn judges_by_status() {{
        let p = {ty}::new(&testing::settings("{{}}")).unwrap();
        assert_eq!(p.evaluate(&testing::probe(200, "OK", 1000).build()), HealthVerdict::Healthy);
        assert!(matches!(p.evaluate(&testing::probe(503, "", 1000).build()), HealthVerdict::Unhealthy(_)));
    }}"#
            ),
        ),
    };
    let (fields, init) = match hook {
        HookKind::Router => (
            "    prefix: String,\n    farm: String,\n",
            format!(
                "        Ok({ty} {{\n            prefix: settings.get_or(\"prefix\", \"/api/\".to_string())?,\n            farm: settings.get_or(\"farm\", \"api\".to_string())?,\n        }})"
            ),
        ),
        _ => (
            "",
            format!("        let _ = settings;\n        Ok({ty} {{}})"),
        ),
    };
    format!(
        r#"//! A farmgate plugin. Settings come from `[plugins.config.<file name>] settings = {{ ... }}`.

use farmgate_sdk::{{export_plugin, {imports}}};

pub struct {ty} {{
{fields}}}

impl Plugin for {ty} {{
    fn new(settings: &Settings) -> Result<Self, String> {{
{init}
    }}
}}

{body}

export_plugin!({ty});

#[cfg(test)]
mod tests {{
    use super::*;
    use farmgate_sdk::testing;

{test}
}}
"#
    )
}

fn input_template(hook: HookKind) -> String {
    let (hook_name, question) = match hook {
        HookKind::Router => (
            "router",
            r#""request": { "method": "GET", "host": "www.example.com", "path": "/api/orders", "headers": [["user-agent", "curl/8"]] }"#,
        ),
        HookKind::Affinity => (
            "affinity",
            r#""request": { "path": "/" },
  "farm": { "name": "web", "members": [{ "name": "web1", "in_flight": 2 }, { "name": "web2" }] }"#,
        ),
        HookKind::LinkTranslation => (
            "link-translation",
            r#""response": { "status": 200, "content_type": "text/html", "public_name": "www.example.com", "internal_name": "intranet.local" }"#,
        ),
        HookKind::HealthEvaluation => (
            "health-evaluation",
            r#""probe": { "status": 503, "body": "maintenance", "latency_us": 2000 }"#,
        ),
    };
    format!("{{\n  \"hook\": \"{hook_name}\",\n  \"settings\": {{}},\n  {question}\n}}\n")
}

/// Builds the plugin crate at `dir` for wasm32-wasip2 in release; returns the `.wasm` path.
pub fn build(dir: &Path) -> Result<PathBuf, String> {
    build_with(dir, &[])
}

/// Whether the toolchain that builds has the standard library for wasm32-wasip2: `None` when
/// that cannot be told (no rustc to ask), so cargo's own error speaks then.
fn wasm_target_installed() -> Option<bool> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", "wasm32-wasip2"])
        .output()
        .ok()?;
    if !out.status.success() {
        return Some(false);
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Some(Path::new(&dir).is_dir())
}

/// [`build`] with arguments for cargo (`--features x`, `--locked`, ...).
pub fn build_with(dir: &Path, cargo_args: &[String]) -> Result<PathBuf, String> {
    if wasm_target_installed() == Some(false) {
        return Err("the wasm32-wasip2 target is not installed for this Rust toolchain; add it with `rustup target add wasm32-wasip2` (or your distribution's rust-std package for wasm32-wasip2), then build again".into());
    }
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
    let parsed: toml::Table =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let name = parsed
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .ok_or_else(|| format!("{} has no [package] name", manifest.display()))?
        .to_string();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(&manifest)
        .args(cargo_args)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(
            "cargo build failed (if it says the wasm32-wasip2 target is missing: rustup target add wasm32-wasip2)".into(),
        );
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("target"));
    let wasm = target_dir
        .join("wasm32-wasip2")
        .join("release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    if wasm.exists() {
        Ok(wasm)
    } else {
        Err(format!(
            "the build succeeded but {} is missing",
            wasm.display()
        ))
    }
}

/// A router's decision for people: a `Respond` body that is UTF-8 is shown as text, not as a
/// list of byte values.
fn route_decision_text(d: &crate::plugins::RouteDecision) -> String {
    match d {
        crate::plugins::RouteDecision::Respond(r) => match std::str::from_utf8(&r.body) {
            Ok(text) => format!(
                "decision: Respond {{\n    status: {},\n    headers: {:?},\n    body (text): {text:?},\n}}\n",
                r.status, r.headers
            ),
            Err(_) => format!("decision: {d:#?}\n"),
        },
        _ => format!("decision: {d:#?}\n"),
    }
}

/// What `farmgate plugin test` reads: the hook to ask, the plugin's settings, a request and a
/// farm snapshot. Missing fields take plausible defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestInput {
    pub hook: String,
    #[serde(default)]
    pub settings: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub request: TestRequest,
    #[serde(default)]
    pub farm: TestFarm,
    #[serde(default)]
    pub response: TestResponse,
    #[serde(default)]
    pub probe: TestProbe,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestResponse {
    pub rule: String,
    pub public_name: String,
    pub internal_name: String,
    pub public_scheme: String,
    pub status: u16,
    pub content_type: Option<String>,
    pub headers: Vec<(String, String)>,
}

impl Default for TestResponse {
    fn default() -> Self {
        TestResponse {
            rule: "site".into(),
            public_name: "www.example.com".into(),
            internal_name: "intranet.example.local".into(),
            public_scheme: "https".into(),
            status: 200,
            content_type: Some("text/html; charset=utf-8".into()),
            headers: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestProbe {
    pub farm: String,
    pub member: String,
    pub url: String,
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
    /// The start of the body, as text.
    pub body: String,
    pub latency_us: u64,
    pub error: Option<String>,
}

impl Default for TestProbe {
    fn default() -> Self {
        TestProbe {
            farm: "web".into(),
            member: "web1".into(),
            url: "http://web1/status.htm".into(),
            status: Some(200),
            headers: Vec::new(),
            body: "OK".into(),
            latency_us: 1500,
            error: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestRequest {
    pub method: String,
    pub scheme: String,
    pub host: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    pub client_addr: String,
    pub listener: String,
    pub rule: String,
}

impl Default for TestRequest {
    fn default() -> Self {
        TestRequest {
            method: "GET".into(),
            scheme: "http".into(),
            host: "www.example.com".into(),
            path: "/".into(),
            query: None,
            headers: Vec::new(),
            client_addr: "192.0.2.1".into(),
            listener: "web".into(),
            rule: "site".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestFarm {
    pub name: String,
    pub members: Vec<TestMember>,
    pub sticky_member: Option<u32>,
    pub sequence: u64,
}

impl Default for TestFarm {
    fn default() -> Self {
        TestFarm {
            name: "web".into(),
            members: vec![TestMember::default()],
            sticky_member: None,
            sequence: 0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestMember {
    pub name: String,
    pub weight: u32,
    /// active, out-of-service, draining, removed or unable-to-verify.
    pub state: String,
    pub in_flight: u32,
    pub latency_ewma_us: u64,
    pub requests: u64,
    pub failures: u64,
    pub bytes: u64,
}

impl Default for TestMember {
    fn default() -> Self {
        TestMember {
            name: "web1".into(),
            weight: 1,
            state: "active".into(),
            in_flight: 0,
            latency_ewma_us: 0,
            requests: 0,
            failures: 0,
            bytes: 0,
        }
    }
}

/// Loads `wasm` as the proxy would and asks it the input's question; returns the decision as text.
pub async fn test(wasm: &Path, input: &TestInput) -> Result<String, String> {
    let bytes = std::fs::read(wasm).map_err(|e| format!("cannot read {}: {e}", wasm.display()))?;
    let name = wasm
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin")
        .to_string();
    let mut settings = PluginSettings::default();
    settings.config.insert(
        name.clone(),
        crate::config::PluginConfig {
            settings_json: serde_json::Value::Object(input.settings.clone()).to_string(),
            ..Default::default()
        },
    );
    let runtime = Runtime::new(settings).map_err(|e| e.to_string())?;
    let loaded = {
        let runtime = std::sync::Arc::clone(&runtime);
        let file = wasm.to_path_buf();
        tokio::task::spawn_blocking(move || runtime.load(&name, &file, &bytes, "tool".into()))
            .await
            .map_err(|e| e.to_string())?
    };
    let plugin = loaded.map_err(|reason| format!("{}: {reason}", wasm.display()))?;
    let request = request_facts(&input.request)?;
    let mut out = format!("plugin implements: {:?}\n", plugin.hooks);
    match input.hook.as_str() {
        "router" => {
            require(&plugin.hooks, Hook::Router, "router")?;
            let d = runtime
                .route(&plugin, &request)
                .await
                .map_err(|f| f.to_string())?;
            out.push_str(&route_decision_text(&d));
        }
        "affinity" => {
            require(&plugin.hooks, Hook::Affinity, "affinity")?;
            let (farm, live) = tool_farm(&input.farm)?;
            let d = runtime
                .choose(&plugin, &request, &farm, &live)
                .await
                .map_err(|f| f.to_string())?;
            out.push_str(&format!("decision: {d:#?}\n"));
        }
        "link-translation" => {
            require(&plugin.hooks, Hook::LinkTranslation, "link-translation")?;
            let r = &input.response;
            let mut headers = header_map(&r.headers)?;
            if let Some(ct) = &r.content_type
                && !headers.contains_key(http::header::CONTENT_TYPE)
            {
                headers.insert(http::header::CONTENT_TYPE, header_value(ct)?);
            }
            let view = Arc::new(ResponseFacts {
                rule: Arc::from(r.rule.as_str()),
                internal_name: Arc::from(r.internal_name.as_str()),
                public_name: header_value(&r.public_name)?,
                public_scheme: if r.public_scheme == "https" {
                    "https"
                } else {
                    "http"
                },
                status: r.status,
                headers,
            });
            let d = runtime
                .decide_translation(&plugin, &view)
                .await
                .map_err(|f| f.to_string())?;
            out.push_str(&format!("decision: {d:#?}\n"));
        }
        "health-evaluation" => {
            require(&plugin.hooks, Hook::HealthEvaluation, "health-evaluation")?;
            let p = &input.probe;
            let view = Arc::new(ProbeResult {
                farm: p.farm.clone(),
                member: p.member.clone(),
                url: p.url.clone(),
                status: p.status,
                headers: header_map(&p.headers)?,
                body_prefix: p.body.as_bytes().to_vec(),
                latency_us: p.latency_us,
                error: p.error.clone(),
            });
            let d = runtime
                .evaluate_health(&plugin, &view)
                .await
                .map_err(|f| f.to_string())?;
            out.push_str(&format!("decision: {d:#?}\n"));
        }
        other => {
            return Err(format!(
                "unknown hook \"{other}\"; use router, affinity, link-translation or health-evaluation"
            ));
        }
    }
    Ok(out)
}

fn require(hooks: &[Hook], hook: Hook, name: &str) -> Result<(), String> {
    if hooks.contains(&hook) {
        Ok(())
    } else {
        Err(format!(
            "the plugin does not implement the {name} hook (it has {hooks:?})"
        ))
    }
}

/// A test farm as the runtime hands farms over: the member table and figures behind the farm
/// resource, and the live state of the call.
struct ToolFarm {
    table: FarmTable,
    figures: Vec<MemberFigures>,
}

impl FarmFacts for ToolFarm {
    fn table(&self) -> FarmTable {
        self.table.clone()
    }

    fn figures(&self) -> Vec<MemberFigures> {
        self.figures.clone()
    }
}

fn tool_farm(f: &TestFarm) -> Result<(Arc<dyn FarmFacts>, FarmLive), String> {
    let mut members = Vec::new();
    let mut live = Vec::new();
    let mut figures = Vec::new();
    for m in &f.members {
        let state = match m.state.as_str() {
            "active" => MemberStateView::Active,
            "out-of-service" => MemberStateView::OutOfService,
            "draining" => MemberStateView::Draining,
            "removed" => MemberStateView::Removed,
            "unable-to-verify" => MemberStateView::UnableToVerify,
            other => return Err(format!("member {}: unknown state \"{other}\"", m.name)),
        };
        members.push(MemberInfo {
            name: m.name.clone(),
            weight: m.weight,
        });
        live.push(MemberLive {
            state,
            in_flight: m.in_flight,
        });
        figures.push(MemberFigures {
            latency_ewma_us: m.latency_ewma_us,
            requests: m.requests,
            failures: m.failures,
            bytes: m.bytes,
        });
    }
    let farm = ToolFarm {
        table: FarmTable {
            name: f.name.clone(),
            members,
        },
        figures,
    };
    let live = FarmLive {
        table: 1,
        members: live,
        sticky_member: f.sticky_member,
        sequence: f.sequence,
    };
    Ok((Arc::new(farm), live))
}

/// The test input's request as the runtime hands requests over.
fn request_facts(r: &TestRequest) -> Result<Arc<RequestFacts>, String> {
    let method = http::Method::from_bytes(r.method.as_bytes())
        .map_err(|_| format!("request.method: \"{}\" is not an HTTP method", r.method))?;
    let target = match &r.query {
        Some(q) => format!("{}?{q}", r.path),
        None => r.path.clone(),
    };
    let uri = target
        .parse::<http::Uri>()
        .map_err(|e| format!("request.path: \"{target}\" is not a request target: {e}"))?;
    let client_addr = r.client_addr.parse().map_err(|_| {
        format!(
            "request.client_addr: \"{}\" is not an IP address",
            r.client_addr
        )
    })?;
    Ok(Arc::new(RequestFacts {
        method,
        scheme: if r.scheme == "https" { "https" } else { "http" },
        host: header_value(&r.host)?,
        uri,
        headers: header_map(&r.headers)?,
        client_addr,
        listener: Arc::from(r.listener.as_str()),
        rule: Arc::from(r.rule.as_str()),
    }))
}

fn header_value(v: &str) -> Result<http::HeaderValue, String> {
    http::HeaderValue::from_str(v).map_err(|_| format!("\"{v}\" is not a valid header value"))
}

fn header_map(headers: &[(String, String)]) -> Result<http::HeaderMap, String> {
    let mut map = http::HeaderMap::new();
    for (n, v) in headers {
        let name = http::HeaderName::from_bytes(n.as_bytes())
            .map_err(|_| format!("\"{n}\" is not a valid header name"))?;
        map.append(name, header_value(v)?);
    }
    Ok(map)
}
