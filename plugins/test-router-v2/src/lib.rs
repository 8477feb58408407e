//! Sends `/v2/...` to the farm named by the `farm` setting (default `v2`), stripping the prefix
//! when `strip` is true; everything else passes. With `farm_from_env = "VAR"` the farm name comes
//! from that environment variable instead, and the plugin passes when the variable is absent
//! (plugins see no environment unless farmgate's config grants it).

use farmgate_sdk::{ForwardTo, Plugin, Request, RouteDecision, Router, Settings, export_plugin};

pub struct RouterV2 {
    farm: Option<String>,
    strip: bool,
}

impl Plugin for RouterV2 {
    fn new(settings: &Settings) -> Result<Self, String> {
        let farm = match settings.get::<String>("farm_from_env")? {
            Some(var) => std::env::var(var).ok(),
            None => Some(settings.get_or("farm", "v2".to_string())?),
        };
        Ok(RouterV2 {
            farm,
            strip: settings.get_or("strip", false)?,
        })
    }
}

impl Router for RouterV2 {
    fn route(&self, req: &Request) -> RouteDecision {
        let Some(farm) = &self.farm else {
            return RouteDecision::Pass;
        };
        let Some(rest) = req.path().strip_prefix("/v2") else {
            return RouteDecision::Pass;
        };
        if !(rest.is_empty() || rest.starts_with('/')) {
            return RouteDecision::Pass;
        }
        let path = if self.strip {
            let p = if rest.is_empty() { "/" } else { rest };
            Some(match req.query() {
                Some(q) => format!("{p}?{q}"),
                None => p.to_string(),
            })
        } else {
            None
        };
        RouteDecision::Forward(ForwardTo {
            farm: Some(farm.clone()),
            path,
            set_headers: vec![("x-routed-by".into(), "test-router-v2".into())],
            ..ForwardTo::unchanged()
        })
    }
}

export_plugin!(RouterV2);

#[cfg(test)]
mod tests {
    use super::*;
    use farmgate_sdk::testing;

    #[test]
    fn routes_only_the_v2_subtree() {
        let p = RouterV2::new(&testing::settings(r#"{"farm": "api2", "strip": true}"#)).unwrap();
        let RouteDecision::Forward(f) =
            p.route(&testing::request("GET", "/v2/orders?id=1").build())
        else {
            panic!("expected a forward");
        };
        assert_eq!(f.farm.as_deref(), Some("api2"));
        assert_eq!(f.path.as_deref(), Some("/orders?id=1"));
        assert_eq!(
            p.route(&testing::request("GET", "/v20").build()),
            RouteDecision::Pass
        );
        assert_eq!(
            p.route(&testing::request("GET", "/").build()),
            RouteDecision::Pass
        );
    }
}
