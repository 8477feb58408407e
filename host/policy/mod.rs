//! The hook chains on the request path and what their decisions do. For each decision the bound
//! plugins are asked in order; the first that does not pass decides; when all pass (or none is
//! bound) the built-in behaviour decides. A failed plugin is skipped (fail-open) or fails the
//! request with 503 (fail-closed, per plugin).
//!
//! Each chain is assembled here from the plugins bound to a rule or farm, ending with the
//! built-in plugin where its settings give it something to do:
//! - [`RouterChain`]: which farm, which rewrite of the head, or an answer without a member;
//! - [`Balancer`]: which member (the affinity chain, then the host's least current request),
//!   and whether the client is pinned to it by the affinity cookie;
//! - [`LinksChain`]: what to translate in a member's response, and the translation applied.
//!
//! This module turns decisions into effects; it does not call wasmtime itself (`plugins` does),
//! and it does not sequence the request path (`proxy` does).

mod affinity;
mod links;
mod router;

pub use affinity::{Balancer, Chosen};
pub use links::{LinksChain, ResponseHead};
pub use router::{Rewrite, Routed, RouterChain};

use crate::error::ProxyError;
use crate::plugins::PluginFailure;

/// Fail-open: log (done by the runtime) and go on; fail-closed: the request gets 503.
fn fail(f: PluginFailure) -> Result<(), ProxyError> {
    if f.fail_closed {
        Err(ProxyError::Plugin(f))
    } else {
        Ok(())
    }
}
