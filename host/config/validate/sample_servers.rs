//! `[[sample_servers]]`: the demo members farmgate can start itself. Their addresses must not be
//! a listener's or another sample server's.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;

use super::Validator;
use crate::config::parse::parse_socket_addr;
use crate::config::{ConfigError, ListenerConfig, SampleServerConfig, raw};

/// The fixed addresses the listeners take (port 0 takes none), each with what takes it.
pub(super) fn listener_binds(listeners: &[ListenerConfig]) -> BTreeMap<SocketAddr, String> {
    let mut binds = BTreeMap::new();
    for l in listeners {
        if l.bind.port() != 0 {
            binds.insert(l.bind, format!("listener \"{}\"", l.name));
        }
    }
    binds
}

impl Validator<'_> {
    /// The sample servers; each fixed address they take is added to `binds`.
    pub(super) fn sample_servers(
        &self,
        raw: &[raw::RawSampleServer],
        binds: &mut BTreeMap<SocketAddr, String>,
    ) -> Result<Vec<SampleServerConfig>, ConfigError> {
        let src = self.source;
        let mut sample_servers = Vec::new();
        let mut sample_names = HashSet::new();
        for (i, s) in raw.iter().enumerate() {
            let key = format!("sample_servers[{i}]");
            self.check_name(
                &s.name,
                &format!("{key}.name"),
                "sample server",
                &mut sample_names,
            )?;
            let bind = parse_socket_addr(&s.bind)
                .map_err(|m| src.error(&s.bind, format!("{key}.bind"), m))?;
            if bind.port() != 0
                && let Some(other) =
                    binds.insert(bind, format!("sample server \"{}\"", s.name.get_ref()))
            {
                return Err(src.error(
                    &s.bind,
                    format!("{key}.bind"),
                    format!("{bind} is already used by {other}"),
                ));
            }
            sample_servers.push(SampleServerConfig {
                name: s.name.get_ref().clone(),
                bind,
            });
        }
        Ok(sample_servers)
    }
}
