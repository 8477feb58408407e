//! `[[farms]]`: members, the balancing algorithm and hash key, client affinity, plugin bindings,
//! and how farmgate talks to the members (scheme, HTTP/2, certificate verification, the CA
//! bundle, read here once). A farm's `[farms.health]` is in `health.rs`.

use std::collections::HashSet;
use std::sync::Arc;

use super::Validator;
use crate::config::parse::is_token;
use crate::config::{
    CaBundle, ConfigError, FarmConfig, MemberConfig, TlsVerify, UpstreamSettings, defaults, raw,
};
use crate::names::is_host_name_or_ip;
use crate::pem::load_ca_file;

/// The balancing algorithms a farm may name.
pub const BALANCE_ALGORITHMS: &[&str] = &[
    "least-current-request",
    "round-robin",
    "weighted-total-traffic",
    "least-response-time",
    "random",
    "power-of-two-choices",
    "hash",
];

/// The affinity modes a farm may name.
pub const AFFINITY_MODES: &[&str] = &["none", "cookie", "client-ip"];

impl Validator<'_> {
    pub(super) fn farms(&self, raw: &[raw::RawFarm]) -> Result<Vec<FarmConfig>, ConfigError> {
        let mut farms = Vec::new();
        let mut farm_names = HashSet::new();
        for (i, f) in raw.iter().enumerate() {
            let key = format!("farms[{i}]");
            self.check_name(&f.name, &format!("{key}.name"), "farm", &mut farm_names)?;
            farms.push(self.farm(f, &key)?);
        }
        Ok(farms)
    }

    fn farm(&self, f: &raw::RawFarm, key: &str) -> Result<FarmConfig, ConfigError> {
        if f.members.get_ref().is_empty() {
            return Err(self.source.error(
                &f.members,
                format!("{key}.members"),
                "a farm needs at least one member",
            ));
        }
        let upstream = self.farm_upstream(f, key)?;
        let members = self.members(f, key, &upstream)?;
        let (balance, hash_on) = self.balance(f, key)?;
        let affinity_mode = self.affinity_mode(f, key)?;
        let affinity_cookie = self.affinity_cookie(f, key)?;
        let health = self.health(&f.health, &format!("{key}.health"))?;
        Ok(FarmConfig {
            name: f.name.get_ref().clone(),
            members,
            affinity: self.binding(&f.affinity_plugins, &format!("{key}.affinity_plugins"))?,
            health_evaluation: self.binding(
                &f.health_evaluation_plugins,
                &format!("{key}.health_evaluation_plugins"),
            )?,
            balance,
            hash_on,
            affinity_mode,
            affinity_cookie,
            health,
            upstream,
        })
    }

    fn members(
        &self,
        f: &raw::RawFarm,
        key: &str,
        upstream: &UpstreamSettings,
    ) -> Result<Vec<MemberConfig>, ConfigError> {
        let src = self.source;
        let mut members = Vec::new();
        let mut member_names = HashSet::new();
        for (j, m) in f.members.get_ref().iter().enumerate() {
            let mkey = format!("{key}.members[{j}]");
            let host = m.host.get_ref().trim().to_ascii_lowercase();
            if !is_host_name_or_ip(&host) {
                return Err(src.error(
                    &m.host,
                    format!("{mkey}.host"),
                    format!(
                        "\"{}\" is neither a host name nor an IP address",
                        m.host.get_ref()
                    ),
                ));
            }
            let port = m.port.unwrap_or(if upstream.https {
                defaults::MEMBER_PORT_HTTPS
            } else {
                defaults::MEMBER_PORT_HTTP
            });
            let name = match &m.name {
                Some(n) => n.get_ref().clone(),
                None => format!("{host}:{port}"),
            };
            if !member_names.insert(name.clone()) {
                let at = m.name.as_ref().map(|n| n.span()).unwrap_or(m.host.span());
                return Err(src.error_at(
                    at.start,
                    mkey,
                    format!(
                        "member \"{name}\" appears twice in farm \"{}\"",
                        f.name.get_ref()
                    ),
                ));
            }
            let weight = match &m.weight {
                Some(w) if *w.get_ref() == 0 => {
                    return Err(src.error(
                        w,
                        format!("{mkey}.weight"),
                        "weight must be at least 1",
                    ));
                }
                Some(w) => *w.get_ref(),
                None => defaults::MEMBER_WEIGHT,
            };
            members.push(MemberConfig {
                name,
                host,
                port,
                weight,
            });
        }
        Ok(members)
    }

    /// `balance` and `hash_on` of a farm.
    fn balance(
        &self,
        f: &raw::RawFarm,
        key: &str,
    ) -> Result<(Option<String>, Option<String>), ConfigError> {
        let src = self.source;
        let balance = match &f.balance {
            None => None,
            Some(b) => {
                let v = b.get_ref().trim().to_ascii_lowercase();
                if !BALANCE_ALGORITHMS.contains(&v.as_str()) {
                    return Err(src.error(
                        b,
                        format!("{key}.balance"),
                        format!(
                            "\"{}\" is not a balancing algorithm; use one of {}",
                            b.get_ref(),
                            BALANCE_ALGORITHMS.join(", ")
                        ),
                    ));
                }
                Some(v)
            }
        };
        let hash_on = self.hash_on(f, balance.as_deref(), key)?;
        Ok((balance, hash_on))
    }

    fn hash_on(
        &self,
        f: &raw::RawFarm,
        balance: Option<&str>,
        key: &str,
    ) -> Result<Option<String>, ConfigError> {
        let src = self.source;
        match (&f.hash_on, balance) {
            (None, Some("hash")) => {
                let b = f
                    .balance
                    .as_ref()
                    .map(|b| b.span())
                    .unwrap_or(f.name.span());
                Err(src.error_at(
                    b.start,
                    format!("{key}.hash_on"),
                    "balance = \"hash\" needs hash_on: url, query-string, client-address, header:NAME or cookie:NAME",
                ))
            }
            (None, _) => Ok(None),
            (Some(h), Some("hash")) => {
                let v = h.get_ref().trim();
                let ok = match v.split_once(':') {
                    Some((kind, name)) => {
                        matches!(kind, "header" | "cookie") && is_token(name.trim())
                    }
                    None => matches!(v, "url" | "query-string" | "client-address"),
                };
                if !ok {
                    return Err(src.error(
                        h,
                        format!("{key}.hash_on"),
                        format!(
                            "\"{v}\" is not a hash key; use url, query-string, client-address, header:NAME or cookie:NAME"
                        ),
                    ));
                }
                Ok(Some(match v.split_once(':') {
                    Some((kind, name)) => format!("{kind}:{}", name.trim()),
                    None => v.to_string(),
                }))
            }
            (Some(h), _) => Err(src.error(
                h,
                format!("{key}.hash_on"),
                "applies only with balance = \"hash\"",
            )),
        }
    }

    fn affinity_mode(&self, f: &raw::RawFarm, key: &str) -> Result<String, ConfigError> {
        match &f.affinity {
            None => Ok(defaults::AFFINITY.to_string()),
            Some(a) => {
                let v = a.get_ref().trim().to_ascii_lowercase();
                if !AFFINITY_MODES.contains(&v.as_str()) {
                    return Err(self.source.error(
                        a,
                        format!("{key}.affinity"),
                        format!(
                            "\"{}\" is not an affinity; use one of {}",
                            a.get_ref(),
                            AFFINITY_MODES.join(", ")
                        ),
                    ));
                }
                Ok(v)
            }
        }
    }

    fn affinity_cookie(&self, f: &raw::RawFarm, key: &str) -> Result<String, ConfigError> {
        match &f.affinity_cookie {
            None => Ok(defaults::AFFINITY_COOKIE.to_string()),
            Some(c) => {
                if !is_token(c.get_ref()) {
                    return Err(self.source.error(
                        c,
                        format!("{key}.affinity_cookie"),
                        "a cookie name is one token: letters, digits and !#$%&'*+-.^_`|~",
                    ));
                }
                Ok(c.get_ref().clone())
            }
        }
    }

    /// How farmgate talks to the farm's members: scheme, HTTP/2, what member certificates are
    /// checked against, and the CA bundle (read here once).
    fn farm_upstream(&self, f: &raw::RawFarm, key: &str) -> Result<UpstreamSettings, ConfigError> {
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
}

fn parse_verify(s: &str) -> Option<TlsVerify> {
    match s.trim().to_ascii_lowercase().as_str() {
        "member-name" => Some(TlsVerify::MemberName),
        "internal-site-name" => Some(TlsVerify::InternalSiteName),
        "none" => Some(TlsVerify::None),
        _ => None,
    }
}
