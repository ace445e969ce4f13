//! The rules of a deployment and of what a module may do, in one place: the control plane
//! checks a deployment against them at the API, a node checks its configuration and every
//! module call against the same constants, and the docs quote them. Adding a limit is one
//! edit here plus its uses.

use crate::messages::{LOG_STREAM, Limits};
use crate::topics::validate_id;

/// Smallest linear memory a module instance may have: a Rust guest starts at ~1.1 MB.
pub const MIN_MEMORY_BYTES: u64 = 2 * 1024 * 1024;

/// Shortest call deadline, milliseconds: deadlines are enforced with wasmtime epochs that
/// tick every 10 ms, so a shorter one could not be kept.
pub const MIN_CALL_TIMEOUT_MS: u64 = 10;

/// Shortest tick period, milliseconds (the same epoch granularity).
pub const MIN_TICK_MS: u64 = 10;

/// Topics under these prefixes are the node's own (its uplink, MQTT's `$SYS`): a module may
/// not publish there and a deployment may not allow them.
pub const RESERVED_TOPIC_PREFIXES: &[&str] = &["wedge/", "$"];

/// Whether `topic` (or a prefix) lies under a reserved prefix.
pub fn is_reserved_topic(topic: &str) -> bool {
    RESERVED_TOPIC_PREFIXES.iter().any(|p| topic.starts_with(p))
}

/// Whether a deployment may allow publishing under `prefix`: not empty, no wildcards, not
/// reserved.
pub fn check_publish_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() || prefix.contains(['+', '#']) || is_reserved_topic(prefix) {
        return Err(format!(
            "publish prefix {prefix:?}: must be non-empty, without wildcards, outside {RESERVED_TOPIC_PREFIXES:?}"
        ));
    }
    Ok(())
}

/// Whether telemetry may be stored under `stream`: a name in the id alphabet (what modules
/// emit on), or the node's own log stream ([`LOG_STREAM`], which modules cannot emit on:
/// streams starting with `$` are reserved).
pub fn is_stored_stream(stream: &str) -> bool {
    validate_id(stream).is_ok() || stream == LOG_STREAM
}

/// Whether `stream` is reserved for the node itself (a module may not emit on it).
pub fn is_reserved_stream(stream: &str) -> bool {
    stream.starts_with('$')
}

/// The WASI 0.2 interfaces a node links for every module (wasmtime-wasi's p2 linker), with
/// nothing granted: no files, no network, no environment.
pub const WASI_LINKED: &[&str] = &[
    "wasi:io/",
    "wasi:clocks/",
    "wasi:filesystem/",
    "wasi:random/",
    "wasi:sockets/",
    "wasi:cli/",
];

/// The interface every module imports from the node.
pub const HOST_INTERFACE: &str = "wedge:module/host@0.1.";

/// Checks the imports of a module's component (names such as `wasi:io/streams@0.2.3`)
/// against what nodes provide: the host interface and [`WASI_LINKED`]. Anything else is
/// refused with a message naming the import and, where there is one, the build flag that
/// avoids it. The control plane checks at upload; a node checks again before it links.
pub fn check_imports<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    for name in names {
        if name.starts_with(HOST_INTERFACE) || WASI_LINKED.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let hint = if name.starts_with("wasi:http/") {
            "modules get no network; componentize-js links it unless built with \
             `--disable http fetch-event` (the build command of `wedgectl module new --lang js`)"
        } else if name.starts_with("wedge:module/") {
            "build against wasm-modules/wit/wedge.wit (package wedge:module@0.1.0, world `module`)"
        } else {
            "a Wedge module imports only `wedge:module/host` and WASI 0.2 (io, clocks, \
             filesystem, random, sockets, cli); build it for the world `module` in \
             wasm-modules/wit/wedge.wit"
        };
        return Err(format!(
            "the component imports `{name}`, which Wedge nodes do not provide: {hint}"
        ));
    }
    Ok(())
}

impl Limits {
    /// Checks the limits that are set against the floors above; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.memory_bytes.is_some_and(|m| m < MIN_MEMORY_BYTES) {
            return Err(format!(
                "limits.memory_bytes must be at least {MIN_MEMORY_BYTES} (a Rust module starts at ~1.1 MB)"
            ));
        }
        if self
            .call_timeout_ms
            .is_some_and(|t| t < MIN_CALL_TIMEOUT_MS)
        {
            return Err(format!(
                "limits.call_timeout_ms must be at least {MIN_CALL_TIMEOUT_MS}"
            ));
        }
        if self.publish_per_sec == Some(0) {
            return Err("limits.publish_per_sec must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_topics_and_prefixes() {
        assert!(is_reserved_topic("wedge/v1/nodes/x/status"));
        assert!(is_reserved_topic("$SYS/broker"));
        assert!(!is_reserved_topic("alerts/wedge/x"));
        assert!(check_publish_prefix("alerts/").is_ok());
        for bad in ["", "a/+", "a/#", "wedge/", "$share/"] {
            assert!(check_publish_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn imports_nodes_provide() {
        let ok = [
            "wedge:module/host@0.1.0",
            "wasi:io/streams@0.2.10",
            "wasi:cli/environment@0.2.0",
            "wasi:random/random@0.2.3",
        ];
        assert!(check_imports(ok).is_ok());
        let http = check_imports(["wasi:io/error@0.2.0", "wasi:http/types@0.2.10"]).unwrap_err();
        assert!(http.contains("`wasi:http/types@0.2.10`") && http.contains("--disable http"));
        let other = check_imports(["acme:thing/api"]).unwrap_err();
        assert!(other.contains("`acme:thing/api`") && other.contains("world `module`"));
        let old = check_imports(["wedge:module/host@0.2.0"]).unwrap_err();
        assert!(old.contains("wedge.wit"));
    }

    #[test]
    fn streams_and_limits() {
        assert!(is_stored_stream("temperature") && is_stored_stream(LOG_STREAM));
        assert!(is_reserved_stream(LOG_STREAM) && !is_stored_stream("$other"));
        assert!(Limits::default().validate().is_ok());
        let low = |memory_bytes, call_timeout_ms, publish_per_sec| Limits {
            memory_bytes,
            call_timeout_ms,
            kv_bytes: None,
            publish_per_sec,
        };
        assert!(
            low(Some(MIN_MEMORY_BYTES - 1), None, None)
                .validate()
                .is_err()
        );
        assert!(
            low(None, Some(MIN_CALL_TIMEOUT_MS - 1), None)
                .validate()
                .is_err()
        );
        assert!(low(None, None, Some(0)).validate().is_err());
        assert!(
            low(Some(MIN_MEMORY_BYTES), Some(MIN_CALL_TIMEOUT_MS), Some(1))
                .validate()
                .is_ok()
        );
    }
}
