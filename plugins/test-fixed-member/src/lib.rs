//! Always chooses the member whose id is the `member` setting (default 0).

use farmgate_sdk::{Affinity, AffinityDecision, Farm, Plugin, Request, Settings, export_plugin};

pub struct Fixed {
    member: u32,
}

impl Plugin for Fixed {
    fn new(settings: &Settings) -> Result<Self, String> {
        Ok(Fixed {
            member: settings.get_or("member", 0)?,
        })
    }
}

impl Affinity for Fixed {
    fn choose(&self, _req: &Request, _farm: &Farm) -> AffinityDecision {
        AffinityDecision::member(self.member)
    }
}

export_plugin!(Fixed);

#[cfg(test)]
mod tests {
    use super::*;
    use farmgate_sdk::testing;

    #[test]
    fn chooses_the_configured_member() {
        let p = Fixed::new(&testing::settings(r#"{"member": 2}"#)).unwrap();
        let d = p.choose(
            &testing::request("GET", "/").build(),
            &testing::farm("f", 3).build(),
        );
        assert_eq!(d, AffinityDecision::member(2));
        assert!(Fixed::new(&testing::settings(r#"{"member": "x"}"#)).is_err());
    }
}
