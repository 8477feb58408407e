//! Implements routing and affinity and always passes: the built-in behaviour decides.

use farmgate_sdk::{
    Affinity, AffinityDecision, Farm, Plugin, Request, RouteDecision, Router, Settings,
    export_plugin,
};

pub struct Pass;

impl Plugin for Pass {
    fn new(_settings: &Settings) -> Result<Self, String> {
        Ok(Pass)
    }
}

impl Router for Pass {
    fn route(&self, _req: &Request) -> RouteDecision {
        RouteDecision::Pass
    }
}

impl Affinity for Pass {
    fn choose(&self, _req: &Request, _farm: &Farm) -> AffinityDecision {
        AffinityDecision::Pass
    }
}

export_plugin!(Pass);

#[cfg(test)]
mod tests {
    use super::*;
    use farmgate_sdk::testing;

    #[test]
    fn passes() {
        let p = Pass::new(&testing::settings("{}")).unwrap();
        let req = testing::request("GET", "/").build();
        assert_eq!(p.route(&req), RouteDecision::Pass);
        assert_eq!(
            p.choose(&req, &testing::farm("f", 2).build()),
            AffinityDecision::Pass
        );
    }
}
