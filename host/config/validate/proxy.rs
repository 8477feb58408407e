//! `[proxy]` and `[access_log]`: timeouts, client limits, forwarding, the affinity key, and
//! where access log lines go.

use std::time::Duration;

use toml::Spanned;

use super::Validator;
use crate::config::raw::{self, Dur};
use crate::config::{AccessLogSettings, AffinityKey, ConfigError, IpNet, ProxySettings, defaults};

impl Validator<'_> {
    pub(super) fn proxy(&self, p: raw::RawProxy) -> Result<ProxySettings, ConfigError> {
        let dur = |d: Option<Dur>, default: Duration| d.map(|d| d.0).unwrap_or(default);
        let via = self.via(&p.via)?;
        let header_read_timeout = self.positive_duration(
            &p.header_read_timeout,
            "proxy.header_read_timeout",
            defaults::HEADER_READ_TIMEOUT,
        )?;
        let max_header_bytes = self.at_least(
            &p.max_header_bytes,
            "proxy.max_header_bytes",
            8192,
            defaults::MAX_HEADER_BYTES,
        )?;
        let max_headers = self.at_least(
            &p.max_headers,
            "proxy.max_headers",
            1,
            defaults::MAX_HEADERS,
        )?;
        let max_connections = self.at_least(
            &p.max_connections,
            "proxy.max_connections",
            1,
            defaults::MAX_CONNECTIONS,
        )?;
        let trusted_proxies = self.trusted_proxies(&p.trusted_proxies)?;
        let affinity_key = self.affinity_key(p.affinity_key, p.affinity_key_env)?;
        let tls_handshake_timeout = self.positive_duration(
            &p.tls_handshake_timeout,
            "proxy.tls_handshake_timeout",
            defaults::TLS_HANDSHAKE_TIMEOUT,
        )?;
        let upgrade_idle_timeout = self.positive_duration(
            &p.upgrade_idle_timeout,
            "proxy.upgrade_idle_timeout",
            defaults::UPGRADE_IDLE_TIMEOUT,
        )?;
        let client_idle_timeout = self.positive_duration(
            &p.client_idle_timeout,
            "proxy.client_idle_timeout",
            defaults::CLIENT_IDLE_TIMEOUT,
        )?;
        Ok(ProxySettings {
            connect_timeout: dur(p.connect_timeout, defaults::CONNECT_TIMEOUT),
            response_timeout: dur(p.response_timeout, defaults::RESPONSE_TIMEOUT),
            pool_idle_timeout: dur(p.pool_idle_timeout, defaults::POOL_IDLE_TIMEOUT),
            pool_max_idle_per_peer: p
                .pool_max_idle_per_peer
                .unwrap_or(defaults::POOL_MAX_IDLE_PER_PEER),
            resolve_interval: dur(p.resolve_interval, defaults::RESOLVE_INTERVAL),
            shutdown_grace: dur(p.shutdown_grace, defaults::SHUTDOWN_GRACE),
            retry_after: dur(p.retry_after, defaults::RETRY_AFTER),
            connect_retries: p.connect_retries.unwrap_or(defaults::CONNECT_RETRIES),
            via,
            worker_threads: p.worker_threads.unwrap_or(defaults::WORKER_THREADS),
            header_read_timeout,
            max_header_bytes,
            max_headers,
            max_connections,
            trusted_proxies,
            affinity_key,
            tls_handshake_timeout,
            upgrade_idle_timeout,
            client_idle_timeout,
        })
    }

    /// The pseudonym farmgate adds to `Via`.
    fn via(&self, via: &Option<Spanned<String>>) -> Result<String, ConfigError> {
        match via {
            Some(v) => {
                let s = v.get_ref().trim();
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(self.source.error(
                        v,
                        "proxy.via",
                        "must be one token of visible ASCII characters",
                    ));
                }
                Ok(s.to_string())
            }
            None => Ok(defaults::VIA_PSEUDONYM.to_string()),
        }
    }

    fn trusted_proxies(
        &self,
        list: &Option<Vec<Spanned<String>>>,
    ) -> Result<Vec<IpNet>, ConfigError> {
        let mut nets = Vec::new();
        for n in list.iter().flatten() {
            nets.push(
                IpNet::parse(n.get_ref())
                    .map_err(|m| self.source.error(n, "proxy.trusted_proxies", m))?,
            );
        }
        Ok(nets)
    }

    fn affinity_key(
        &self,
        inline: Option<Spanned<String>>,
        env: Option<Spanned<String>>,
    ) -> Result<AffinityKey, ConfigError> {
        let var = env
            .as_ref()
            .map(|e| e.get_ref().clone())
            .unwrap_or_else(|| defaults::AFFINITY_KEY_ENV.to_string());
        if let Ok(v) = std::env::var(&var)
            && !v.is_empty()
        {
            return Ok(AffinityKey {
                bytes: v.into_bytes(),
                source: format!("env {var}"),
            });
        }
        match inline {
            Some(k) if k.get_ref().len() < 16 => Err(self.source.error(
                &k,
                "proxy.affinity_key",
                "is too short to sign cookies with; use at least 16 characters (32 random ones are better)",
            )),
            Some(k) => Ok(AffinityKey {
                bytes: k.get_ref().clone().into_bytes(),
                source: "config".into(),
            }),
            None => Ok(AffinityKey::random()),
        }
    }
}

/// `[access_log]`: nothing in it can be wrong that serde has not refused already.
pub(super) fn access_log(raw: raw::RawAccessLog) -> AccessLogSettings {
    AccessLogSettings {
        format: raw.format.unwrap_or(defaults::ACCESS_LOG_FORMAT),
        path: raw.path.filter(|p| p != "-"),
    }
}
