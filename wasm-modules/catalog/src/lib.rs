//! Where the guest modules built from `wasm-modules/` are.
//!
//! The build script compiles each guest crate for `wasm32-wasip2`; this crate only tells
//! tests, benchmarks and the demo where the resulting components are.

use std::path::PathBuf;

include!(concat!(env!("OUT_DIR"), "/modules.rs"));

/// The path of the built component `name` (e.g. `"threshold-alert"`), if there is one.
pub fn path(name: &str) -> Option<PathBuf> {
    MODULES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| PathBuf::from(p))
}

/// The bytes of the built component `name`.
pub fn bytes(name: &str) -> std::io::Result<Vec<u8>> {
    let path = path(name).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no module named {name} in wasm-modules/"),
        )
    })?;
    std::fs::read(path)
}

/// The example modules written in JavaScript and Python, which `wasm-modules/build-guests`
/// builds with their pinned toolchains (npm, PyPI); cargo does not.
pub const GUESTS: &[&str] = &["threshold-alert-js", "threshold-alert-py"];

/// The bytes of the guest module `name` (one of [`GUESTS`]); `Ok(None)` when it has not
/// been built, which is an error under CI (`CI` set), where `.ci/run` builds them.
pub fn guest(name: &str) -> std::io::Result<Option<Vec<u8>>> {
    let path = PathBuf::from(GUESTS_DIR).join(format!("{name}.wasm"));
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && std::env::var_os("CI").is_none() => {
            Ok(None)
        }
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!("{}: {e} (run wasm-modules/build-guests)", path.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn threshold_alert_is_a_component() {
        let bytes = super::bytes("threshold-alert").expect("built by build.rs");
        // Component binaries start with the wasm magic and layer 1 (component) version.
        assert_eq!(&bytes[..4], b"\0asm");
        assert_eq!(&bytes[6..8], &[1, 0]);
    }
}
