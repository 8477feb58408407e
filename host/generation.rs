//! What a request is served with: the [`Generation`] (everything built from one config, swapped
//! whole on reload) and the [`ConnInfo`] of the client connection it arrived on.
//!
//! A request loads the current generation once and uses it to the end, so a reload never changes
//! the rules under a request in flight. Building a generation does no I/O and calls no plugin.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::HeaderValue;

use crate::bridge::FarmUpstream;
use crate::config::Config;
use crate::farm::Farm;
use crate::headers;
use crate::plugins::ChainSlot;
use crate::routing::RouteTable;
use crate::translate::MatcherCache;

/// Everything built from one config: immutable, swapped whole on reload.
pub struct Generation {
    pub config: Arc<Config>,
    pub routes: RouteTable,
    pub farms: Vec<Arc<Farm>>,
    /// Per rule, the Host value sent to members when it is fixed (the internal site name).
    pub rule_hosts: Vec<Option<HeaderValue>>,
    /// This proxy's `Via` entries.
    pub via: headers::Via,
    /// Per rule, whether the built-in plugins have anything to do for it: URL rewrite rules for
    /// the router, something to map for link translation. Where they have not, they are not
    /// asked (they would pass), which saves a plugin call per request.
    pub builtin_router: Vec<bool>,
    pub builtin_links: Vec<bool>,
    /// Per farm, how its members are reached (HTTP or HTTPS, HTTP/2, the TLS identity).
    pub upstreams: Vec<FarmUpstream>,
    /// Per rule, its `Strict-Transport-Security` value for HTTPS responses.
    pub hsts: Vec<Option<HeaderValue>>,
    /// Link-translation searchers built so far, by mapping set (a reload starts afresh).
    pub matchers: MatcherCache,
    /// Per rule, its name and its internal site name (empty when none) as plugins are handed
    /// them: shared, not copied per request.
    pub rule_names: Vec<Arc<str>>,
    pub internal_names: Vec<Arc<str>>,
    /// The plugin chains of each rule and farm, kept between changes of the plugin set.
    pub chains: Chains,
}

/// Where a generation keeps its plugin chains: per rule its router and link-translation chains,
/// per farm its affinity chain.
pub struct Chains {
    pub router: Vec<ChainSlot>,
    pub links: Vec<ChainSlot>,
    pub affinity: Vec<ChainSlot>,
}

impl Chains {
    fn new(config: &Config) -> Chains {
        let slots = |n: usize| (0..n).map(|_| ChainSlot::default()).collect();
        Chains {
            router: slots(config.rules.len()),
            links: slots(config.rules.len()),
            affinity: slots(config.farms.len()),
        }
    }
}

impl Generation {
    pub fn new(config: Arc<Config>) -> Generation {
        Generation::carrying(config, None)
    }

    /// The index of the listener named `name` in this generation's config; `None` for a
    /// listener a reload removed while its connections finish.
    pub fn listener(&self, name: &str) -> Option<usize> {
        self.config.listeners.iter().position(|l| l.name == name)
    }

    /// The generation of `config`, carrying over from `previous` the members that persist
    /// (see [`Farm::carrying`]).
    pub fn carrying(config: Arc<Config>, previous: Option<&Generation>) -> Generation {
        let routes = RouteTable::new(&config);
        let farms = config
            .farms
            .iter()
            .map(|f| {
                let before = previous.and_then(|p| {
                    let i = p.config.farms.iter().position(|o| o.name == f.name)?;
                    Some((p.farms[i].as_ref(), &p.config.farms[i]))
                });
                let farm = Farm::carrying(f, &config.proxy.affinity_key.bytes, before);
                farm.update_panic();
                Arc::new(farm)
            })
            .collect();
        let rule_hosts = config
            .rules
            .iter()
            .map(|r| {
                r.internal_site_name
                    .as_deref()
                    .and_then(|n| HeaderValue::from_str(n).ok())
            })
            .collect();
        let via = headers::Via::new(&config.proxy.via);
        let builtin_router = config
            .rules
            .iter()
            .map(|r| !r.rewrites.is_empty())
            .collect();
        let builtin_links = config
            .rules
            .iter()
            .map(|r| {
                r.links.enabled && (r.internal_site_name.is_some() || !r.links.mappings.is_empty())
            })
            .collect();
        let upstreams = config
            .farms
            .iter()
            .map(|f| FarmUpstream::new(&f.upstream))
            .collect();
        let hsts = config
            .rules
            .iter()
            .map(|r| crate::https::hsts_value(&r.https))
            .collect();
        let rule_names = config
            .rules
            .iter()
            .map(|r| Arc::from(r.name.as_str()))
            .collect();
        let internal_names = config
            .rules
            .iter()
            .map(|r| Arc::from(r.internal_site_name.as_deref().unwrap_or("")))
            .collect();
        let chains = Chains::new(&config);
        Generation {
            config,
            routes,
            farms,
            rule_hosts,
            via,
            builtin_router,
            builtin_links,
            upstreams,
            hsts,
            matchers: MatcherCache::default(),
            rule_names,
            internal_names,
            chains,
        }
    }
}

/// Facts about the client connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The listener's name (a reload may renumber listeners; connections outlive that).
    pub listener: Arc<str>,
    pub client: SocketAddr,
    /// The client address formatted for the forwarding headers.
    pub client_addr: headers::ClientAddr,
    /// `http` or `https`.
    pub proto: &'static str,
    /// Tells the connection's framing checks how each request was answered and when its
    /// response has gone out.
    pub framing: Arc<crate::framing::Shared>,
}
