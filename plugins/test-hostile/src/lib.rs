//! Misbehaves on purpose, to prove the host survives it. The router's behaviour is the `mode`
//! setting: `loop` never returns, `panic` panics, `alloc` allocates until memory runs out,
//! `chatty` writes 100 warnings and passes, `ok` passes. The affinity hook always names a member
//! that does not exist.

use farmgate_sdk::{
    Affinity, AffinityDecision, Farm, Plugin, Request, RouteDecision, Router, Settings,
    export_plugin,
};

pub struct Hostile {
    mode: String,
}

impl Plugin for Hostile {
    fn new(settings: &Settings) -> Result<Self, String> {
        Ok(Hostile {
            mode: settings.get_or("mode", "loop".to_string())?,
        })
    }
}

impl Router for Hostile {
    fn route(&self, req: &Request) -> RouteDecision {
        match self.mode.as_str() {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(req.path().len() as u64));
                }
            }
            "panic" => panic!("hostile plugin panics on {}", req.path()),
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "chatty" => {
                for i in 0..100 {
                    farmgate_sdk::log::warn(&format!("chatty line {i} for {}", req.path()));
                }
                RouteDecision::Pass
            }
            _ => RouteDecision::Pass,
        }
    }
}

impl Affinity for Hostile {
    fn choose(&self, _req: &Request, _farm: &Farm) -> AffinityDecision {
        AffinityDecision::member(9999)
    }
}

export_plugin!(Hostile);

#[cfg(test)]
mod tests {
    use super::*;
    use farmgate_sdk::testing;

    #[test]
    fn ok_mode_passes_and_affinity_is_out_of_range() {
        let p = Hostile::new(&testing::settings(r#"{"mode": "ok"}"#)).unwrap();
        let req = testing::request("GET", "/").build();
        assert_eq!(p.route(&req), RouteDecision::Pass);
        assert_eq!(
            p.choose(&req, &testing::farm("f", 2).build()),
            AffinityDecision::member(9999)
        );
    }

    #[test]
    #[should_panic(expected = "hostile plugin panics")]
    fn panic_mode_panics() {
        let p = Hostile::new(&testing::settings(r#"{"mode": "panic"}"#)).unwrap();
        p.route(&testing::request("GET", "/x").build());
    }
}
