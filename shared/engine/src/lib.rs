//! The WebAssembly engine's settings, shared by the node (which runs modules) and the
//! control plane (which compiles them ahead of time for the nodes).
//!
//! ## Precompiled modules and their key
//! wasmtime loads native code only when it was compiled with the same wasmtime version,
//! the same engine settings and for the same target, and only if every CPU feature the
//! code uses is present. A node's own engine detects its CPU's features, which the control
//! plane cannot know; so code compiled for a node is compiled for the *baseline* of the
//! node's target (no optional CPU features), which every CPU of that target can run.
//!
//! A node names what it can load with a [`key`]: its target triple and a hash of that
//! baseline engine's compatibility (wasmtime version, settings, target). The control plane
//! computes the same key for the same triple with the same code, so equal keys mean the
//! artifact loads; wasmtime still checks every artifact when it is loaded, and a node that
//! cannot load one compiles the module itself.
//!
//! Cross-compiling needs the code generator for the node's architecture: the control
//! plane's crate enables the x86-64 and aarch64 back ends of Cranelift (nodes carry only
//! their own).

use std::hash::{Hash as _, Hasher as _};
use std::str::FromStr as _;

use wasmtime::{Config, Engine};

/// Address space reserved for each linear memory; growth beyond it moves the memory.
pub const MEMORY_RESERVATION: u64 = 8 * 1024 * 1024;
/// Guard pages after each linear memory.
pub const MEMORY_GUARD: u64 = 64 * 1024;

/// The engine settings every node runs with; `target` `None` is this machine with its
/// CPU's features, `Some(triple)` is that target's baseline (see the module doc).
pub fn config(target: Option<&str>) -> wasmtime::Result<Config> {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .memory_reservation(MEMORY_RESERVATION)
        .memory_guard_size(MEMORY_GUARD)
        .memory_reservation_for_growth(1024 * 1024);
    if let Some(triple) = target {
        config.target(triple)?;
    }
    Ok(config)
}

/// This machine's target triple, as the key names it.
pub fn host_triple() -> String {
    target_lexicon::Triple::host().to_string()
}

/// The key of code compiled for `triple`'s baseline: `TRIPLE/HASH`.
pub fn key(triple: &str) -> wasmtime::Result<String> {
    // A canonical spelling, so `aarch64-linux-gnu` and `aarch64-unknown-linux-gnu` agree.
    let triple = target_lexicon::Triple::from_str(triple)
        .map_err(|e| wasmtime::format_err!("target {triple}: {e}"))?
        .to_string();
    let engine = Engine::new(&config(Some(&triple))?)?;
    let mut hasher = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    Ok(format!("{triple}/{:016x}", hasher.finish()))
}

/// The target triple of a key.
pub fn key_triple(key: &str) -> Option<&str> {
    key.rsplit_once('/').map(|(triple, _)| triple)
}

/// Compiles a component for nodes with `key`: the artifact a node with that key loads.
/// Refuses a key this build does not produce (another wasmtime version or settings).
pub fn precompile(key_wanted: &str, component: &[u8]) -> wasmtime::Result<Vec<u8>> {
    let triple = key_triple(key_wanted)
        .ok_or_else(|| wasmtime::format_err!("malformed precompile key {key_wanted}"))?;
    let ours = key(triple)?;
    if ours != key_wanted {
        wasmtime::bail!("this control plane compiles {ours}, not {key_wanted}");
    }
    let engine = Engine::new(&config(Some(triple))?)?;
    engine.precompile_component(component)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_name_the_target_and_differ_between_targets() {
        let host = key(&host_triple()).unwrap();
        assert!(host.starts_with(&format!("{}/", host_triple())), "{host}");
        assert_eq!(key_triple(&host), Some(host_triple().as_str()));
        assert_eq!(host, key(&host_triple()).unwrap(), "stable");
        assert!(key("not a triple").is_err());
        assert!(precompile("x86_64-unknown-linux-gnu/0000000000000000", b"").is_err());
    }
}
