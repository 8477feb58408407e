//! Member name resolution: IP literals, then the static host table (TMG admins' hosts file), then
//! the system resolver.
//!
//! A name with several addresses stays one member: its addresses are kept in resolver order and a
//! new connection tries them in that order, so the first reachable one serves (and is the pool key
//! of that connection). Names resolve when a generation is built and again every
//! `proxy.resolve_interval`; when a lookup fails the last known addresses are kept and a warning
//! is logged, so a DNS outage does not empty a farm.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::farm::Farm;

/// Shared by every user (clones share the host table).
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    hosts: Arc<ArcSwap<HashMap<String, Vec<IpAddr>>>>,
}

/// Where an answer came from; names from the system resolver are the only ones that can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Literal,
    HostTable,
    System,
}

impl Resolver {
    pub fn new(hosts: HashMap<String, Vec<IpAddr>>) -> Resolver {
        Resolver {
            hosts: Arc::new(ArcSwap::from_pointee(hosts)),
        }
    }

    /// Replaces the static host table (keys lower-case); the next lookups use it.
    pub fn set_hosts(&self, hosts: HashMap<String, Vec<IpAddr>>) {
        self.hosts.store(Arc::new(hosts));
    }

    /// Answers from the literal or host table without I/O.
    pub fn resolve_static(&self, host: &str, port: u16) -> Option<(Vec<SocketAddr>, Source)> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Some((vec![SocketAddr::new(ip, port)], Source::Literal));
        }
        let key = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        self.hosts.load().get(&key).map(|ips| {
            (
                ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect(),
                Source::HostTable,
            )
        })
    }

    pub async fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> std::io::Result<(Vec<SocketAddr>, Source)> {
        if let Some(found) = self.resolve_static(host, port) {
            return Ok(found);
        }
        let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
        // getaddrinfo lists an address once per socket type on some systems.
        let mut seen = std::collections::HashSet::new();
        addrs.retain(|a| seen.insert(*a));
        if addrs.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the name has no address",
            ));
        }
        Ok((addrs, Source::System))
    }

    /// Resolves every member of `farms`, storing the answers. Returns how many names could not be
    /// resolved (each is logged).
    pub async fn resolve_farms(&self, farms: &[Arc<Farm>]) -> usize {
        let mut failed = 0;
        for farm in farms {
            for m in farm.members().iter() {
                match self.resolve(&m.host, m.port).await {
                    Ok((addrs, source)) => {
                        let old = m.addrs();
                        if *old != addrs {
                            if !old.is_empty() || addrs.len() > 1 || source == Source::System {
                                tracing::info!(farm = %farm.name, member = %m.name, ?addrs, ?source, "member address(es)");
                            }
                            m.set_addrs(addrs);
                        }
                    }
                    Err(e) => {
                        failed += 1;
                        let kept = m.addrs();
                        tracing::warn!(
                            farm = %farm.name, member = %m.name, host = %m.host, error = %e,
                            kept = ?kept, "member name does not resolve; keeping its last known addresses"
                        );
                    }
                }
            }
        }
        failed
    }

    /// Resolves every member again every `interval` until the task is dropped (literal and
    /// host-table answers cost no I/O; system names may have changed).
    pub async fn refresh_loop(self, farms: Vec<Arc<Farm>>, interval: Duration) {
        if interval.is_zero() {
            return;
        }
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.resolve_farms(&farms).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literal_table_and_system() {
        let r = Resolver::new(HashMap::from([(
            "web1.local".to_string(),
            vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()],
        )]));
        let (a, s) = r.resolve("WEB1.local.", 81).await.unwrap();
        assert_eq!(s, Source::HostTable);
        assert_eq!(
            a,
            vec![
                "10.0.0.1:81".parse().unwrap(),
                "10.0.0.2:81".parse().unwrap()
            ]
        );
        let (a, s) = r.resolve("::1", 80).await.unwrap();
        assert_eq!((a[0], s), ("[::1]:80".parse().unwrap(), Source::Literal));
        let (a, s) = r.resolve("localhost", 80).await.unwrap();
        assert_eq!(s, Source::System);
        assert!(a.iter().all(|a| a.ip().is_loopback()));
    }
}
