//! The host side of `wedge:module/host`, and the per-instance store data.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wedge_broker::LocalPublisher;
use wedge_shared::topics::validate_topic;

use super::bindings::wedge::module::host::{Host, Level};

/// Topics under these prefixes are the node's own; modules may not publish there.
const RESERVED_PREFIXES: &[&str] = &["wedge/", "$"];

/// Counters one instance's host calls keep.
#[derive(Debug, Default)]
pub struct HostCounters {
    pub published: AtomicU64,
    pub publish_refused: AtomicU64,
}

/// Everything a module's calls into the host can reach.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: StoreLimits,
    module: Arc<str>,
    publisher: LocalPublisher,
    counters: Arc<HostCounters>,
}

impl HostState {
    pub fn new(
        module: Arc<str>,
        publisher: LocalPublisher,
        memory_bytes: usize,
        counters: Arc<HostCounters>,
    ) -> Self {
        Self {
            // No files, no network, no environment: a module reaches the world only
            // through the host interface.
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(memory_bytes)
                .instances(10)
                .tables(10)
                .memories(4)
                .trap_on_grow_failure(true)
                .build(),
            module,
            publisher,
            counters,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl Host for HostState {
    fn publish(&mut self, topic: String, payload: Vec<u8>) -> Result<(), String> {
        if let Err(e) = validate_topic(&topic) {
            self.counters
                .publish_refused
                .fetch_add(1, Ordering::Relaxed);
            return Err(format!("topic {topic:?}: {e}"));
        }
        if RESERVED_PREFIXES.iter().any(|p| topic.starts_with(p)) {
            self.counters
                .publish_refused
                .fetch_add(1, Ordering::Relaxed);
            return Err(format!("topic {topic:?} is reserved for the node"));
        }
        self.publisher
            .publish(topic, payload)
            .map_err(|e| e.to_string())?;
        self.counters.published.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn log(&mut self, level: Level, message: String) {
        let module = &*self.module;
        match level {
            Level::Trace => tracing::trace!(module, "{message}"),
            Level::Debug => tracing::debug!(module, "{message}"),
            Level::Info => tracing::info!(module, "{message}"),
            Level::Warn => tracing::warn!(module, "{message}"),
            Level::Error => tracing::error!(module, "{message}"),
        }
    }
}
