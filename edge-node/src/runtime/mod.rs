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

pub mod host;
pub mod instance;
mod limits;

use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

pub use host::{HostContext, Stats};
pub use instance::{Instance, InstanceConfig, Message};

/// Address space reserved per linear memory up front.
pub const MEMORY_RESERVATION: u64 = 8 * 1024 * 1024;
/// Guard region after each linear memory.
pub const MEMORY_GUARD: u64 = 64 * 1024;
/// One epoch tick; call deadlines are counted in ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wasm-modules/wit",
        world: "module",
    });
}

pub use bindings::wedge::module::host::Level;

/// A compiled module, ready to instantiate any number of times. Cheap to clone.
#[derive(Clone)]
pub struct Compiled {
    pub(crate) component: Component,
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
}

/// The shared engine and linker. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    linker: std::sync::Arc<Linker<host::HostState>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Runtime")
    }
}

impl Runtime {
    pub fn new() -> Result<Self, Error> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .memory_reservation(MEMORY_RESERVATION)
            .memory_guard_size(MEMORY_GUARD)
            .memory_reservation_for_growth(1024 * 1024);
        let engine = Engine::new(&config).map_err(|e| Error::Engine(format!("{e:#}")))?;

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

        Ok(Self {
            engine,
            linker: std::sync::Arc::new(linker),
        })
    }

    /// Compiles a component (tens of milliseconds: call it off the async runtime).
    pub fn compile(&self, bytes: &[u8]) -> Result<Compiled, Error> {
        Component::new(&self.engine, bytes)
            .map(|component| Compiled { component })
            .map_err(|e| Error::Compile(format!("{e:#}")))
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn linker(&self) -> &Linker<host::HostState> {
        &self.linker
    }
}
