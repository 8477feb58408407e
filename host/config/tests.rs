//! Tests of the whole pipeline: config text in, a `Config` or the `ConfigError` that names the
//! line and key out.

use std::net::IpAddr;
use std::time::Duration;

use super::*;

const MINIMAL: &str = r#"
[[listeners]]
name = "web"
bind = "127.0.0.1:0"

[[farms]]
name = "f"
members = [{ host = "127.0.0.1", port = 9 }]

[[rules]]
name = "r"
public_names = ["*"]
farm = "f"
"#;

fn err(text: &str) -> ConfigError {
    Config::parse(text, "t.toml").expect_err("config should be refused")
}

#[test]
fn minimal_config_gets_defaults() {
    let c = Config::parse(MINIMAL, "t.toml").unwrap();
    assert_eq!(c.proxy.response_timeout, defaults::RESPONSE_TIMEOUT);
    assert_eq!(c.rules[0].paths, vec!["/".to_string()]);
    assert_eq!(c.rules[0].listeners, vec![0]);
    assert_eq!(c.farms[0].members[0].name, "127.0.0.1:9");
    assert_eq!(c.farms[0].members[0].weight, 1);
}

#[test]
fn unknown_key_names_line_and_table() {
    let e = err(&MINIMAL.replace("port = 9 }]", "port = 9 }]\nbogus = 1"));
    assert_eq!(e.line, 9);
    assert_eq!(e.key, "[[farms]]");
    assert!(e.message.contains("unknown field `bogus`"), "{e}");
    assert!(e.to_string().starts_with("t.toml:9:1: [[farms]]:"), "{e}");
}

#[test]
fn bad_duration_names_the_line() {
    let e = err(&format!(
        "[proxy]\nconnect_timeout = \"10 parsecs\"\n{MINIMAL}"
    ));
    assert_eq!(e.line, 2);
    assert!(e.message.contains("invalid duration"), "{e}");
}

#[test]
fn dangling_farm_reference() {
    let e = err(&MINIMAL.replace("farm = \"f\"", "farm = \"nope\""));
    assert_eq!((e.line, e.key.as_str()), (13, "rules[0].farm"));
    assert!(e.message.contains("no farm is named \"nope\""), "{e}");
}

#[test]
fn dangling_listener_reference() {
    let e = err(&MINIMAL.replace(
        "farm = \"f\"",
        "farm = \"f\"\nlisteners = [\"web\", \"tls\"]",
    ));
    assert_eq!(e.key, "rules[0].listeners");
    assert_eq!(e.line, 14);
    assert!(e.message.contains("\"tls\""), "{e}");
}

#[test]
fn duplicate_names() {
    let twice = format!("{MINIMAL}\n[[farms]]\nname = \"f\"\nmembers = [{{ host = \"a\" }}]\n");
    let e = err(&twice);
    assert_eq!((e.line, e.key.as_str()), (16, "farms[1].name"));
    assert!(e.message.contains("two farms named \"f\""), "{e}");
}

#[test]
fn host_table_and_members() {
    let c = Config::parse(
        &format!(
            "[hosts]\n\"Web1.Local\" = \"10.0.0.1\"\n\"multi\" = [\"10.0.0.2\", \"::1\"]\n{MINIMAL}"
        ),
        "t.toml",
    )
    .unwrap();
    assert_eq!(
        c.hosts["web1.local"],
        vec!["10.0.0.1".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(c.hosts["multi"].len(), 2);
    let e = err(&format!("[hosts]\n\"web1\" = \"not-an-ip\"\n{MINIMAL}"));
    assert_eq!(e.line, 2);
    assert!(e.message.contains("not an IP address"), "{e}");
}

#[test]
fn plugin_call_timeout_is_bounded() {
    let e = err(&format!("[plugins]\ncall_timeout = \"1m\"\n{MINIMAL}"));
    assert_eq!((e.line, e.key.as_str()), (2, "plugins.call_timeout"));
    assert!(e.message.contains("between 1ms and 10s"), "{e}");
    let c = Config::parse(
        &format!("[plugins]\ncall_timeout = \"250ms\"\n{MINIMAL}"),
        "t.toml",
    )
    .unwrap();
    assert_eq!(c.plugins.call_timeout, Duration::from_millis(250));
}

#[test]
fn toml_errors_always_say_something() {
    for text in ["a = ", "#\0\n", "#\r It runs"] {
        let e = err(text);
        assert!(!e.message.trim().is_empty(), "{text:?}: {e}");
        assert!(e.line >= 1, "{text:?}: {e}");
    }
}

#[test]
fn farm_policy_keys_are_checked() {
    let farm = |extra: &str| MINIMAL.replace("port = 9 }]", &format!("port = 9 }}]\n{extra}"));
    let c = Config::parse(
        &farm("balance = \"hash\"\nhash_on = \"header: X-User\"\naffinity = \"client-ip\""),
        "t.toml",
    )
    .unwrap();
    assert_eq!(c.farms[0].balance.as_deref(), Some("hash"));
    assert_eq!(c.farms[0].hash_on.as_deref(), Some("header:X-User"));
    assert_eq!(c.farms[0].affinity_mode, "client-ip");
    let e = err(&farm("balance = \"fastest\""));
    assert_eq!((e.line, e.key.as_str()), (9, "farms[0].balance"));
    assert!(e.message.contains("round-robin"), "{e}");
    let e = err(&farm("balance = \"hash\""));
    assert_eq!(e.key, "farms[0].hash_on");
    let e = err(&farm("hash_on = \"url\""));
    assert!(e.message.contains("only with balance"), "{e}");
    let e = err(&farm("balance = \"hash\"\nhash_on = \"body\""));
    assert_eq!((e.line, e.key.as_str()), (10, "farms[0].hash_on"));
    let e = err(&farm("affinity = \"sticky\""));
    assert_eq!(e.key, "farms[0].affinity");
    let e = err(&farm("affinity_cookie = \"a b\""));
    assert_eq!(e.key, "farms[0].affinity_cookie");
    let e = err(&farm("[farms.health]\nstatuses = \"200-99\""));
    assert_eq!((e.line, e.key.as_str()), (10, "farms[0].health.statuses"));
    assert_eq!(
        parse_status_ranges("200, 301-302").unwrap(),
        [(200, 200), (301, 302)]
    );
    assert!(parse_status_ranges("600").is_err());
}

#[test]
fn rewrite_rules_are_checked() {
    let rule = |extra: &str| format!("{MINIMAL}[[rules.rewrite]]\n{extra}\n");
    let c = Config::parse(
        &rule("path = '^/old/(.*)'\naction = \"redirect\"\nurl = \"/new/{R:1}\"\nstatus = 302"),
        "t.toml",
    )
    .unwrap();
    let w = &c.rules[0].rewrites[0];
    assert_eq!((w.action.as_str(), w.status), ("redirect", Some(302)));
    assert!(w.ignore_case && w.append_query && !w.stop);
    let e = err(&rule(
        "path = '^/old/(.*'\naction = \"rewrite\"\nurl = \"/x\"",
    ));
    assert_eq!((e.line, e.key.as_str()), (15, "rules[0].rewrite[0].path"));
    assert!(e.message.starts_with("invalid regex"), "{e}");
    let e = err(&rule(
        "path = '^/(a)'\naction = \"rewrite\"\nurl = \"/{R:2}\"",
    ));
    assert_eq!(e.key, "rules[0].rewrite[0].url");
    assert!(e.message.contains("1 group(s)"), "{e}");
    let e = err(&rule("action = \"redirect\"\nurl = \"/x\"\nstatus = 200"));
    assert_eq!(e.key, "rules[0].rewrite[0].status");
    let e = err(&rule("action = \"rewrite\""));
    assert!(e.message.contains("needs a url"), "{e}");
    let e = err(&rule("action = \"rewrite\"\nurl = \"/x\"\nfarm = \"nope\""));
    assert_eq!(e.key, "rules[0].rewrite[0].farm");
    let e = err(&rule("action = \"jump\""));
    assert_eq!(e.key, "rules[0].rewrite[0].action");
}

#[test]
fn trusted_proxies_and_affinity_key() {
    let c = Config::parse(
        &format!("[proxy]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\naffinity_key = \"0123456789abcdef\"\n{MINIMAL}"),
        "t.toml",
    )
    .unwrap();
    let t = &c.proxy.trusted_proxies;
    assert!(t[0].contains("10.9.8.7".parse().unwrap()));
    assert!(!t[0].contains("11.0.0.1".parse().unwrap()));
    assert!(t[1].contains("::1".parse().unwrap()));
    assert!(t[0].contains("::ffff:10.0.0.1".parse().unwrap()));
    assert_eq!(c.proxy.affinity_key.source, "config");
    let e = err(&format!(
        "[proxy]\ntrusted_proxies = [\"10.0.0.0/33\"]\n{MINIMAL}"
    ));
    assert_eq!((e.line, e.key.as_str()), (2, "proxy.trusted_proxies"));
    let e = err(&format!("[proxy]\naffinity_key = \"short\"\n{MINIMAL}"));
    assert_eq!(e.key, "proxy.affinity_key");
    let random = Config::parse(MINIMAL, "t.toml").unwrap();
    assert_eq!(random.proxy.affinity_key.bytes.len(), 32);
}

#[test]
fn embedded_default_is_valid() {
    let c = Config::embedded_default().unwrap();
    assert_eq!(c.listeners[0].bind.to_string(), defaults::LISTEN_ADDRESS);
    assert!(!c.sample_servers.is_empty());
}

mod https {
    use super::*;

    fn config(farm_extra: &str, rule_extra: &str) -> String {
        format!(
            r#"
[[listeners]]
name = "web"
bind = "127.0.0.1:0"

[[farms]]
name = "f"
members = [{{ host = "web1.internal" }}]
{farm_extra}

[[rules]]
name = "r"
public_names = ["*"]
farm = "f"
{rule_extra}
"#
        )
    }

    fn err(text: &str) -> ConfigError {
        Config::parse(text, "t.toml").expect_err("config should be refused")
    }

    #[test]
    fn https_farms_default_to_port_443_and_member_name_checks() {
        let c = Config::parse(&config("scheme = \"https\"", ""), "t.toml").unwrap();
        let f = &c.farms[0];
        assert_eq!(f.members[0].port, 443);
        assert!(f.upstream.https && !f.upstream.http2);
        assert_eq!(f.upstream.verify, TlsVerify::MemberName);
        let c = Config::parse(&config("", ""), "t.toml").unwrap();
        assert_eq!(c.farms[0].members[0].port, 80);
        assert!(!c.farms[0].upstream.https);
    }

    #[test]
    fn farm_tls_keys_are_checked() {
        let e = err(&config("scheme = \"ftp\"", ""));
        assert_eq!((e.line, e.key.as_str()), (9, "farms[0].scheme"));
        let e = err(&config("tls_verify = \"maybe\"", ""));
        assert_eq!(e.key, "farms[0].tls_verify");
        assert!(
            e.message
                .contains("member-name, internal-site-name or none"),
            "{e}"
        );
        let e = err(&config("tls_ca_file = \"/nonexistent/ca.pem\"", ""));
        assert_eq!(e.key, "farms[0].tls_ca_file");
        assert!(e.message.contains("cannot read /nonexistent/ca.pem"), "{e}");
        // Checking against the internal site name needs one on every rule of the farm.
        let by_site = "scheme = \"https\"\ntls_verify = \"internal-site-name\"";
        let e = err(&config(by_site, ""));
        assert_eq!((e.line, e.key.as_str()), (15, "rules[0].farm"));
        assert!(e.message.contains("no internal_site_name"), "{e}");
        Config::parse(
            &config(by_site, "internal_site_name = \"intranet.test\""),
            "t.toml",
        )
        .unwrap();
    }

    #[test]
    fn rule_https_keys() {
        let c = Config::parse(
            &config(
                "",
                "redirect_to_https = true\nhsts = true\nhsts_max_age = \"1d\"\nhsts_include_subdomains = true",
            ),
            "t.toml",
        )
        .unwrap();
        let h = &c.rules[0].https;
        assert!(h.redirect);
        assert_eq!(h.port, defaults::HTTPS_PORT);
        assert_eq!(
            h.hsts_value().as_deref(),
            Some("max-age=86400; includeSubDomains")
        );
        let e = err(&config("", "hsts = true\nhsts_max_age = \"0s\""));
        assert_eq!(e.key, "rules[0].hsts_max_age");
        let e = err(&config("", "https_port = 0"));
        assert_eq!(e.key, "rules[0].https_port");
    }

    #[test]
    fn proxy_timeouts_must_be_positive() {
        let e = err(&format!(
            "[proxy]\nupgrade_idle_timeout = \"0s\"\n{}",
            config("", "")
        ));
        assert_eq!((e.line, e.key.as_str()), (2, "proxy.upgrade_idle_timeout"));
    }
}
