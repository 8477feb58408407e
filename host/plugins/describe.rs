//! The words for why a plugin call failed: one line an operator and the plugin's author can act
//! on. A memory cap says which cap; a deadline says so; a panic gives the plugin's own message;
//! a trap names the plugin's own functions where it was (from the component's name section, which
//! `plugin build` and the SDK's profiles keep), not the standard library's or the bindings'.

use wasmtime::{Trap, WasmBacktrace};

/// At most this many of the plugin's own frames are named.
const FRAMES: usize = 3;

/// What a call left behind that the error alone does not say.
#[derive(Debug, Default)]
pub(super) struct Context {
    /// The instance's memory cap in bytes.
    pub memory_limit: usize,
    /// The panic message the guest's panic hook logged during the call.
    pub panic: Option<String>,
}

/// A one-line reason for a failed call.
pub(super) fn describe(e: &wasmtime::Error, cx: &Context) -> String {
    let chain = format!("{e:#}");
    if chain.contains("forcing trap when growing memory")
        || chain.contains("forcing a memory growth failure")
    {
        let wanted = grown_to(&chain)
            .map(|b| format!(" (it asked for {})", megabytes(b)))
            .unwrap_or_default();
        return format!(
            "memory limit ({}) reached{wanted}; raise plugins.memory_limit_mb if the plugin needs more",
            megabytes(cx.memory_limit as u64)
        );
    }
    let what = match (e.downcast_ref::<Trap>(), &cx.panic) {
        (Some(Trap::Interrupt), _) => return "call deadline exceeded (interrupted)".into(),
        (_, Some(message)) => format!("panicked: {}", one_line_panic(message)),
        (Some(t), None) => format!("trap: {t}"),
        // Not a trap: the host refused something (a bad resource, a closed instance).
        (None, None) => return chain.lines().next().unwrap_or("unknown error").to_string(),
    };
    match e.downcast_ref::<WasmBacktrace>().map(own_frames) {
        Some(frames) if !frames.is_empty() => format!("{what}; in {}", frames.join(" <- ")),
        Some(_) => format!(
            "{what}; the plugin carries no function names (build it with `farmgate plugin build`, or strip = \"debuginfo\" rather than true)"
        ),
        None => what,
    }
}

/// The plugin's own functions in a backtrace, innermost first, demangled and without the
/// standard library, the allocator, the SDK's glue and the generated bindings.
fn own_frames(bt: &WasmBacktrace) -> Vec<String> {
    let mut named = false;
    let mut own = Vec::new();
    for f in bt.frames() {
        let Some(raw) = f.func_name() else { continue };
        named = true;
        let name = format!("{:#}", rustc_demangle::demangle(raw));
        if !is_machinery(&name) && own.last() != Some(&name) {
            own.push(name);
        }
        if own.len() == FRAMES {
            break;
        }
    }
    // Names present but none of the plugin's own: say where it was all the same.
    if own.is_empty() && named {
        own.extend(
            bt.frames()
                .iter()
                .filter_map(|f| f.func_name())
                .take(FRAMES)
                .map(|n| format!("{:#}", rustc_demangle::demangle(n))),
        );
    }
    own
}

fn is_machinery(name: &str) -> bool {
    let bare = name.trim_start_matches('<');
    [
        "std::",
        "core::",
        "alloc::",
        "dlmalloc::",
        "wit_bindgen",
        "farmgate_sdk::",
        "__rust",
        "rust_panic",
        "rust_begin_unwind",
        "abort",
        "cabi_",
        "__wasm",
    ]
    .iter()
    .any(|p| bare.starts_with(p))
        || name.starts_with("farmgate:plugin/")
        || name.contains("bindings::")
}

/// std's `panicked at src/lib.rs:3:5:\nmessage` as `message (at src/lib.rs:3:5)`, on one line.
fn one_line_panic(text: &str) -> String {
    let (place, message) = match text
        .strip_prefix("panicked at ")
        .and_then(|rest| rest.split_once(":\n"))
    {
        Some((place, message)) => (Some(place), message),
        None => (None, text),
    };
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    match place {
        Some(place) => format!("{message} (at {place})"),
        None => message,
    }
}

/// `N` of "... growing memory to N bytes".
fn grown_to(text: &str) -> Option<u64> {
    let rest = text.split("growing memory to ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Bytes as whole megabytes (MiB, as `memory_limit_mb` counts them), one decimal when not whole.
fn megabytes(bytes: u64) -> String {
    const MB: u64 = 1024 * 1024;
    if bytes.is_multiple_of(MB) {
        format!("{} MB", bytes / MB)
    } else {
        format!("{:.1} MB", bytes as f64 / MB as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_machinery() {
        assert_eq!(megabytes(32 * 1024 * 1024), "32 MB");
        assert_eq!(megabytes(34668544), "33.1 MB");
        assert_eq!(
            grown_to("forcing trap when growing memory to 34668544 bytes"),
            Some(34668544)
        );
        assert_eq!(
            one_line_panic("panicked at src/lib.rs:3:5:\nno\nway"),
            "no way (at src/lib.rs:3:5)"
        );
        assert!(is_machinery("core::panicking::panic_fmt"));
        assert!(is_machinery("<farmgate_sdk::Glue<T> as x>::route"));
        assert!(!is_machinery(
            "<test_hostile::Hostile as farmgate_sdk::Router>::route"
        ));
    }
}
