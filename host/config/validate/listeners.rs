//! `[[listeners]]`: names, bind addresses, HTTP/2, and the certificates of TLS listeners. Each
//! certificate/key pair is loaded once here, so a missing file or a key that does not belong to
//! its certificate is an error with the file, line and key, from `farmgate check` too.

use std::collections::HashSet;

use super::Validator;
use crate::config::parse::parse_socket_addr;
use crate::config::{CertificateConfig, ConfigError, ListenerConfig, defaults, raw};
use crate::names::HostPattern;
use crate::pem::{PairFile, load_pair};

impl Validator<'_> {
    pub(super) fn listeners(
        &self,
        raw: &[raw::RawListener],
    ) -> Result<Vec<ListenerConfig>, ConfigError> {
        let mut listeners = Vec::new();
        let mut listener_names = HashSet::new();
        for (i, l) in raw.iter().enumerate() {
            let key = format!("listeners[{i}]");
            self.check_name(
                &l.name,
                &format!("{key}.name"),
                "listener",
                &mut listener_names,
            )?;
            let bind = parse_socket_addr(&l.bind)
                .map_err(|m| self.source.error(&l.bind, format!("{key}.bind"), m))?;
            listeners.push(ListenerConfig {
                name: l.name.get_ref().clone(),
                bind,
                http2: l.http2.unwrap_or(defaults::LISTENER_HTTP2),
                certificates: self.listener_certificates(l, &key)?,
            });
        }
        Ok(listeners)
    }

    /// The certificates of a listener; each pair is loaded once to check it.
    fn listener_certificates(
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
}
