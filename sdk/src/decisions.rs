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

    /// This forward with the path (and query) the member gets; `path_and_query` includes the
    /// query, as [`Request::path_and_query`](crate::Request::path_and_query) and
    /// [`Request::replace_prefix`](crate::Request::replace_prefix) give it. Only a forward
    /// has a path: any other decision is returned as it is.
    pub fn with_path(self, path_and_query: impl Into<String>) -> RouteDecision {
        self.forwarding(|f| f.path = Some(path_and_query.into()))
    }

    /// This forward with the Host header the member gets.
    pub fn with_host(self, host: impl Into<String>) -> RouteDecision {
        self.forwarding(|f| f.host = Some(host.into()))
    }

    /// This forward with a request header set (replacing any of the same name).
    pub fn with_header(self, name: impl Into<String>, value: impl Into<String>) -> RouteDecision {
        self.forwarding(|f| f.set_headers.push((name.into(), value.into())))
    }

    /// This forward without a request header.
    pub fn without_header(self, name: impl Into<String>) -> RouteDecision {
        self.forwarding(|f| f.remove_headers.push(name.into()))
    }

    /// Forward to the rule's own farm with changes: start here and add `with_*`.
    pub fn forward() -> RouteDecision {
        RouteDecision::Forward(ForwardTo::unchanged())
    }

    fn forwarding(mut self, change: impl FnOnce(&mut ForwardTo)) -> RouteDecision {
        if let RouteDecision::Forward(f) = &mut self {
            change(f);
        }
        self
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forward_is_built_step_by_step() {
        let d = RouteDecision::to_farm("api")
            .with_path("/orders?id=7")
            .with_host("api.internal")
            .with_header("x-version", "2")
            .without_header("x-debug");
        assert_eq!(
            d,
            RouteDecision::Forward(ForwardTo {
                farm: Some("api".into()),
                path: Some("/orders?id=7".into()),
                host: Some("api.internal".into()),
                set_headers: vec![("x-version".into(), "2".into())],
                remove_headers: vec!["x-debug".into()],
            })
        );
        assert_eq!(RouteDecision::Pass.with_path("/x"), RouteDecision::Pass);
        assert_eq!(
            RouteDecision::forward().with_path("/y"),
            RouteDecision::Forward(ForwardTo {
                path: Some("/y".into()),
                ..ForwardTo::unchanged()
            })
        );
    }
}
