//! The node's Prometheus series, served at `/metrics` by [`crate::http`].
//!
//! - Per module, recorded as it happens (handles kept in each module's host context, shared
//!   by its restarts): `wedge_module_messages_in_total`, `wedge_module_messages_out_total{to}`
//!   (`local`: published on the local broker; `uplink`: emitted as telemetry),
//!   `wedge_module_call_duration_seconds{call}` (`init`, `message`, `tick`),
//!   `wedge_module_traps_total`, `wedge_module_restarts_total`,
//!   `wedge_module_dropped_total` (messages its full queue dropped); and
//!   `wedge_module_loads_total{source}` (`cache`, `precompiled`, `compiled`),
//!   `wedge_module_compiles_total{where}` (`child`, `in_process`). A module's series stay
//!   after it is removed (counters must not vanish mid-scrape); they are few.
//! - Read when scraped, from the state the node already keeps, so heartbeat and metrics
//!   never disagree: the telemetry buffer (`wedge_buffer_pending_records`,
//!   `…_pending_bytes`, `…_oldest_age_seconds`, `…_quota_bytes`, `wedge_buffer_dropped_total`),
//!   back-pressure on devices (`wedge_devices_paused_total`, `wedge_devices_paused_now`),
//!   the uplink (`wedge_uplink_connected`, `wedge_uplink_reconnects_total`, `…_skipped_total`,
//!   `…_dropped_inbound_total`, `…_decode_errors_total`), `process_resident_memory_bytes`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use wedge_service::metrics::{self as shared, ProcessCollector};

use crate::buffer::Buffer;
use crate::uplink;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ModuleLabel {
    module: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WhereLabel {
    r#where: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutLabel {
    module: String,
    to: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CallLabel {
    module: String,
    call: &'static str,
}

fn call_histogram() -> Histogram {
    Histogram::new(shared::latency_buckets())
}

/// One module's series.
#[derive(Debug, Clone)]
pub struct ModuleMetrics {
    pub messages_in: Counter,
    pub to_local: Counter,
    pub to_uplink: Counter,
    pub init_seconds: Histogram,
    pub message_seconds: Histogram,
    pub tick_seconds: Histogram,
    pub traps: Counter,
    pub restarts: Counter,
    /// Messages for the module its full queue dropped (see `router`).
    pub dropped: Counter,
}

impl Default for ModuleMetrics {
    /// Series registered nowhere (unit tests of the runtime).
    fn default() -> Self {
        Self {
            messages_in: Counter::default(),
            to_local: Counter::default(),
            to_uplink: Counter::default(),
            init_seconds: call_histogram(),
            message_seconds: call_histogram(),
            tick_seconds: call_histogram(),
            traps: Counter::default(),
            restarts: Counter::default(),
            dropped: Counter::default(),
        }
    }
}

/// The node's registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    messages_in: Family<ModuleLabel, Counter>,
    messages_out: Family<OutLabel, Counter>,
    calls: Family<CallLabel, Histogram, fn() -> Histogram>,
    traps: Family<ModuleLabel, Counter>,
    restarts: Family<ModuleLabel, Counter>,
    dropped: Family<ModuleLabel, Counter>,
    loads: Family<SourceLabel, Counter>,
    compiles: Family<WhereLabel, Counter>,
}

impl Metrics {
    /// `pace` is the devices' pace on the local broker (its holds are a series).
    pub fn new(buffer: Buffer, uplink: Arc<uplink::Counters>, pace: wedge_broker::Pace) -> Self {
        let mut registry = Registry::default();
        let messages_in = Family::<ModuleLabel, Counter>::default();
        let messages_out = Family::<OutLabel, Counter>::default();
        let calls = Family::<CallLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            call_histogram as fn() -> Histogram,
        );
        let traps = Family::<ModuleLabel, Counter>::default();
        let restarts = Family::<ModuleLabel, Counter>::default();
        let dropped = Family::<ModuleLabel, Counter>::default();
        let loads = Family::<SourceLabel, Counter>::default();
        let compiles = Family::<WhereLabel, Counter>::default();
        registry.register(
            "wedge_module_compiles",
            "Modules this node compiled, by where: `child` (a child process, whose memory goes \
             back when it ends) or `in_process`",
            compiles.clone(),
        );
        registry.register(
            "wedge_module_loads",
            "Modules made ready to run, by where their code came from: `cache` (compiled \
             before), `precompiled` (native code from the control plane), `compiled` (here)",
            loads.clone(),
        );
        registry.register(
            "wedge_module_messages_in",
            "Local messages handed to a module",
            messages_in.clone(),
        );
        registry.register(
            "wedge_module_messages_out",
            "Messages a module sent: to the local broker, or to the uplink as telemetry",
            messages_out.clone(),
        );
        registry.register_with_unit(
            "wedge_module_call_duration",
            "Time in one call into a module (init, message, tick)",
            Unit::Seconds,
            calls.clone(),
        );
        registry.register(
            "wedge_module_traps",
            "Calls into a module that trapped (including deadline and memory limits)",
            traps.clone(),
        );
        registry.register(
            "wedge_module_restarts",
            "Fresh instances started after a module failed",
            restarts.clone(),
        );
        registry.register(
            "wedge_module_dropped",
            "Local messages dropped for a module at its full queue: QoS 0 ones, and \
             acknowledged ones the module took nothing for 10 s",
            dropped.clone(),
        );
        registry.register_collector(Box::new(NodeCollector {
            buffer,
            uplink,
            pace,
        }));
        registry.register_collector(Box::new(ProcessCollector));
        Self {
            registry,
            messages_in,
            messages_out,
            calls,
            traps,
            restarts,
            dropped,
            loads,
            compiles,
        }
    }

    /// The count of compiles done `place` (`child`, `in_process`).
    pub fn compiles(&self, place: &str) -> Counter {
        self.compiles.get_or_create_owned(&WhereLabel {
            r#where: place.to_string(),
        })
    }

    /// The count of module loads whose code came from `source`.
    pub fn loads(&self, source: &str) -> Counter {
        self.loads.get_or_create_owned(&SourceLabel {
            source: source.to_string(),
        })
    }

    /// The series of the module named `name` (created on first use).
    pub fn module(&self, name: &str) -> ModuleMetrics {
        let module = || ModuleLabel {
            module: name.to_string(),
        };
        let out = |to| OutLabel {
            module: name.to_string(),
            to,
        };
        let call = |call| CallLabel {
            module: name.to_string(),
            call,
        };
        ModuleMetrics {
            messages_in: self.messages_in.get_or_create_owned(&module()),
            to_local: self.messages_out.get_or_create_owned(&out("local")),
            to_uplink: self.messages_out.get_or_create_owned(&out("uplink")),
            init_seconds: self.calls.get_or_create_owned(&call("init")),
            message_seconds: self.calls.get_or_create_owned(&call("message")),
            tick_seconds: self.calls.get_or_create_owned(&call("tick")),
            traps: self.traps.get_or_create_owned(&module()),
            restarts: self.restarts.get_or_create_owned(&module()),
            dropped: self.dropped.get_or_create_owned(&module()),
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        shared::render(&self.registry)
    }
}

#[derive(Debug)]
struct NodeCollector {
    buffer: Buffer,
    uplink: Arc<uplink::Counters>,
    pace: wedge_broker::Pace,
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let b = self.buffer.status(wedge_proto::now_ms());
        let e = &mut encoder;
        shared::encode_gauge(
            e,
            "wedge_buffer_pending_records",
            "Telemetry records waiting for the control plane's acknowledgement",
            b.pending as f64,
        )?;
        shared::encode_gauge(
            e,
            "wedge_buffer_pending_bytes",
            "Bytes of telemetry waiting",
            b.bytes as f64,
        )?;
        shared::encode_gauge(
            e,
            "wedge_buffer_oldest_age_seconds",
            "Age of the oldest waiting record",
            b.oldest_age_ms as f64 / 1000.0,
        )?;
        shared::encode_gauge(
            e,
            "wedge_buffer_quota_bytes",
            "The buffer's byte quota",
            b.quota_bytes as f64,
        )?;
        shared::encode_gauge(
            e,
            "wedge_buffer_last_seq",
            "Sequence number of the last record buffered",
            self.buffer.last_issued() as f64,
        )?;
        shared::encode_gauge(
            e,
            "wedge_buffer_durable_seq",
            "Every record up to this sequence number is on disk (and may be sent)",
            self.buffer.durable() as f64,
        )?;
        shared::encode_counter(
            e,
            "wedge_buffer_dropped",
            "Records dropped undelivered (full buffer or past their time to live)",
            b.dropped,
        )?;
        shared::encode_counter(
            e,
            "wedge_devices_paused",
            "Times the local broker stopped reading from devices because a module's queue was \
             too full for acknowledged (QoS 1/2) messages",
            self.pace.holds(),
        )?;
        shared::encode_gauge(
            e,
            "wedge_devices_paused_now",
            "1 while the local broker reads nothing from devices (back-pressure)",
            if self.pace.held() { 1.0 } else { 0.0 },
        )?;
        let u = &self.uplink;
        shared::encode_gauge(
            e,
            "wedge_uplink_connected",
            "1 while the session with the control plane's broker is up",
            if u.connected.load(Ordering::Relaxed) {
                1.0
            } else {
                0.0
            },
        )?;
        for (name, help, value) in [
            (
                "wedge_uplink_reconnects",
                "Times the uplink was lost and reconnected",
                &u.reconnects,
            ),
            (
                "wedge_uplink_skipped",
                "Outbound messages skipped because the uplink queue was full (sent again later)",
                &u.skipped_outbound,
            ),
            (
                "wedge_uplink_dropped_inbound",
                "Inbound messages dropped because the agent was behind (repeated later)",
                &u.dropped_inbound,
            ),
            (
                "wedge_uplink_decode_errors",
                "Inbound messages that did not decode",
                &u.decode_errors,
            ),
        ] {
            shared::encode_counter(e, name, help, value.load(Ordering::Relaxed))?;
        }
        Ok(())
    }
}
