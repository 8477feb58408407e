//! Conveniences on the decisions plugins return.

use crate::{AffinityDecision, ForwardTo, HealthVerdict, MemberChoice, RedirectTo, RouteDecision};

impl RouteDecision {
    /// Forward to another farm, otherwise unchanged.
    pub fn to_farm(farm: &str) -> RouteDecision {
        RouteDecision::Forward(ForwardTo {
            farm: Some(farm.to_string()),
            ..ForwardTo::unchanged()
        })
    }

    /// Redirect the client (301, 302, 303, 307 or 308).
    pub fn redirect(status: u16, location: &str) -> RouteDecision {
        RouteDecision::Redirect(RedirectTo {
            status,
            location: location.to_string(),
        })
    }

    /// Answer the client directly.
    pub fn respond(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> RouteDecision {
        RouteDecision::Respond(crate::DirectResponse {
            status,
            headers: vec![("content-type".to_string(), content_type.to_string())],
            body: body.into(),
        })
    }
}

impl ForwardTo {
    /// A forward that changes nothing: start here and set what should change.
    pub fn unchanged() -> ForwardTo {
        ForwardTo {
            farm: None,
            path: None,
            host: None,
            set_headers: Vec::new(),
            remove_headers: Vec::new(),
        }
    }
}

impl AffinityDecision {
    /// Choose the member with this id.
    pub fn member(id: u32) -> AffinityDecision {
        AffinityDecision::Member(MemberChoice { id, stick: false })
    }

    /// Choose the member and pin the client to it (farmgate writes the affinity cookie).
    pub fn stick_to(id: u32) -> AffinityDecision {
        AffinityDecision::Member(MemberChoice { id, stick: true })
    }
}

impl HealthVerdict {
    pub fn unhealthy(reason: impl Into<String>) -> HealthVerdict {
        HealthVerdict::Unhealthy(reason.into())
    }
}
