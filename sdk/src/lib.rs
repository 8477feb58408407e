//! Write farmgate policy plugins in Rust.
//!
//! A plugin is an ordinary library crate built for `wasm32-wasip2`. It defines a type, creates it
//! from its settings with [`Plugin::new`], implements one or more of the hook traits
//! ([`Router`], [`Affinity`], [`LinkTranslation`], [`HealthEvaluation`]), and exports itself with
//! [`export_plugin!`]. farmgate asks it only for the hooks it implements.
//!
//! ```
//! use farmgate_sdk::{export_plugin, Plugin, Request, RouteDecision, Router, Settings};
//!
//! /// Sends `/v2/...` to the farm named by the `farm` setting.
//! pub struct V2 {
//!     farm: String,
//! }
//!
//! impl Plugin for V2 {
//!     fn new(settings: &Settings) -> Result<Self, String> {
//!         Ok(V2 { farm: settings.get_or("farm", "v2".to_string())? })
//!     }
//! }
//!
//! impl Router for V2 {
//!     fn route(&self, req: &Request) -> RouteDecision {
//!         if req.path().starts_with("/v2/") {
//!             RouteDecision::to_farm(&self.farm)
//!         } else {
//!             RouteDecision::Pass
//!         }
//!     }
//! }
//!
//! export_plugin!(V2);
//!
//! // Plugin logic tests natively with `cargo test`:
//! let plugin = V2::new(&farmgate_sdk::testing::settings(r#"{"farm": "api-v2"}"#)).unwrap();
//! let req = farmgate_sdk::testing::request("GET", "/v2/orders").build();
//! assert_eq!(plugin.route(&req), RouteDecision::to_farm("api-v2"));
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2` (or `farmgate plugin build`) and
//! drop the `.wasm` into farmgate's plugin folder (write it elsewhere, then rename it in).
//!
//! Calls are synchronous and short: each runs under a deadline (10 ms by default) and a memory
//! cap. A plugin instance serves one call at a time, so `&self` state needs no locking; use
//! `Cell`/`RefCell` for state that changes between calls.

mod decisions;
mod farm;
pub mod hash;
pub mod headers;
pub mod log;
mod request;
mod response;
mod settings;
pub mod testing;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "farmgate_sdk::bindings",
        additional_derives: [PartialEq],
    });
}

pub use bindings::exports::farmgate::plugin::affinity::{AffinityDecision, MemberChoice};
pub use bindings::exports::farmgate::plugin::health_evaluation::HealthVerdict;
pub use bindings::exports::farmgate::plugin::link_translation::{
    Mapping, Translation, TranslationDecision,
};
pub use bindings::exports::farmgate::plugin::router::{
    DirectResponse, ForwardTo, RedirectTo, RouteDecision,
};
pub use bindings::farmgate::plugin::types::{Hook, MemberState};
pub use farm::{Farm, Member};
pub use request::Request;
pub use response::{Probe, Response};
pub use settings::Settings;

/// The contract version this SDK builds plugins for, read by the build script from the
/// `package` line of `wit/farmgate.wit`.
pub const CONTRACT_VERSION: &str = env!("FARMGATE_CONTRACT_VERSION");

/// A plugin: created once per instance from its settings (the `[plugins.config.NAME]` table).
pub trait Plugin: Sized + 'static {
    /// Returns an error when the settings are unusable; farmgate then refuses to load the file
    /// and keeps the previous version.
    fn new(settings: &Settings) -> Result<Self, String>;
}

/// Decides which farm a request goes to, and how it is rewritten.
pub trait Router {
    fn route(&self, req: &Request) -> RouteDecision;
}

/// Decides which member of the farm serves a request.
pub trait Affinity {
    fn choose(&self, req: &Request, farm: &Farm) -> AffinityDecision;
}

/// Decides what to rewrite in a response so internal names do not leak.
pub trait LinkTranslation {
    fn decide(&self, resp: &Response) -> TranslationDecision;

    /// With [`TranslationDecision::Transform`]: one body chunk in, the bytes to send on out.
    /// Keep per-response state in a `RefCell`; one instance serves one response at a time.
    fn transform_push(&self, chunk: Vec<u8>) -> Vec<u8> {
        chunk
    }

    /// With [`TranslationDecision::Transform`]: the body ended; whatever is still held back.
    fn transform_finish(&self) -> Vec<u8> {
        Vec::new()
    }
}

/// Decides whether a health probe's outcome means the member is healthy.
pub trait HealthEvaluation {
    fn evaluate(&self, probe: &Probe) -> HealthVerdict;
}

/// Exports a plugin type: `export_plugin!(MyPlugin);`. The type implements [`Plugin`] and any
/// of the hook traits; hooks it does not implement answer `pass` and are not bound.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            use $crate::__private::guests;
            #[allow(unused_imports)]
            use $crate::__private::{
                AffinityNo, AffinityYes, Dispatch, HealthNo, HealthYes, LinkNo, LinkYes, RouterNo,
                RouterYes,
            };

            struct __FarmgateGuest;

            ::std::thread_local! {
                static __INSTANCE: ::std::cell::RefCell<::std::option::Option<$plugin>> =
                    const { ::std::cell::RefCell::new(::std::option::Option::None) };
            }

            fn __with<R>(otherwise: R, f: impl FnOnce(&$plugin) -> R) -> R {
                __INSTANCE.with(|cell| match cell.borrow().as_ref() {
                    ::std::option::Option::Some(p) => f(p),
                    ::std::option::Option::None => otherwise,
                })
            }

            impl guests::Lifecycle for __FarmgateGuest {
                fn init(
                    settings_json: ::std::string::String,
                ) -> ::std::result::Result<::std::vec::Vec<$crate::Hook>, ::std::string::String>
                {
                    $crate::log::route_panics_to_host_log();
                    let settings = $crate::Settings::from_json(&settings_json)?;
                    let plugin = <$plugin as $crate::Plugin>::new(&settings)?;
                    let hooks = {
                        let d = Dispatch(&plugin);
                        let mut hooks = ::std::vec::Vec::new();
                        if (&&d).__has_router() {
                            hooks.push($crate::Hook::Router);
                        }
                        if (&&d).__has_affinity() {
                            hooks.push($crate::Hook::Affinity);
                        }
                        if (&&d).__has_link_translation() {
                            hooks.push($crate::Hook::LinkTranslation);
                        }
                        if (&&d).__has_health_evaluation() {
                            hooks.push($crate::Hook::HealthEvaluation);
                        }
                        hooks
                    };
                    __INSTANCE
                        .with(|cell| *cell.borrow_mut() = ::std::option::Option::Some(plugin));
                    ::std::result::Result::Ok(hooks)
                }
            }

            impl guests::Router for __FarmgateGuest {
                fn route(req: &guests::WitRequest) -> $crate::RouteDecision {
                    __with($crate::RouteDecision::Pass, |p| {
                        (&&Dispatch(p)).__route(&$crate::Request::from_host(req))
                    })
                }
            }

            impl guests::Affinity for __FarmgateGuest {
                fn choose(
                    req: &guests::WitRequest,
                    farm: &guests::WitFarm,
                    live: guests::FarmLive,
                ) -> $crate::AffinityDecision {
                    __with($crate::AffinityDecision::Pass, |p| {
                        (&&Dispatch(p)).__choose(
                            &$crate::Request::from_host(req),
                            &$crate::Farm::from_host(farm, live),
                        )
                    })
                }
            }

            impl guests::LinkTranslation for __FarmgateGuest {
                fn decide(resp: &guests::WitResponse) -> $crate::TranslationDecision {
                    __with($crate::TranslationDecision::Pass, |p| {
                        (&&Dispatch(p)).__decide(&$crate::Response::from_host(resp))
                    })
                }
                fn transform_push(chunk: ::std::vec::Vec<u8>) -> ::std::vec::Vec<u8> {
                    __INSTANCE.with(|cell| match cell.borrow().as_ref() {
                        ::std::option::Option::Some(p) => (&&Dispatch(p)).__push(chunk),
                        ::std::option::Option::None => chunk,
                    })
                }
                fn transform_finish() -> ::std::vec::Vec<u8> {
                    __with(::std::vec::Vec::new(), |p| (&&Dispatch(p)).__finish())
                }
            }

            impl guests::HealthEvaluation for __FarmgateGuest {
                fn evaluate(probe: &guests::WitProbe) -> $crate::HealthVerdict {
                    __with($crate::HealthVerdict::Pass, |p| {
                        (&&Dispatch(p)).__evaluate(&$crate::Probe::from_host(probe))
                    })
                }
            }

            // Exported symbols only exist in the wasm build: natively (unit tests) the component's
            // export names are not valid linker symbols, and nothing calls them.
            #[cfg(target_arch = "wasm32")]
    $crate::bindings::__export_world!(__FarmgateGuest with_types_in $crate::bindings);
        };
    };
}

/// Machinery of [`export_plugin!`]: which hooks a type implements is found by autoref
/// specialisation, so plugins never list them by hand.
#[doc(hidden)]
pub mod __private {
    use super::*;

    pub mod guests {
        pub use crate::bindings::exports::farmgate::plugin::affinity::Guest as Affinity;
        pub use crate::bindings::exports::farmgate::plugin::health_evaluation::Guest as HealthEvaluation;
        pub use crate::bindings::exports::farmgate::plugin::lifecycle::Guest as Lifecycle;
        pub use crate::bindings::exports::farmgate::plugin::link_translation::Guest as LinkTranslation;
        pub use crate::bindings::exports::farmgate::plugin::router::Guest as Router;
        pub use crate::bindings::farmgate::plugin::types::{
            Farm as WitFarm, FarmLive, Probe as WitProbe, Request as WitRequest,
            Response as WitResponse,
        };
    }

    pub struct Dispatch<'a, T>(pub &'a T);

    pub trait RouterYes {
        fn __route(&self, req: &Request) -> RouteDecision;
        fn __has_router(&self) -> bool {
            true
        }
    }
    impl<T: Router> RouterYes for &Dispatch<'_, T> {
        fn __route(&self, req: &Request) -> RouteDecision {
            self.0.route(req)
        }
    }
    pub trait RouterNo {
        fn __route(&self, _req: &Request) -> RouteDecision {
            RouteDecision::Pass
        }
        fn __has_router(&self) -> bool {
            false
        }
    }
    impl<T> RouterNo for Dispatch<'_, T> {}

    pub trait AffinityYes {
        fn __choose(&self, req: &Request, farm: &Farm) -> AffinityDecision;
        fn __has_affinity(&self) -> bool {
            true
        }
    }
    impl<T: Affinity> AffinityYes for &Dispatch<'_, T> {
        fn __choose(&self, req: &Request, farm: &Farm) -> AffinityDecision {
            self.0.choose(req, farm)
        }
    }
    pub trait AffinityNo {
        fn __choose(&self, _req: &Request, _farm: &Farm) -> AffinityDecision {
            AffinityDecision::Pass
        }
        fn __has_affinity(&self) -> bool {
            false
        }
    }
    impl<T> AffinityNo for Dispatch<'_, T> {}

    pub trait LinkYes {
        fn __decide(&self, resp: &Response) -> TranslationDecision;
        fn __push(&self, chunk: Vec<u8>) -> Vec<u8>;
        fn __finish(&self) -> Vec<u8>;
        fn __has_link_translation(&self) -> bool {
            true
        }
    }
    impl<T: LinkTranslation> LinkYes for &Dispatch<'_, T> {
        fn __decide(&self, resp: &Response) -> TranslationDecision {
            self.0.decide(resp)
        }
        fn __push(&self, chunk: Vec<u8>) -> Vec<u8> {
            self.0.transform_push(chunk)
        }
        fn __finish(&self) -> Vec<u8> {
            self.0.transform_finish()
        }
    }
    pub trait LinkNo {
        fn __decide(&self, _resp: &Response) -> TranslationDecision {
            TranslationDecision::Pass
        }
        fn __push(&self, chunk: Vec<u8>) -> Vec<u8> {
            chunk
        }
        fn __finish(&self) -> Vec<u8> {
            Vec::new()
        }
        fn __has_link_translation(&self) -> bool {
            false
        }
    }
    impl<T> LinkNo for Dispatch<'_, T> {}

    pub trait HealthYes {
        fn __evaluate(&self, probe: &Probe) -> HealthVerdict;
        fn __has_health_evaluation(&self) -> bool {
            true
        }
    }
    impl<T: HealthEvaluation> HealthYes for &Dispatch<'_, T> {
        fn __evaluate(&self, probe: &Probe) -> HealthVerdict {
            self.0.evaluate(probe)
        }
    }
    pub trait HealthNo {
        fn __evaluate(&self, _probe: &Probe) -> HealthVerdict {
            HealthVerdict::Pass
        }
        fn __has_health_evaluation(&self) -> bool {
            false
        }
    }
    impl<T> HealthNo for Dispatch<'_, T> {}
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_contract_version_is_the_one_the_wit_file_declares() {
        let wit = include_str!("../wit/farmgate.wit");
        let package = format!("package farmgate:plugin@{};", super::CONTRACT_VERSION);
        assert!(
            wit.lines().any(|l| l.trim() == package),
            "wit/farmgate.wit has no `{package}` line"
        );
    }
}
