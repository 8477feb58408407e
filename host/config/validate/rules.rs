//! `[[rules]]`: publishing rules. Which listeners and farm a rule names, its public names and
//! paths, the internal site name, plugin bindings, link translation, the body limit, HTTPS
//! (redirect and HSTS). A rule's `[[rules.rewrite]]` entries are in `rewrite.rs`.

use std::collections::HashSet;

use super::Validator;
use crate::config::parse::{is_token, normalize_path_prefix};
use crate::config::{
    ConfigError, FarmConfig, LinkSettings, ListenerConfig, RuleConfig, RuleHttps, TlsVerify,
    defaults, raw,
};
use crate::names::{HostPattern, is_host_name_or_ip, split_host_port};

impl Validator<'_> {
    pub(super) fn rules(
        &self,
        raw: &[raw::RawRule],
        listeners: &[ListenerConfig],
        farms: &[FarmConfig],
    ) -> Result<Vec<RuleConfig>, ConfigError> {
        let mut rules = Vec::new();
        let mut rule_names = HashSet::new();
        for (i, r) in raw.iter().enumerate() {
            let key = format!("rules[{i}]");
            self.check_name(&r.name, &format!("{key}.name"), "rule", &mut rule_names)?;
            rules.push(self.rule(r, &key, listeners, farms)?);
        }
        Ok(rules)
    }

    fn rule(
        &self,
        r: &raw::RawRule,
        key: &str,
        listeners: &[ListenerConfig],
        farms: &[FarmConfig],
    ) -> Result<RuleConfig, ConfigError> {
        let rule_listeners = self.rule_listeners(r, key, listeners)?;
        let farm = farms
            .iter()
            .position(|f| &f.name == r.farm.get_ref())
            .ok_or_else(|| {
                self.source.error(
                    &r.farm,
                    format!("{key}.farm"),
                    format!("no farm is named \"{}\"", r.farm.get_ref()),
                )
            })?;
        let public_names = self.public_names(r, key)?;
        let paths = self.paths(r, key)?;
        let internal_site_name = self.internal_site_name(r, key)?;
        self.check_internal_name(&farms[farm], r, internal_site_name.is_some(), key)?;
        let https = self.rule_https(r, &rule_listeners, listeners, key)?;
        Ok(RuleConfig {
            name: r.name.get_ref().clone(),
            listeners: rule_listeners,
            public_names,
            paths,
            farm,
            internal_site_name,
            preserve_host: r.preserve_host.unwrap_or(defaults::PRESERVE_HOST),
            upgrade_protocols: self.upgrade_protocols(r, key)?,
            router: self.binding(&r.router_plugins, &format!("{key}.router_plugins"))?,
            link_translation: self.binding(
                &r.link_translation_plugins,
                &format!("{key}.link_translation_plugins"),
            )?,
            links: self.links(r, key)?,
            max_body_bytes: r
                .max_body_bytes
                .as_ref()
                .map(|n| *n.get_ref())
                .unwrap_or(defaults::MAX_BODY_BYTES),
            rewrites: self.rewrites(r, key, farms)?,
            https,
        })
    }

    /// Indexes of the listeners a rule names; all of them when it names none.
    fn rule_listeners(
        &self,
        r: &raw::RawRule,
        key: &str,
        listeners: &[ListenerConfig],
    ) -> Result<Vec<usize>, ConfigError> {
        let Some(names) = &r.listeners else {
            return Ok((0..listeners.len()).collect());
        };
        let mut idx = Vec::new();
        for n in names {
            let Some(pos) = listeners.iter().position(|l| &l.name == n.get_ref()) else {
                return Err(self.source.error(
                    n,
                    format!("{key}.listeners"),
                    format!("no listener is named \"{}\"", n.get_ref()),
                ));
            };
            idx.push(pos);
        }
        Ok(idx)
    }

    fn public_names(&self, r: &raw::RawRule, key: &str) -> Result<Vec<HostPattern>, ConfigError> {
        if r.public_names.get_ref().is_empty() {
            return Err(self.source.error(
                &r.public_names,
                format!("{key}.public_names"),
                "list at least one public name (or \"*\" for any)",
            ));
        }
        let mut public_names = Vec::new();
        for n in r.public_names.get_ref() {
            let pattern = HostPattern::parse(n.get_ref())
                .map_err(|m| self.source.error(n, format!("{key}.public_names"), m))?;
            public_names.push(pattern);
        }
        Ok(public_names)
    }

    /// The `Upgrade` protocols the rule passes, lower-cased: tokens (a version after `/` is not
    /// part of the name), never `h2c`.
    fn upgrade_protocols(&self, r: &raw::RawRule, key: &str) -> Result<Vec<String>, ConfigError> {
        let Some(list) = &r.upgrade_protocols else {
            return Ok(defaults::UPGRADE_PROTOCOLS
                .iter()
                .map(|p| p.to_string())
                .collect());
        };
        let mut protocols: Vec<String> = Vec::new();
        for p in list {
            let name = p.get_ref().trim().to_ascii_lowercase();
            let error = |m: String| self.source.error(p, format!("{key}.upgrade_protocols"), m);
            if !is_token(&name) {
                return Err(error(format!(
                    "\"{}\" is not a protocol name (a token such as \"websocket\", no version)",
                    p.get_ref()
                )));
            }
            if name == "h2c" {
                return Err(error(
                    "\"h2c\" cannot be passed: an upgraded h2c connection would carry requests past the rules, limits and access log; clients get HTTP/2 over TLS or with prior knowledge instead".into(),
                ));
            }
            if !protocols.contains(&name) {
                protocols.push(name);
            }
        }
        Ok(protocols)
    }

    /// Normalised path prefixes; everything when the rule names none.
    fn paths(&self, r: &raw::RawRule, key: &str) -> Result<Vec<String>, ConfigError> {
        let mut paths = Vec::new();
        for p in &r.paths {
            paths.push(
                normalize_path_prefix(p.get_ref())
                    .map_err(|m| self.source.error(p, format!("{key}.paths"), m))?,
            );
        }
        if paths.is_empty() {
            paths.push(defaults::RULE_PATH.to_string());
        }
        Ok(paths)
    }

    /// The internal site name, lower-cased: a host name, a port allowed.
    fn internal_site_name(
        &self,
        r: &raw::RawRule,
        key: &str,
    ) -> Result<Option<String>, ConfigError> {
        let Some(n) = &r.internal_site_name else {
            return Ok(None);
        };
        let name = n.get_ref().trim().to_ascii_lowercase();
        let host_part = split_host_port(&name).0;
        if !is_host_name_or_ip(host_part) {
            return Err(self.source.error(
                n,
                format!("{key}.internal_site_name"),
                format!("\"{}\" is not a host name", n.get_ref()),
            ));
        }
        Ok(Some(name))
    }

    /// A farm that checks member certificates against the internal site name needs one on every
    /// rule that publishes it.
    fn check_internal_name(
        &self,
        farm: &FarmConfig,
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

    /// The rule's HTTPS behaviour: redirect of plain-HTTP requests (and the port in it), HSTS.
    fn rule_https(
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

    /// Link translation: whether it is on, the configured mappings, the media types.
    fn links(&self, r: &raw::RawRule, key: &str) -> Result<LinkSettings, ConfigError> {
        let mut mappings = Vec::new();
        for (from, to) in &r.link_mappings {
            if from.is_empty() {
                return Err(self.source.error(
                    to,
                    format!("{key}.link_mappings"),
                    "a mapping needs a non-empty text to replace",
                ));
            }
            mappings.push((from.clone(), to.get_ref().clone()));
        }
        let content_types = match &r.link_content_types {
            None => defaults::LINK_CONTENT_TYPES
                .iter()
                .map(|t| t.to_string())
                .collect(),
            Some(list) => {
                let mut types = Vec::new();
                for t in list {
                    let v = t.get_ref().trim().to_ascii_lowercase();
                    if v.split_once('/')
                        .is_none_or(|(a, b)| !is_token(a) || !is_token(b))
                    {
                        return Err(self.source.error(
                            t,
                            format!("{key}.link_content_types"),
                            format!("\"{}\" is not a media type such as text/html", t.get_ref()),
                        ));
                    }
                    types.push(v);
                }
                types
            }
        };
        Ok(LinkSettings {
            enabled: r.translate_links.unwrap_or(defaults::TRANSLATE_LINKS),
            mappings,
            content_types,
        })
    }
}
