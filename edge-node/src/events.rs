//! Events for operators: module log lines, starts and failures, sent up the uplink.
//!
//! Producers (module threads, the host's `log`) never wait: events go over a bounded queue
//! with `try_send`, and a full queue drops the event and counts it. A forwarder task
//! publishes them on `wedge/v1/nodes/{id}/events`. They are best effort: while the uplink
//! is down they are dropped (counted), unlike telemetry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wedge_proto::messages::{EventKind, NodeEvent};

use crate::uplink::UplinkClient;

/// Events waiting for the forwarder.
const QUEUE: usize = 1024;

/// Where events are sent from. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: mpsc::Sender<NodeEvent>,
    dropped: Arc<AtomicU64>,
}

impl EventSink {
    /// A sink and the receiver its events arrive on.
    pub fn new() -> (Self, mpsc::Receiver<NodeEvent>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (
            Self {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            rx,
        )
    }

    pub fn send(&self, module: Option<&str>, kind: EventKind) {
        let event = NodeEvent {
            ts_ms: wedge_proto::now_ms(),
            module: module.map(str::to_string),
            kind,
        };
        if self.tx.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Publishes events until `shutdown` (or until every sink is gone).
pub async fn forward(
    mut rx: mpsc::Receiver<NodeEvent>,
    uplink: UplinkClient,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = rx.recv() => event,
        };
        let Some(event) = event else { return };
        uplink.event(&event);
    }
}
