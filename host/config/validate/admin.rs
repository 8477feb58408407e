//! `[admin]`: the admin listener's address and bearer token. A listener reachable from other
//! hosts needs a token.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::Validator;
use crate::config::parse::parse_socket_addr;
use crate::config::{AdminSettings, ConfigError, defaults, raw};

impl Validator<'_> {
    /// `binds`: the fixed addresses listeners and sample servers take.
    pub(super) fn admin(
        &self,
        raw: raw::RawAdmin,
        binds: &BTreeMap<SocketAddr, String>,
    ) -> Result<AdminSettings, ConfigError> {
        let src = self.source;
        let Some(b) = raw.bind.filter(|b| !b.get_ref().trim().is_empty()) else {
            return Ok(AdminSettings::default());
        };
        let bind = parse_socket_addr(&b).map_err(|m| src.error(&b, "admin.bind", m))?;
        if bind.port() != 0
            && let Some(other) = binds.get(&bind)
        {
            return Err(src.error(
                &b,
                "admin.bind",
                format!("{bind} is already used by {other}"),
            ));
        }
        let var = raw
            .token_env
            .as_ref()
            .map(|e| e.get_ref().clone())
            .unwrap_or_else(|| defaults::ADMIN_TOKEN_ENV.to_string());
        let token = match std::env::var(&var) {
            Ok(v) if !v.is_empty() => Some(v),
            _ => match &raw.token {
                Some(t) if t.get_ref().len() < 16 => {
                    return Err(src.error(
                        t,
                        "admin.token",
                        "is too short; use at least 16 characters",
                    ));
                }
                t => t.as_ref().map(|t| t.get_ref().clone()),
            },
        };
        if token.is_none() && !bind.ip().is_loopback() {
            return Err(src.error(
                &b,
                "admin.bind",
                format!(
                    "the admin listener on {bind} is reachable from other hosts, so it needs a bearer token: set {var} (or admin.token)"
                ),
            ));
        }
        Ok(AdminSettings {
            bind: Some(bind),
            token,
        })
    }
}
