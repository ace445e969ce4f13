//! The control plane's Prometheus series, served at `/metrics`.
//!
//! - Read when scraped (a [`Collector`] over the same state the API shows, so the two never
//!   disagree): `wedge_nodes{status}`, `wedge_rollouts{phase}`, the MQTT session's counters
//!   (heartbeats, telemetry records stored / duplicate / lost, acks sent, decode errors,
//!   refused impersonation), `process_resident_memory_bytes`.
//! - Recorded as it happens: `wedge_api_request_duration_seconds{method,route,status}`,
//!   labelled by the route *template* (`/api/v1/nodes/{id}`), never the raw path, so a
//!   scanner trying random URLs cannot create unbounded series (they all count as
//!   `unmatched`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use wedge_service::metrics::{self as shared, ProcessCollector};

use crate::fleet::Fleet;
use crate::link::Counters;
use crate::rollout::RolloutEngine;
use crate::store::Store;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Route {
    method: String,
    route: String,
    status: u16,
}

fn api_histogram() -> Histogram {
    Histogram::new(shared::latency_buckets())
}

/// The registry and the series recorded as things happen.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    api: Family<Route, Histogram, fn() -> Histogram>,
}

impl Metrics {
    pub fn new(
        fleet: Arc<Fleet>,
        store: Store,
        rollouts: Arc<RolloutEngine>,
        counters: Arc<Counters>,
    ) -> Self {
        let mut registry = Registry::default();
        let api = Family::<Route, Histogram, fn() -> Histogram>::new_with_constructor(
            api_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "wedge_api_request_duration",
            "HTTP API requests by method, route template and status",
            prometheus_client::registry::Unit::Seconds,
            api.clone(),
        );
        registry.register_collector(Box::new(FleetCollector {
            fleet,
            store,
            rollouts,
            counters,
        }));
        registry.register_collector(Box::new(ProcessCollector));
        Self { registry, api }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        shared::render(&self.registry)
    }
}

/// Times every request (an axum middleware, outermost, so refusals count too).
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    // Any token is a valid HTTP method: a client could otherwise create a series per
    // request.
    let method = match req.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS") => m,
        _ => "other",
    }
    .to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let response = next.run(req).await;
    metrics
        .api
        .get_or_create(&Route {
            method,
            route,
            status: response.status().as_u16(),
        })
        .observe(started.elapsed().as_secs_f64());
    response
}

#[derive(Debug)]
struct FleetCollector {
    fleet: Arc<Fleet>,
    store: Store,
    rollouts: Arc<RolloutEngine>,
    counters: Arc<Counters>,
}

impl Collector for FleetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut by_status = [("online", 0i64), ("degraded", 0), ("offline", 0)];
        self.fleet.for_each(|n| {
            let status = n.health();
            if let Some(slot) = by_status.iter_mut().find(|(s, _)| *s == status) {
                slot.1 += 1;
            }
        });
        let by_status: Vec<(String, i64)> =
            by_status.iter().map(|(s, n)| (s.to_string(), *n)).collect();
        shared::encode_labelled(
            &mut encoder,
            "wedge_nodes",
            "Nodes by status (online, degraded, offline)",
            "status",
            &by_status,
        )?;

        let mut by_phase: Vec<(String, i64)> = Vec::new();
        // A store that cannot be read shows no rollouts; /readyz reports the store itself.
        for d in self.store.deployments().unwrap_or_default() {
            let phase = self
                .rollouts
                .plans()
                .with(&d.name, |p| p.rollout.phase.as_str())
                .unwrap_or("unknown");
            match by_phase.iter_mut().find(|(p, _)| p == phase) {
                Some(slot) => slot.1 += 1,
                None => by_phase.push((phase.to_string(), 1)),
            }
        }
        by_phase.sort();
        shared::encode_labelled(
            &mut encoder,
            "wedge_rollouts",
            "Deployments by the phase of their current rollout",
            "phase",
            &by_phase,
        )?;

        let c = &self.counters;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        for (name, help, value) in [
            (
                "wedge_heartbeats",
                "Live heartbeats processed",
                get(&c.heartbeats),
            ),
            (
                "wedge_telemetry_records_stored",
                "Telemetry records stored (the ingest rate is its rate())",
                get(&c.telemetry_stored),
            ),
            (
                "wedge_telemetry_records_duplicate",
                "Telemetry records received again and not stored twice",
                get(&c.telemetry_duplicates),
            ),
            (
                "wedge_telemetry_records_lost",
                "Telemetry records nodes reported lost (dropped from a full buffer or expired)",
                get(&c.telemetry_lost),
            ),
            (
                "wedge_telemetry_acks",
                "Telemetry acknowledgements sent to nodes",
                get(&c.telemetry_acks),
            ),
            (
                "wedge_mqtt_decode_errors",
                "Messages from nodes that did not decode",
                get(&c.decode_errors),
            ),
            (
                "wedge_mqtt_dropped_inbound",
                "Messages from nodes dropped because the control plane was behind",
                get(&c.dropped_inbound),
            ),
            (
                "wedge_mqtt_impersonation",
                "Messages that claimed another node's id",
                get(&c.impersonation),
            ),
            (
                "wedge_mqtt_connects",
                "Times the control plane's own session connected to its broker",
                get(&c.connects),
            ),
        ] {
            shared::encode_counter(&mut encoder, name, help, value)?;
        }
        Ok(())
    }
}
