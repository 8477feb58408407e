//! Choosing a member: the affinity chain (the plugins bound to a farm, then the built-in balance
//! plugin, which reads the signed affinity cookie), and the host's own least-current-request
//! choice when every plugin passed or chose a member that cannot take requests. A request tried
//! again asks the chain again, the members already tried shown as out of service, so a pinned
//! client fails over the way the affinity says (the next member in its own order), the same
//! whether or not the farm has noticed yet. A chosen member the plugin sticks the client to is
//! pinned by the affinity cookie.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::header::{self, HeaderMap};

use super::fail;
use crate::error::ProxyError;
use crate::farm::{Farm, Member, MemberState, Tried};
use crate::generation::Generation;
use crate::plugins::{AffinityDecision, Chain, FarmFacts, Hook, RequestFacts, Runtime};
use crate::views::farm_live;

/// A farm's member choice for one request.
pub struct Balancer<'a> {
    runtime: &'a Runtime,
    farm: &'a Arc<Farm>,
    plugins: Chain,
    /// The member the client's genuine affinity cookie names.
    sticky: Option<u32>,
}

/// The member a request goes to, and whether the client is to be pinned to it.
pub struct Chosen {
    pub member: Arc<Member>,
    pub index: usize,
    /// The response sets the affinity cookie naming this member (a plugin stuck the client to
    /// it, and the client's cookie names another or none).
    pub pin: bool,
}

impl<'a> Balancer<'a> {
    /// The choice for farm `farm` of a request with `headers` (read for the affinity cookie).
    pub fn for_farm(
        runtime: &'a Runtime,
        generation: &'a Generation,
        farm: usize,
        headers: &HeaderMap,
    ) -> Balancer<'a> {
        let plugins = runtime.chain_in(
            &generation.chains.affinity[farm],
            Hook::Affinity,
            &generation.config.farms[farm].affinity,
            true,
        );
        let farm = &generation.farms[farm];
        Balancer {
            runtime,
            farm,
            plugins,
            sticky: farm.sticky_member(headers),
        }
    }

    /// Whether a plugin is asked, and so needs the request's facts.
    pub fn asks_plugins(&self) -> bool {
        !self.plugins.is_empty()
    }

    /// The member for the next attempt; members in `tried` are neither offered to the plugins
    /// nor taken by the host's choice.
    pub async fn choose(
        &self,
        req: Option<&Arc<RequestFacts>>,
        tried: &Tried,
    ) -> Result<Chosen, ProxyError> {
        if let Some(req) = req {
            if let Some(chosen) = self.ask(req, tried).await? {
                return Ok(chosen);
            }
            // Counted on first attempts: the choice the affinity chain left to the host.
            if tried.is_empty() {
                self.farm.fallbacks.fetch_add(1, Ordering::Relaxed);
            }
        }
        let (index, member) =
            self.farm
                .pick_least_current(tried)
                .map_err(|reason| ProxyError::NoMember {
                    farm: self.farm.name.clone(),
                    reason,
                })?;
        Ok(Chosen {
            member,
            index,
            pin: false,
        })
    }

    /// Asks the affinity chain. `Ok(None)`: every plugin passed (or chose a member that cannot
    /// take requests now), so the host's own choice decides.
    async fn ask(
        &self,
        req: &Arc<RequestFacts>,
        tried: &Tried,
    ) -> Result<Option<Chosen>, ProxyError> {
        if self.plugins.is_empty() {
            return Ok(None);
        }
        let farm = self.farm;
        let live = farm_live(farm, self.sticky, tried);
        let facts: Arc<dyn FarmFacts> = Arc::clone(farm) as Arc<dyn FarmFacts>;
        for plugin in self.plugins.iter().filter(|p| self.runtime.enabled(p)) {
            match self.runtime.choose(plugin, req, &facts, &live).await {
                Ok(AffinityDecision::Pass) => {}
                Ok(AffinityDecision::Member(choice)) => {
                    let index = choice.id as usize;
                    let members = farm.members();
                    let Some(member) = members.get(index) else {
                        // A member added since the live state was taken cannot have been
                        // chosen; the runtime checked the id against it.
                        return Ok(None);
                    };
                    let usable = matches!(
                        farm.effective_state(member),
                        MemberState::Active | MemberState::Draining
                    ) && member.has_addrs()
                        && !tried.contains(index);
                    if usable {
                        return Ok(Some(Chosen {
                            member: Arc::clone(member),
                            index,
                            pin: choice.stick && self.sticky != Some(index as u32),
                        }));
                    }
                    tracing::debug!(plugin = %plugin.name, member = %member.name, state = member.state().as_str(), "affinity chose a member that cannot take requests; balancing instead");
                    return Ok(None);
                }
                Err(f) => fail(f)?,
            }
        }
        Ok(None)
    }
}

impl Chosen {
    /// Adds the affinity cookie naming the member to a response, when the client is pinned to
    /// it (`Secure` on HTTPS).
    pub fn pin(&self, headers: &mut HeaderMap, proto: &str) {
        if self.pin {
            let secure = usize::from(proto == "https");
            headers.append(
                header::SET_COOKIE,
                self.member.affinity.set_cookie[secure].clone(),
            );
        }
    }
}
