//! The HTTPS keys of the config: listener certificates, per-rule redirect and HSTS, and how a farm
//! talks to its members (scheme, HTTP/2, certificate verification). Certificate and CA files are
//! read here once, so a missing file, a key that does not match its certificate or a CA bundle
//! without certificates is an error with the file, line and key, from `farmgate check` too.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use toml::Spanned;

use super::{ConfigError, ListenerConfig, Validator, defaults, raw};
use crate::names::HostPattern;
use crate::pem::{PairFile, load_ca_file, load_pair};

/// One certificate of a TLS listener.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificateConfig {
    /// PEM: the end-entity certificate first, then intermediates.
    pub cert: PathBuf,
    /// PEM: the private key.
    pub key: PathBuf,
    /// SNI names this certificate answers; empty: the names the certificate itself lists.
    pub names: Vec<HostPattern>,
    /// Served when the client sends no SNI name or one no certificate answers.
    pub default: bool,
}

/// HTTPS behaviour of a publishing rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleHttps {
    /// Plain-HTTP requests get a redirect to `https://`.
    pub redirect: bool,
    /// The port in those redirects (443 is left out of the URL).
    pub port: u16,
    pub hsts: bool,
    pub hsts_max_age: Duration,
    pub hsts_include_subdomains: bool,
}

impl RuleHttps {
    /// The `Strict-Transport-Security` value, when the rule sends one.
    pub fn hsts_value(&self) -> Option<String> {
        self.hsts.then(|| {
            let mut v = format!("max-age={}", self.hsts_max_age.as_secs());
            if self.hsts_include_subdomains {
                v.push_str("; includeSubDomains");
            }
            v
        })
    }
}

/// What a member's certificate is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TlsVerify {
    /// The member's computer name or IP address (TMG's first way).
    MemberName,
    /// The publishing rule's internal site name (TMG's second way).
    InternalSiteName,
    /// Nothing: any certificate is accepted (a warning is logged at start).
    None,
}

impl TlsVerify {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVerify::MemberName => "member-name",
            TlsVerify::InternalSiteName => "internal-site-name",
            TlsVerify::None => "none",
        }
    }
}

/// The CA certificates member certificates must chain to.
#[derive(Debug, Clone)]
pub struct CaBundle {
    pub path: PathBuf,
    pub certs: Arc<Vec<CertificateDer<'static>>>,
}

/// How farmgate talks to a farm's members.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// HTTPS bridging (`scheme = "https"`), else plain HTTP.
    pub https: bool,
    pub http2: bool,
    pub verify: TlsVerify,
    /// `None`: the system's roots.
    pub ca: Option<CaBundle>,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            https: false,
            http2: defaults::FARM_HTTP2,
            verify: TlsVerify::MemberName,
            ca: None,
        }
    }
}

impl Validator<'_> {
    /// The certificates of a listener; each pair is loaded once to check it.
    pub(super) fn listener_certificates(
        &self,
        l: &raw::RawListener,
        key: &str,
    ) -> Result<Vec<CertificateConfig>, ConfigError> {
        let src = self.source;
        let base = self.config_dir();
        let mut out = Vec::new();
        let mut defaults_seen = 0;
        for (i, c) in l.certificates.iter().enumerate() {
            let ckey = format!("{key}.certificates[{i}]");
            let cert = base.join(c.cert.get_ref().trim());
            let pkey = base.join(c.key.get_ref().trim());
            if let Err(e) = load_pair(&cert, &pkey) {
                let (at, which) = match e.file {
                    PairFile::Cert => (&c.cert, "cert"),
                    PairFile::Key => (&c.key, "key"),
                };
                return Err(src.error(at, format!("{ckey}.{which}"), e.message));
            }
            let mut names = Vec::new();
            for n in c.names.iter().flatten() {
                let p = HostPattern::parse(n.get_ref()).map_err(|m| {
                    src.error(n, format!("{ckey}.names"), m.replace("public name", "name"))
                })?;
                names.push(p);
            }
            let default = c.default.as_ref().is_some_and(|d| *d.get_ref());
            if default {
                defaults_seen += 1;
                if defaults_seen > 1
                    && let Some(d) = &c.default
                {
                    return Err(src.error(
                        d,
                        format!("{ckey}.default"),
                        "only one certificate of a listener can be the default",
                    ));
                }
            }
            out.push(CertificateConfig {
                cert,
                key: pkey,
                names,
                default,
            });
        }
        Ok(out)
    }

    pub(super) fn rule_https(
        &self,
        r: &raw::RawRule,
        rule_listeners: &[usize],
        listeners: &[ListenerConfig],
        key: &str,
    ) -> Result<RuleHttps, ConfigError> {
        let port = match &r.https_port {
            Some(p) if *p.get_ref() == 0 => {
                return Err(self.source.error(
                    p,
                    format!("{key}.https_port"),
                    "must be a port number (1..=65535)",
                ));
            }
            Some(p) => *p.get_ref(),
            // The first TLS listener the rule is published on, when its port is fixed.
            None => rule_listeners
                .iter()
                .map(|&i| &listeners[i])
                .find(|l| l.is_tls() && l.bind.port() != 0)
                .map(|l| l.bind.port())
                .unwrap_or(defaults::HTTPS_PORT),
        };
        let hsts_max_age = match &r.hsts_max_age {
            Some(a) if a.get_ref().0.as_secs() == 0 && r.hsts.unwrap_or(defaults::HSTS) => {
                return Err(self.source.error(
                    a,
                    format!("{key}.hsts_max_age"),
                    "must be at least 1s (to withdraw HSTS, set hsts = false)",
                ));
            }
            Some(a) => a.get_ref().0,
            None => defaults::HSTS_MAX_AGE,
        };
        Ok(RuleHttps {
            redirect: r.redirect_to_https.unwrap_or(defaults::REDIRECT_TO_HTTPS),
            port,
            hsts: r.hsts.unwrap_or(defaults::HSTS),
            hsts_max_age,
            hsts_include_subdomains: r
                .hsts_include_subdomains
                .unwrap_or(defaults::HSTS_INCLUDE_SUBDOMAINS),
        })
    }

    pub(super) fn farm_upstream(
        &self,
        f: &raw::RawFarm,
        key: &str,
    ) -> Result<UpstreamSettings, ConfigError> {
        let src = self.source;
        let https = match &f.scheme {
            None => defaults::FARM_SCHEME == "https",
            Some(s) => match s.get_ref().trim().to_ascii_lowercase().as_str() {
                "http" => false,
                "https" => true,
                _ => {
                    return Err(src.error(
                        s,
                        format!("{key}.scheme"),
                        format!("\"{}\" is not a scheme; use http or https", s.get_ref()),
                    ));
                }
            },
        };
        let verify = match &f.tls_verify {
            None => parse_verify(defaults::TLS_VERIFY).unwrap_or(TlsVerify::MemberName),
            Some(v) => parse_verify(v.get_ref()).ok_or_else(|| {
                src.error(
                    v,
                    format!("{key}.tls_verify"),
                    format!(
                        "\"{}\" is not a verification mode; use member-name, internal-site-name or none",
                        v.get_ref()
                    ),
                )
            })?,
        };
        let ca = match &f.tls_ca_file {
            Some(p) if !p.get_ref().trim().is_empty() => {
                let path = self.config_dir().join(p.get_ref().trim());
                let certs = load_ca_file(&path)
                    .map_err(|m| src.error(p, format!("{key}.tls_ca_file"), m))?;
                Some(CaBundle {
                    path,
                    certs: Arc::new(certs),
                })
            }
            _ => None,
        };
        Ok(UpstreamSettings {
            https,
            http2: f.http2.unwrap_or(defaults::FARM_HTTP2),
            verify,
            ca,
        })
    }

    /// A farm that checks member certificates against the internal site name needs one on every
    /// rule that publishes it.
    pub(super) fn check_internal_name(
        &self,
        farm: &super::FarmConfig,
        rule: &raw::RawRule,
        has_internal_name: bool,
        key: &str,
    ) -> Result<(), ConfigError> {
        if farm.upstream.https
            && farm.upstream.verify == TlsVerify::InternalSiteName
            && !has_internal_name
        {
            return Err(self.source.error(
                &rule.farm,
                format!("{key}.farm"),
                format!(
                    "farm \"{}\" checks member certificates against the internal site name (tls_verify = \"internal-site-name\"), but this rule has no internal_site_name",
                    farm.name
                ),
            ));
        }
        Ok(())
    }

    /// The directory relative paths in the config are taken from.
    pub(super) fn config_dir(&self) -> PathBuf {
        Path::new(self.source.origin)
            .parent()
            .filter(|p| {
                self.source.origin != super::DEFAULT_CONFIG_NAME && !p.as_os_str().is_empty()
            })
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }
}

fn parse_verify(s: &str) -> Option<TlsVerify> {
    match s.trim().to_ascii_lowercase().as_str() {
        "member-name" => Some(TlsVerify::MemberName),
        "internal-site-name" => Some(TlsVerify::InternalSiteName),
        "none" => Some(TlsVerify::None),
        _ => None,
    }
}

/// `Duration` of a spanned raw duration, for the proxy keys.
pub(super) fn duration(d: &Option<Spanned<raw::Dur>>, default: Duration) -> Duration {
    d.as_ref().map(|d| d.get_ref().0).unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::super::Config;
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
