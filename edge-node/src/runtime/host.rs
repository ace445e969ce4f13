//! The host side of `wedge:module/host`, and the per-instance store data.
//!
//! Every host call is bounded: publishes by topic rules and a token bucket, emits by record
//! size, the key-value store by a byte quota, logs by a token bucket. A refused call returns
//! an error to the module (or, for logs, drops the line) and is counted; it never traps.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wedge_broker::LocalPublisher;
use wedge_proto::messages::LOG_STREAM;
use wedge_proto::topics::validate_topic;

use super::bindings::wedge::module::host::{Host, Level};
use super::limits::{InstanceLimits, TokenBucket};
use crate::buffer::Buffer;
use crate::events::EventSink;
use crate::store::Kv;

/// Log lines a module may write per second, and in a burst.
const LOG_RATE: u32 = 20;
const LOG_BURST: u32 = 100;
/// Longest module log line, bytes (longer ones are cut before anything formats them).
const MAX_LOG_LINE: usize = 4096;
/// Largest payload a module may publish locally: what the node's local broker accepts.
const MAX_PUBLISH_PAYLOAD: usize = wedge_broker::DEFAULT_MAX_PAYLOAD;

/// Counters of one instance, kept across its restarts.
#[derive(Debug, Default)]
pub struct Stats {
    pub messages: AtomicU64,
    pub errors: AtomicU64,
    pub dropped: AtomicU64,
    pub published: AtomicU64,
    pub refused: AtomicU64,
    pub emitted: AtomicU64,
    pub logs_dropped: AtomicU64,
}

impl Stats {
    pub fn snapshot(&self) -> wedge_proto::messages::ModuleStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        wedge_proto::messages::ModuleStats {
            messages: get(&self.messages),
            errors: get(&self.errors),
            dropped: get(&self.dropped),
            published: get(&self.published),
            refused: get(&self.refused),
            emitted: get(&self.emitted),
        }
    }
}

/// What an instance's host calls reach; shared by every restart of the instance.
#[derive(Debug, Clone)]
pub struct HostContext {
    pub module: Arc<str>,
    pub publisher: LocalPublisher,
    pub buffer: Buffer,
    pub kv: Kv,
    /// Allowed topic prefixes; empty allows every non-reserved topic.
    pub publish_prefixes: Vec<String>,
    pub publish_per_sec: u32,
    pub stats: Arc<Stats>,
    pub metrics: crate::metrics::ModuleMetrics,
    pub events: EventSink,
    /// Where `wedge-node module run` sees what the module publishes and emits (a node has
    /// none); bounded, so a module outpacing the printer waits for it.
    pub tap: Option<std::sync::mpsc::SyncSender<Tapped>>,
}

/// What a module did, as `wedge-node module run` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tapped {
    Published { topic: String, payload: Vec<u8> },
    Emitted { stream: String, payload: Vec<u8> },
}

/// WASI handles (streams, pollables…) one instance may hold at once. Each is host memory
/// outside the module's memory limit; wasmtime's default allows a million. A guest
/// language's runtime holds a few dozen.
pub const MAX_HANDLES: usize = 10_000;

/// The store data of one instance.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: StoreLimits,
    ctx: HostContext,
    publish_bucket: TokenBucket,
    log_bucket: TokenBucket,
}

impl HostState {
    pub fn new(ctx: HostContext, limits: &InstanceLimits) -> Self {
        let now = Instant::now();
        Self {
            // No files, no network, no environment: a module reaches the world only
            // through the host interface.
            wasi: WasiCtx::builder().build(),
            table: {
                let mut table = ResourceTable::new();
                table.set_max_capacity(MAX_HANDLES);
                table
            },
            limits: limits.store_limits(),
            publish_bucket: TokenBucket::new(ctx.publish_per_sec, ctx.publish_per_sec, now),
            log_bucket: TokenBucket::new(LOG_RATE, LOG_BURST, now),
            ctx,
        }
    }

    fn refuse(&self, why: String) -> Result<(), String> {
        self.ctx.stats.refused.fetch_add(1, Ordering::Relaxed);
        Err(why)
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

/// Whether a module with these allowed prefixes may publish to `topic`.
/// Whether `topic` lies under the publish prefix `prefix`, level by level: `alerts` and
/// `alerts/` admit `alerts` and `alerts/…`, never `alerts-evil/…`.
fn under_prefix(prefix: &str, topic: &str) -> bool {
    let Some(rest) = topic.strip_prefix(prefix) else {
        return false;
    };
    rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/')
}

pub fn topic_allowed(prefixes: &[String], topic: &str) -> Result<(), String> {
    validate_topic(topic).map_err(|e| format!("topic {topic:?}: {e}"))?;
    if wedge_proto::rules::is_reserved_topic(topic) {
        return Err(format!("topic {topic:?} is reserved for the node"));
    }
    if !prefixes.is_empty() && !prefixes.iter().any(|p| under_prefix(p, topic)) {
        return Err(format!(
            "topic {topic:?} is outside the prefixes this deployment allows: {prefixes:?}"
        ));
    }
    Ok(())
}

impl Host for HostState {
    fn publish(&mut self, topic: String, payload: Vec<u8>) -> Result<(), String> {
        if let Err(why) = topic_allowed(&self.ctx.publish_prefixes, &topic) {
            return self.refuse(why);
        }
        if payload.len() > MAX_PUBLISH_PAYLOAD {
            return self.refuse(format!(
                "payload of {} bytes is over the local broker's limit of {MAX_PUBLISH_PAYLOAD}",
                payload.len()
            ));
        }
        if !self.publish_bucket.take(Instant::now()) {
            return self.refuse(format!(
                "publish rate limit of {}/s exceeded",
                self.ctx.publish_per_sec
            ));
        }
        if let Some(tap) = &self.ctx.tap {
            let _ = tap.send(Tapped::Published {
                topic: topic.clone(),
                payload: payload.clone(),
            });
        }
        self.ctx
            .publisher
            .publish(topic, payload)
            .map_err(|e| e.to_string())?;
        self.ctx.stats.published.fetch_add(1, Ordering::Relaxed);
        self.ctx.metrics.to_local.inc();
        Ok(())
    }

    fn emit(&mut self, stream: String, payload: Vec<u8>) -> Result<(), String> {
        if wedge_proto::rules::is_reserved_stream(&stream) {
            return Err(format!(
                "stream {stream:?}: names starting with $ are reserved"
            ));
        }
        self.ctx
            .buffer
            .append(&self.ctx.module, &stream, wedge_proto::now_ms(), &payload)
            .map_err(|e| e.to_string())?;
        if let Some(tap) = &self.ctx.tap {
            let _ = tap.send(Tapped::Emitted { stream, payload });
        }
        self.ctx.stats.emitted.fetch_add(1, Ordering::Relaxed);
        self.ctx.metrics.to_uplink.inc();
        Ok(())
    }

    fn kv_get(&mut self, key: String) -> Option<Vec<u8>> {
        match self.ctx.kv.get(&key) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(module = &*self.ctx.module, error = %e, "kv read failed");
                None
            }
        }
    }

    fn kv_set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        self.ctx.kv.set(&key, &value).map_err(|e| e.to_string())
    }

    fn kv_delete(&mut self, key: String) {
        if let Err(e) = self.ctx.kv.delete(&key) {
            tracing::warn!(module = &*self.ctx.module, error = %e, "kv delete failed");
        }
    }

    fn now_ms(&mut self) -> u64 {
        wedge_proto::now_ms()
    }

    fn log(&mut self, level: Level, message: String) {
        if !self.log_bucket.take(Instant::now()) {
            self.ctx.stats.logs_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let module = &*self.ctx.module;
        // Cut first: the line is as long as the module made it (up to its memory), and
        // both the local log and the upstream record format it.
        let message = wedge_proto::messages::bounded_text(message, MAX_LOG_LINE);
        let name = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        match level {
            Level::Trace => tracing::trace!(module, "{message}"),
            Level::Debug => tracing::debug!(module, "{message}"),
            Level::Info => tracing::info!(module, "{message}"),
            Level::Warn => tracing::warn!(module, "{message}"),
            Level::Error => tracing::error!(module, "{message}"),
        }
        // Debug and trace lines stay local: they are for whoever reads the node's log. The
        // rest goes upstream through the telemetry buffer: kept on disk while the uplink is
        // down, delivered once, readable as the node's `$log` stream.
        if matches!(level, Level::Info | Level::Warn | Level::Error) {
            let line = serde_json::json!({"level": name, "message": message});
            if let Err(e) = self.ctx.buffer.append(
                module,
                LOG_STREAM,
                wedge_proto::now_ms(),
                line.to_string().as_bytes(),
            ) {
                self.ctx.stats.logs_dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(module, error = %e, "module log line not buffered");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::topic_allowed;

    #[test]
    fn topic_rules() {
        assert!(topic_allowed(&[], "alerts/x").is_ok());
        assert!(topic_allowed(&[], "wedge/v1/nodes/x/status").is_err());
        assert!(topic_allowed(&[], "$SYS/x").is_err());
        assert!(topic_allowed(&[], "a/+").is_err());
        let only = vec!["alerts/".to_string()];
        assert!(topic_allowed(&only, "alerts/x").is_ok());
        assert!(topic_allowed(&only, "actuators/valve").is_err());
        // A prefix matches whole topic levels, with or without its trailing '/'.
        let bare = vec!["alerts".to_string()];
        assert!(topic_allowed(&bare, "alerts").is_ok());
        assert!(topic_allowed(&bare, "alerts/x").is_ok());
        assert!(topic_allowed(&bare, "alerts-evil/x").is_err());
        assert!(topic_allowed(&bare, "alertsx").is_err());
        assert!(topic_allowed(&only, "alerts-evil/x").is_err());
        let partial = vec!["site/a".to_string()];
        assert!(topic_allowed(&partial, "site/ab/x").is_err());
        assert!(topic_allowed(&partial, "site/a/x").is_ok());
    }
}
