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
//! A node names what it can load with a [`key`]: its target triple and a hash of what
//! decides whether code loads (wasmtime's major version, which its artifacts record and
//! check, and the engine settings below). The control plane computes the same key for the
//! same triple with the same code, so equal keys mean the artifact loads; wasmtime still
//! checks every artifact when it is loaded, and a node that cannot load one compiles the
//! module itself (or, built without a compiler, says so and waits).
//!
//! The key is computed without a compiler on purpose: a node built without Cranelift (the
//! `compiler` feature off, `deploy/build-arm64`'s default, a quarter smaller) loads only
//! precompiled code and still has to name it. wasmtime's own compatibility hash needs the
//! compiler, and Rust's default hasher may change between Rust releases, so the key hashes
//! a description of the settings with SHA-256. A wrong key costs a failed load and a
//! fallback, never unsafety: the artifact's own header is what wasmtime checks.
//!
//! Cross-compiling needs the code generator for the node's architecture: the control
//! plane's crate enables the x86-64 and aarch64 back ends of Cranelift (nodes carry only
//! their own, or none).

use std::str::FromStr as _;

use sha2::{Digest as _, Sha256};
use wasmtime::Config;
#[cfg(feature = "compiler")]
use wasmtime::Engine;

/// Address space reserved for each linear memory; growth beyond it moves the memory.
pub const MEMORY_RESERVATION: u64 = 8 * 1024 * 1024;
/// Guard pages after each linear memory.
pub const MEMORY_GUARD: u64 = 64 * 1024;
/// Address space a growing memory may take beyond its size before it moves.
pub const MEMORY_GROWTH: u64 = 1024 * 1024;
/// wasmtime's major version: artifacts record it and load only into the same major
/// (checked against `Cargo.lock` by a test).
pub const WASMTIME_MAJOR: u32 = 48;

/// Whether this build can compile modules (Cranelift is in it).
pub const CAN_COMPILE: bool = cfg!(feature = "compiler");

/// The engine settings every node runs with; `target` `None` is this machine with its
/// CPU's features, `Some(triple)` is that target's baseline (see the module doc).
pub fn config(target: Option<&str>) -> wasmtime::Result<Config> {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .memory_reservation(MEMORY_RESERVATION)
        .memory_guard_size(MEMORY_GUARD)
        .memory_reservation_for_growth(MEMORY_GROWTH);
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
    // Everything `config` sets that the code depends on; change it with `config`.
    let settings = format!(
        "wasmtime {WASMTIME_MAJOR}; component model; epoch interruption; \
         memory reservation {MEMORY_RESERVATION}, guard {MEMORY_GUARD}, growth {MEMORY_GROWTH}; \
         baseline {triple}"
    );
    let hash = Sha256::digest(settings.as_bytes());
    Ok(format!("{triple}/{}", hex::encode(&hash[..8])))
}

/// The target triple of a key.
pub fn key_triple(key: &str) -> Option<&str> {
    key.rsplit_once('/').map(|(triple, _)| triple)
}

/// Compiles a component for nodes with `key`: the artifact a node with that key loads.
/// Refuses a key this build does not produce (another wasmtime version or settings).
#[cfg(feature = "compiler")]
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
        #[cfg(feature = "compiler")]
        assert!(precompile("x86_64-unknown-linux-gnu/0000000000000000", b"").is_err());
        assert_eq!(
            key("aarch64-linux-gnu").unwrap(),
            key("aarch64-unknown-linux-gnu").unwrap(),
            "canonical spelling"
        );
        assert_ne!(key("aarch64-unknown-linux-musl").unwrap(), host);
    }

    #[test]
    fn the_key_names_the_wasmtime_major_the_workspace_builds() {
        let lock = include_str!("../../../Cargo.lock");
        let version = lock
            .split("[[package]]")
            .find(|p| p.contains("\nname = \"wasmtime\"\n"))
            .and_then(|p| p.split("version = \"").nth(1))
            .and_then(|v| v.split('.').next())
            .unwrap();
        assert_eq!(version, WASMTIME_MAJOR.to_string(), "update WASMTIME_MAJOR");
    }

    /// The key stands in for wasmtime's own compatibility check: code compiled for the
    /// host's key loads into the node's engine (which detects the CPU's features).
    #[cfg(feature = "compiler")]
    #[test]
    fn code_for_the_hosts_key_loads_into_the_hosts_engine() {
        // The smallest component: the binary header alone.
        let empty = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
        let native = precompile(&key(&host_triple()).unwrap(), &empty).unwrap();
        let engine = Engine::new(&config(None).unwrap()).unwrap();
        #[allow(unsafe_code)]
        // SAFETY: made just above by this build.
        let loaded = unsafe { wasmtime::component::Component::deserialize(&engine, &native) };
        assert!(loaded.is_ok(), "{:?}", loaded.err());
    }
}
