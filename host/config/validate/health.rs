//! `[farms.health]`: the connectivity verifier (none, HTTP, TCP or ping), how its answers are
//! judged (ARR's explicit health test), alerts, the live traffic test and minimum servers.

use toml::Spanned;

use super::Validator;
use crate::config::parse::parse_status_ranges;
use crate::config::{Check, ConfigError, HealthSettings, defaults, raw};

impl Validator<'_> {
    pub(super) fn health(
        &self,
        h: &raw::RawHealth,
        key: &str,
    ) -> Result<HealthSettings, ConfigError> {
        let src = self.source;
        let statuses = match &h.statuses {
            None => defaults::HEALTH_STATUSES.to_string(),
            Some(s) => {
                parse_status_ranges(s.get_ref())
                    .map_err(|m| src.error(s, format!("{key}.statuses"), m))?;
                s.get_ref().trim().to_string()
            }
        };
        let response_time_threshold = self.positive_duration(
            &h.response_time_threshold,
            format!("{key}.response_time_threshold"),
            defaults::RESPONSE_TIME_THRESHOLD,
        )?;
        let interval = self.positive_duration(
            &h.interval,
            format!("{key}.interval"),
            defaults::HEALTH_INTERVAL,
        )?;
        let timeout = self.positive_duration(
            &h.timeout,
            format!("{key}.timeout"),
            defaults::HEALTH_TIMEOUT,
        )?;
        let live_failover_period = self.positive_duration(
            &h.live_failover_period,
            format!("{key}.live_failover_period"),
            defaults::LIVE_FAILOVER_PERIOD,
        )?;
        let down_after = self.at_least(
            &h.down_after,
            format!("{key}.down_after"),
            1,
            defaults::HEALTH_DOWN_AFTER,
        )?;
        let up_after = self.at_least(
            &h.up_after,
            format!("{key}.up_after"),
            1,
            defaults::HEALTH_UP_AFTER,
        )?;
        let check = self.check(h, key)?;
        let alert_webhook = self.alert_webhook(&h.alert_webhook, key)?;
        let live_failure_statuses = match &h.live_failure_statuses {
            None => parse_status_ranges(defaults::LIVE_FAILURE_STATUSES).unwrap_or_default(),
            Some(s) => parse_status_ranges(s.get_ref())
                .map_err(|m| src.error(s, format!("{key}.live_failure_statuses"), m))?,
        };
        let min_servers_percent = match &h.min_servers_percent {
            Some(p) if *p.get_ref() > 100 => {
                return Err(src.error(p, format!("{key}.min_servers_percent"), "must be 0..=100"));
            }
            p => p
                .as_ref()
                .map(|p| *p.get_ref())
                .unwrap_or(defaults::MIN_SERVERS_PERCENT),
        };
        Ok(HealthSettings {
            statuses,
            content_match: h.content_match.clone().filter(|m| !m.is_empty()),
            response_time_threshold,
            check,
            interval,
            timeout,
            down_after,
            up_after,
            alert_webhook,
            live_failure_statuses,
            live_max_failures: h.live_max_failures.unwrap_or(defaults::LIVE_MAX_FAILURES),
            live_failover_period,
            min_servers: h.min_servers.unwrap_or(defaults::MIN_SERVERS),
            min_servers_percent,
        })
    }

    /// The connectivity verifier: `check` and the keys of its kind.
    fn check(&self, h: &raw::RawHealth, key: &str) -> Result<Check, ConfigError> {
        let written = h
            .check
            .as_ref()
            .map_or(defaults::HEALTH_CHECK, |c| c.get_ref().as_str());
        // Where the check is written; the default is always a valid kind.
        let at = h.check.as_ref().map_or(0, |c| c.span().start);
        match written.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(Check::None),
            "http" => self.http_check(h, at, key),
            "tcp" => Ok(Check::Tcp { port: h.port }),
            "ping" => Ok(Check::Ping),
            _ => Err(self.source.error_at(
                at,
                format!("{key}.check"),
                format!("\"{written}\" is not a check; use none, http, tcp or ping"),
            )),
        }
    }

    /// `check = "http"`: the URL (`*` standing for the member's name), the method and the Host.
    /// `check_at`: where `check = "http"` is written.
    fn http_check(
        &self,
        h: &raw::RawHealth,
        check_at: usize,
        key: &str,
    ) -> Result<Check, ConfigError> {
        let src = self.source;
        let Some(url) = &h.url else {
            return Err(src.error_at(
                check_at,
                format!("{key}.url"),
                "check = \"http\" needs a url such as \"http://*/status.htm\"",
            ));
        };
        let text = url.get_ref().trim();
        let probe = text.replacen('*', "member.invalid", 1);
        let parsed: Result<http::Uri, _> = probe.parse();
        let ok = parsed
            .as_ref()
            .is_ok_and(|u| u.scheme_str() == Some("http") && u.authority().is_some());
        if !ok {
            return Err(src.error(
                url,
                format!("{key}.url"),
                "must be an http:// URL; `*` stands for the member's name, e.g. \"http://*/status.htm\"",
            ));
        }
        let method = h
            .method
            .as_ref()
            .map_or(defaults::HEALTH_METHOD, |m| m.get_ref().as_str());
        let head = match method.trim().to_ascii_uppercase().as_str() {
            "GET" => false,
            "HEAD" => true,
            _ => {
                // The default is always GET or HEAD.
                let at = h.method.as_ref().map_or(0, |m| m.span().start);
                return Err(src.error_at(at, format!("{key}.method"), "must be GET or HEAD"));
            }
        };
        let host_header = match &h.host_header {
            Some(v)
                if http::HeaderValue::from_str(v.get_ref()).is_err() || v.get_ref().is_empty() =>
            {
                return Err(src.error(
                    v,
                    format!("{key}.host_header"),
                    "is not a valid Host value",
                ));
            }
            v => v.as_ref().map(|v| v.get_ref().clone()),
        };
        Ok(Check::Http {
            url: text.to_string(),
            host_header,
            head,
        })
    }

    /// Where alerts are POSTed: an http:// URL.
    fn alert_webhook(
        &self,
        u: &Option<Spanned<String>>,
        key: &str,
    ) -> Result<Option<http::Uri>, ConfigError> {
        let Some(u) = u else {
            return Ok(None);
        };
        let src = self.source;
        let uri: http::Uri = u
            .get_ref()
            .trim()
            .parse()
            .map_err(|_| src.error(u, format!("{key}.alert_webhook"), "is not a URL"))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(src.error(u, format!("{key}.alert_webhook"), "must be an http:// URL"));
        }
        Ok(Some(uri))
    }
}
