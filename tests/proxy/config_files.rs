//! Every shipped config loads; invalid configs fail naming the right line; `farmgate check`
//! exit codes.

use std::path::{Path, PathBuf};
use std::process::Command;

fn shipped_configs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    let mut dirs = vec![root.join("config"), root.join("examples")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "target") {
                    dirs.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "toml")
                && p.file_name().is_some_and(|n| n != "Cargo.toml")
            {
                found.push(p);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn every_shipped_config_loads() {
    let files = shipped_configs();
    assert!(
        files.iter().any(|f| f.ends_with("config/farmgate.toml")),
        "{files:?}"
    );
    for f in files {
        if let Err(e) = farmgate::Config::load(&f) {
            panic!("{e}");
        }
    }
}

#[test]
fn the_embedded_default_is_the_shipped_default() {
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/farmgate.toml"))
            .unwrap();
    assert_eq!(farmgate::config::DEFAULT_CONFIG, shipped);
}

/// The default config writes out every default; a default changed in code but not in the file
/// (or the reverse) fails here.
#[test]
fn the_default_config_states_the_defaults() {
    use farmgate::config::defaults as d;
    let c = farmgate::Config::embedded_default().unwrap();
    let p = &c.proxy;
    assert_eq!(p.connect_timeout, d::CONNECT_TIMEOUT);
    assert_eq!(p.response_timeout, d::RESPONSE_TIMEOUT);
    assert_eq!(p.pool_idle_timeout, d::POOL_IDLE_TIMEOUT);
    assert_eq!(p.pool_max_idle_per_peer, d::POOL_MAX_IDLE_PER_PEER);
    assert_eq!(p.resolve_interval, d::RESOLVE_INTERVAL);
    assert_eq!(p.shutdown_grace, d::SHUTDOWN_GRACE);
    assert_eq!(p.retry_after, d::RETRY_AFTER);
    assert_eq!(p.connect_retries, d::CONNECT_RETRIES);
    assert_eq!(p.via, d::VIA_PSEUDONYM);
    assert_eq!(p.worker_threads, d::WORKER_THREADS);
    assert_eq!(c.listeners[0].bind.to_string(), d::LISTEN_ADDRESS);
    assert_eq!(c.plugins.call_timeout, d::PLUGIN_CALL_TIMEOUT);
    assert_eq!(
        c.plugins.memory_limit_bytes,
        d::PLUGIN_MEMORY_LIMIT_MB as usize * 1024 * 1024
    );
    assert_eq!(
        c.plugins.failures_before_disable,
        d::PLUGIN_FAILURES_BEFORE_DISABLE
    );
    assert!(p.trusted_proxies.is_empty());
    assert_eq!(p.header_read_timeout, d::HEADER_READ_TIMEOUT);
    assert_eq!(p.client_idle_timeout, d::CLIENT_IDLE_TIMEOUT);
    assert_eq!(
        (p.max_header_bytes, p.max_headers, p.max_connections),
        (d::MAX_HEADER_BYTES, d::MAX_HEADERS, d::MAX_CONNECTIONS)
    );
    assert_eq!(c.rules[0].max_body_bytes, d::MAX_BODY_BYTES);
    let f = &c.farms[0];
    assert_eq!(f.balance, None);
    assert_eq!(f.affinity_mode, d::AFFINITY);
    assert_eq!(f.affinity_cookie, d::AFFINITY_COOKIE);
    assert_eq!(f.health.statuses, d::HEALTH_STATUSES);
    assert_eq!(f.health.content_match, None);
    assert_eq!(f.health.response_time_threshold, d::RESPONSE_TIME_THRESHOLD);
    let h = &f.health;
    assert_eq!(
        (h.interval, h.timeout),
        (d::HEALTH_INTERVAL, d::HEALTH_TIMEOUT)
    );
    assert_eq!(
        (h.down_after, h.up_after),
        (d::HEALTH_DOWN_AFTER, d::HEALTH_UP_AFTER)
    );
    assert_eq!(h.live_max_failures, d::LIVE_MAX_FAILURES);
    assert_eq!(h.live_failover_period, d::LIVE_FAILOVER_PERIOD);
    assert_eq!(
        h.live_failure_statuses,
        farmgate::config::parse_status_ranges(d::LIVE_FAILURE_STATUSES).unwrap()
    );
    assert!(matches!(
        &h.check,
        farmgate::config::Check::Http { head: false, .. }
    ));
    assert_eq!(p.tls_handshake_timeout, d::TLS_HANDSHAKE_TIMEOUT);
    assert_eq!(p.upgrade_idle_timeout, d::UPGRADE_IDLE_TIMEOUT);
    assert_eq!(c.listeners[0].http2, d::LISTENER_HTTP2);
    let u = &f.upstream;
    assert_eq!(u.https, d::FARM_SCHEME == "https");
    assert_eq!(u.http2, d::FARM_HTTP2);
    assert_eq!(u.verify.as_str(), d::TLS_VERIFY);
    assert!(u.ca.is_none());
    let r = &c.rules[0];
    assert_eq!(r.https.redirect, d::REDIRECT_TO_HTTPS);
    assert_eq!(r.https.port, d::HTTPS_PORT);
    assert_eq!(r.https.hsts, d::HSTS);
    assert_eq!(r.https.hsts_max_age, d::HSTS_MAX_AGE);
    assert_eq!(r.https.hsts_include_subdomains, d::HSTS_INCLUDE_SUBDOMAINS);
    assert_eq!(r.links.enabled, d::TRANSLATE_LINKS);
    assert_eq!(r.links.content_types, d::LINK_CONTENT_TYPES);
    assert!(r.links.mappings.is_empty() && r.rewrites.is_empty());
}

/// The access log, rule and health defaults the default config writes out, beside those above.
#[test]
fn the_default_config_states_the_access_log_rule_and_health_defaults() {
    use farmgate::config::defaults as d;
    let c = farmgate::Config::embedded_default().unwrap();
    assert_eq!(c.access_log.format, d::ACCESS_LOG_FORMAT);
    assert_eq!(c.rules[0].preserve_host, d::PRESERVE_HOST);
    let h = &c.farms[0].health;
    assert!(matches!(
        &h.check,
        farmgate::config::Check::Http { head, .. } if *head == (d::HEALTH_METHOD == "HEAD")
    ));
    assert_eq!(
        (h.min_servers, h.min_servers_percent),
        (d::MIN_SERVERS, d::MIN_SERVERS_PERCENT)
    );
}

fn check(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("farmgate.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_farmgate"))
        .args(["check", path.to_str().unwrap()])
        .env_remove(farmgate::config::defaults::ADMIN_TOKEN_ENV)
        .env_remove(farmgate::config::defaults::AFFINITY_KEY_ENV)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const VALID: &str = r#"[[listeners]]
name = "web"
bind = "127.0.0.1:8080"

[[farms]]
name = "f"
members = [{ host = "10.0.0.1" }]

[[rules]]
name = "r"
public_names = ["www.example.com"]
farm = "f"
"#;

#[test]
fn check_accepts_a_valid_config() {
    let (code, stdout, _) = check(VALID);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("rule r: www.example.com / -> farm f"),
        "{stdout}"
    );
    assert!(stdout.contains("config OK"));
}

#[test]
fn check_names_file_line_and_key_of_each_mistake() {
    let cases: [(&str, String, &str, &str); 5] = [
        (
            "unknown key",
            VALID.replace("bind = ", "bnid = "),
            ":3:",
            "unknown field `bnid`",
        ),
        (
            "bad duration",
            format!("[proxy]\nresponse_timeout = \"30\"\n{VALID}"),
            ":2:",
            "has no unit",
        ),
        (
            "dangling farm",
            VALID.replace("farm = \"f\"", "farm = \"g\""),
            ":12:",
            "rules[0].farm: no farm is named \"g\"",
        ),
        (
            "dangling listener",
            VALID.replace("farm = \"f\"", "farm = \"f\"\nlisteners = [\"tls\"]"),
            ":13:",
            "rules[0].listeners: no listener is named \"tls\"",
        ),
        (
            "duplicate name",
            format!("{VALID}\n[[rules]]\nname = \"r\"\npublic_names = [\"*\"]\nfarm = \"f\"\n"),
            ":15:",
            "rules[1].name: there are two rules named \"r\"",
        ),
    ];
    for (what, text, line, message) in cases {
        let (code, _, stderr) = check(&text);
        assert_eq!(code, 1, "{what}: {stderr}");
        assert!(
            stderr.contains(&format!("farmgate.toml{line}")),
            "{what}: {stderr}"
        );
        assert!(stderr.contains(message), "{what}: {stderr}");
    }
}

#[test]
fn check_of_a_missing_file_fails() {
    let out = Command::new(env!("CARGO_BIN_EXE_farmgate"))
        .args(["check", "/nonexistent/farmgate.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the config file"));
}
