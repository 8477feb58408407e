//! `[hosts]`: the static host table, name -> one address or several. Names are compared without
//! case; each address must be an IP literal.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use toml::Spanned;

use super::Validator;
use crate::config::ConfigError;
use crate::config::raw::HostAddresses;

impl Validator<'_> {
    pub(super) fn hosts(
        &self,
        raw: &BTreeMap<String, Spanned<HostAddresses>>,
    ) -> Result<HashMap<String, Vec<IpAddr>>, ConfigError> {
        let src = self.source;
        let mut hosts = HashMap::new();
        for (name, addrs) in raw {
            let key = format!("hosts.\"{name}\"");
            let list: Vec<&String> = match addrs.get_ref() {
                HostAddresses::One(a) => vec![a],
                HostAddresses::Many(v) => v.iter().collect(),
            };
            if list.is_empty() {
                return Err(src.error(addrs, key, "lists no address"));
            }
            let mut ips = Vec::new();
            for a in list {
                let ip: IpAddr = a.trim().parse().map_err(|_| {
                    src.error(addrs, key.clone(), format!("\"{a}\" is not an IP address"))
                })?;
                ips.push(ip);
            }
            if hosts.insert(name.to_ascii_lowercase(), ips).is_some() {
                return Err(src.error(
                    addrs,
                    key,
                    "is listed twice (host names are not case-sensitive)",
                ));
            }
        }
        Ok(hosts)
    }
}
