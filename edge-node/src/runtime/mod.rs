//! The module host: wasmtime with the component model.
//!
//! - [`Runtime`] owns the `Engine` (epoch interruption always on, memory reservations sized
//!   for small devices) and the `Linker` with WASI p2 and our host interface.
//! - [`host`] implements the host interface of `wasm-modules/wit/wedge.wit`.
//! - [`instance`] runs one module instance on its own thread, supervised: a trap, an
//!   overrun deadline or exhausted memory stops the instance, which is restarted with
//!   capped exponential backoff, while the node and the other modules keep running.
//!
//! Memory: wasmtime's defaults reserve 4 GiB + guard of address space per linear memory,
//! which fails on small ARM devices. We reserve [`MEMORY_RESERVATION`] up front and let a
//! memory that grows past it move; bounds checks are explicit then, which costs a little
//! speed and no correctness.

pub mod cache;
pub mod child;
pub mod host;
pub mod instance;
mod limits;

use std::time::Duration;

use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

pub use host::{HostContext, Stats};
pub use instance::{Instance, InstanceConfig, Message, Queue};
pub use limits::InstanceLimits;

/// Address space reserved per linear memory up front.
pub const MEMORY_RESERVATION: u64 = wedge_engine::MEMORY_RESERVATION;
/// Guard region after each linear memory.
pub const MEMORY_GUARD: u64 = wedge_engine::MEMORY_GUARD;
/// One epoch tick; call deadlines are counted in ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wasm-modules/wit",
        world: "module",
    });
}

pub use bindings::wedge::module::host::Level;

/// A compiled and linked module, ready to instantiate any number of times (a restart
/// skips the import resolution). Cheap to clone.
#[derive(Clone)]
pub struct Compiled {
    pub(crate) pre: bindings::ModulePre<host::HostState>,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Compiled")
    }
}

/// What went wrong preparing a module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot configure the WebAssembly engine: {0}")]
    Engine(String),
    #[error("module does not compile: {0}")]
    Compile(String),
    #[error("module does not link: {0}")]
    Link(String),
    #[error(
        "this wedge-node was built without a compiler (the `compiler` feature); it runs only \
         modules the control plane compiled for it"
    )]
    NoCompiler,
}

/// The shared engine and linker. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    linker: std::sync::Arc<Linker<host::HostState>>,
    cache: Option<cache::Cache>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Runtime")
    }
}

impl Runtime {
    /// A runtime; compiled modules are cached in `cache_dir` when one is given.
    pub fn new(cache_dir: Option<&std::path::Path>) -> Result<Self, Error> {
        let engine = wedge_engine::config(None)
            .and_then(|config| Engine::new(&config))
            .map_err(|e| Error::Engine(format!("{e:#}")))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| Error::Engine(format!("{e:#}")))?;
        bindings::Module::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| Error::Engine(format!("{e:#}")))?;

        // The ticker holds a weak reference and ends with the engine.
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| Error::Engine(e.to_string()))?;

        let cache = cache_dir
            .map(cache::Cache::new)
            .transpose()
            .map_err(|e| Error::Engine(format!("cannot create the module cache: {e}")))?;
        Ok(Self {
            engine,
            linker: std::sync::Arc::new(linker),
            cache,
        })
    }

    /// Compiles and links a component (tens of milliseconds to seconds: call it off the
    /// async runtime).
    pub fn compile(&self, bytes: &[u8]) -> Result<Compiled, Error> {
        self.link(&self.component(bytes)?)
    }

    #[cfg(feature = "compiler")]
    fn component(&self, bytes: &[u8]) -> Result<Component, Error> {
        Component::new(&self.engine, bytes).map_err(|e| Error::Compile(format!("{e:#}")))
    }

    #[cfg(not(feature = "compiler"))]
    fn component(&self, _bytes: &[u8]) -> Result<Component, Error> {
        Err(Error::NoCompiler)
    }

    /// Resolves the component's imports against the linker, once. The imports are checked
    /// first by the rule the control plane applies at upload, so a module that imports
    /// something nodes do not provide is refused with the same message on both sides.
    fn link(&self, component: &Component) -> Result<Compiled, Error> {
        let ty = component.component_type();
        let names: Vec<&str> = ty.imports(&self.engine).map(|(name, _)| name).collect();
        wedge_proto::rules::check_imports(names).map_err(Error::Link)?;
        let pre = self
            .linker
            .instantiate_pre(component)
            .and_then(bindings::ModulePre::new)
            .map_err(|e| Error::Link(format!("{e:#}")))?;
        Ok(Compiled { pre })
    }

    /// The compiled form of the verified blob `bytes` with digest `digest`: from the cache
    /// when it holds a loadable entry, otherwise compiled now and cached.
    pub fn load(
        &self,
        digest: &wedge_proto::Digest,
        bytes: &[u8],
    ) -> Result<(Compiled, cache::Source), Error> {
        if let Some(component) = self
            .cache
            .as_ref()
            .and_then(|c| c.load(&self.engine, digest))
        {
            return Ok((self.link(&component)?, cache::Source::Cached));
        }
        let mut source = cache::Source::Compiled;
        let component = match child::compiler() {
            Some(exe) => match child::compile(exe, bytes) {
                Ok(native) => {
                    source = cache::Source::CompiledInChild;
                    self.own_native(&native)?
                }
                Err(child::ChildError::DoesNotCompile(message)) => {
                    return Err(Error::Compile(message));
                }
                Err(child::ChildError::Unavailable(why)) => {
                    tracing::warn!(why, "cannot compile in a child process; compiling here");
                    self.component(bytes)?
                }
            },
            None => self.component(bytes)?,
        };
        let compiled = self.link(&component)?;
        if let Some(cache) = &self.cache {
            cache.store(digest, &component);
        }
        Ok((compiled, source))
    }

    /// Native code this node's own binary just compiled (in a child process).
    #[allow(unsafe_code)]
    fn own_native(&self, native: &[u8]) -> Result<Component, Error> {
        // SAFETY: made by this very binary with this engine's settings from a component
        // the node verified; trusted like the node's own cache (and checked by wasmtime
        // for compatibility before use).
        unsafe { Component::deserialize(&self.engine, native) }
            .map_err(|e| Error::Compile(format!("{e:#}")))
    }

    /// Loads native code the control plane compiled for this node's precompile key (see
    /// `wedge-engine`) for the module with digest `digest`, and caches it. An error means the
    /// node should compile the module itself.
    ///
    /// Trust: wasmtime does not validate native code, so this runs whatever the artifact
    /// holds. It comes from the control plane over the node's mutually authenticated link,
    /// verified against the digest the desired state names — the same authority that
    /// chooses which modules the node runs; nodes that require publisher signatures never
    /// call this (the agent does not).
    #[allow(unsafe_code)]
    pub fn load_native(
        &self,
        digest: &wedge_proto::Digest,
        artifact: &[u8],
    ) -> Result<(Compiled, cache::Source), Error> {
        if wasmtime::Engine::detect_precompiled(artifact) != Some(wasmtime::Precompiled::Component)
        {
            return Err(Error::Compile("not a precompiled component".into()));
        }
        // SAFETY: see the trust note above; wasmtime checks the artifact was made by this
        // wasmtime version with compatible settings and CPU features before using it.
        let component = unsafe { Component::deserialize(&self.engine, artifact) }
            .map_err(|e| Error::Compile(format!("{e:#}")))?;
        let compiled = self.link(&component)?;
        if let Some(cache) = &self.cache {
            cache.store(digest, &component);
        }
        Ok((compiled, cache::Source::Precompiled))
    }

    /// The compiled module for `digest` from the cache, if it holds a loadable entry.
    pub fn cached(&self, digest: &wedge_proto::Digest) -> Option<Result<Compiled, Error>> {
        let component = self.cache.as_ref()?.load(&self.engine, digest)?;
        Some(self.link(&component))
    }

    /// Gives the memory a compile used back to the system. Cranelift allocates hundreds of
    /// megabytes for a JavaScript or Python component (~17 MiB for a small Rust one) on the
    /// compiling thread; glibc keeps what is freed in that thread's arena, so the node's
    /// resident memory stayed at its peak until a restart. musl returns it by itself.
    #[allow(unsafe_code)]
    pub fn release_compile_memory() {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only walks the allocator's own free lists; it has no
        // preconditions and is safe to call from any thread at any time.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    /// Drops cache entries of modules not in `keep`.
    pub fn retain_cached(&self, keep: &[wedge_proto::Digest]) {
        if let Some(cache) = &self.cache {
            cache.retain(keep);
        }
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wedge_proto::Digest;

    #[test]
    fn cache_hits_after_compile_and_recovers_from_a_bad_entry() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = wedge_modules::bytes("threshold-alert").unwrap();
        let digest = Digest::of(&bytes);
        let rt = Runtime::new(Some(dir.path())).unwrap();
        assert_eq!(rt.load(&digest, &bytes).unwrap().1, cache::Source::Compiled);
        assert_eq!(rt.load(&digest, &bytes).unwrap().1, cache::Source::Cached);

        // A new runtime (a restart) hits the cache too.
        let rt = Runtime::new(Some(dir.path())).unwrap();
        assert_eq!(rt.load(&digest, &bytes).unwrap().1, cache::Source::Cached);

        // A damaged entry is recompiled, and replaced.
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
        }
        assert_eq!(rt.load(&digest, &bytes).unwrap().1, cache::Source::Compiled);
        assert_eq!(rt.load(&digest, &bytes).unwrap().1, cache::Source::Cached);

        rt.retain_cached(&[]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn guest_languages_compile_and_link() {
        for name in wedge_modules::GUESTS {
            let Some(bytes) = wedge_modules::guest(name).unwrap() else {
                continue;
            };
            let started = std::time::Instant::now();
            let rt = Runtime::new(None).unwrap();
            rt.compile(&bytes).unwrap();
            eprintln!("{name}: compiled in {:?}", started.elapsed());
        }
    }

    /// Code compiled for this machine's baseline (as the control plane does) loads in the
    /// node's engine, which detected this CPU's features; code for another architecture and
    /// garbage are refused (the node then compiles the module itself).
    #[test]
    fn native_code_for_the_baseline_loads_and_foreign_code_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = wedge_modules::bytes("threshold-alert").unwrap();
        let digest = Digest::of(&bytes);
        let rt = Runtime::new(Some(dir.path())).unwrap();

        let key = wedge_engine::key(&wedge_engine::host_triple()).unwrap();
        let native = wedge_engine::precompile(&key, &bytes).unwrap();
        let (_, source) = rt.load_native(&digest, &native).unwrap();
        assert_eq!(source, cache::Source::Precompiled);
        assert!(rt.cached(&digest).is_some(), "cached for the next start");

        let other = if cfg!(target_arch = "aarch64") {
            "x86_64-unknown-linux-gnu"
        } else {
            "aarch64-unknown-linux-gnu"
        };
        let foreign = wedge_engine::precompile(&wedge_engine::key(other).unwrap(), &bytes).unwrap();
        let Err(e) = rt.load_native(&digest, &foreign) else {
            panic!("code for {other} loaded here");
        };
        assert!(format!("{e}").contains("architecture"), "{e}");
        assert!(rt.load_native(&digest, b"garbage").is_err());
        assert!(
            rt.load_native(&digest, &bytes).is_err(),
            "a component is not native code"
        );
    }

    #[test]
    fn garbage_does_not_compile() {
        let rt = Runtime::new(None).unwrap();
        assert!(matches!(rt.compile(b"not wasm"), Err(Error::Compile(_))));
    }
}
