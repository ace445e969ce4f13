//! `/api/v1/nodes`: the fleet as the control plane sees it.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use wedge_proto::messages::EventKind;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::Path;
use crate::fleet::{EventRecord, FleetEvent};
use crate::model::{Liveness, NodeRecord};
use crate::store::StoredTelemetry;
use crate::time::rfc3339;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(events))
        .routes(routes!(telemetry))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct TelemetryQuery {
    /// Only this stream.
    stream: Option<String>,
    /// Only records after this `seq` (the node's ingest order; for paging and following).
    #[serde(default)]
    after_seq: u64,
    /// At most this many records (1 to 10,000; default 1,000).
    limit: Option<usize>,
    /// The newest `limit` records instead of the first ones after `after_seq` (still in
    /// sequence order).
    #[serde(default)]
    newest: bool,
}

/// Most records one telemetry query returns.
const MAX_TELEMETRY_LIMIT: usize = 10_000;

/// A stored telemetry record. The payload is JSON when it parses as JSON, otherwise a
/// string when it is UTF-8, otherwise base64 in `payload_base64`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TelemetryView {
    /// The record's place in this node's ingest order at the control plane: 1, 2, 3, …,
    /// increasing across node restarts and re-installs. Page and follow with `after_seq`.
    pub seq: u64,
    /// The node's buffer epoch (16 hex digits): a new one each time the node opens its
    /// store (a restart, a wiped or restored data directory).
    pub epoch: String,
    /// The node's own sequence number of the record within `epoch`.
    pub node_seq: u64,
    pub stream: String,
    pub module: String,
    /// When the module emitted it, by the node's clock.
    pub timestamp: String,
    /// When the control plane stored it, by its clock (retention goes by this).
    pub received: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
}

impl From<StoredTelemetry> for TelemetryView {
    fn from(s: StoredTelemetry) -> Self {
        let r = s.record;
        let (payload, payload_base64) = match serde_json::from_slice(&r.payload) {
            Ok(v) => (Some(v), None),
            Err(_) => match String::from_utf8(r.payload) {
                Ok(s) => (Some(serde_json::Value::String(s)), None),
                Err(e) => {
                    use base64::Engine as _;
                    let b64 = base64::engine::general_purpose::STANDARD.encode(e.as_bytes());
                    (None, Some(b64))
                }
            },
        };
        Self {
            seq: s.seq,
            epoch: format!("{:016x}", s.epoch),
            node_seq: r.seq,
            stream: r.stream,
            module: r.module,
            timestamp: rfc3339(r.ts_ms),
            received: rfc3339(s.received_ms),
            payload,
            payload_base64,
        }
    }
}

/// Stored telemetry of a node, in the order the control plane stored it (`seq`).
#[utoipa::path(get, path = "/{id}/telemetry", tag = "nodes",
    params(("id" = String, Path, description = "node id"), TelemetryQuery),
    responses(
        (status = 200, body = Vec<TelemetryView>),
        (status = 400, description = "bad query", body = ErrorBody),
        (status = 404, description = "no such node", body = ErrorBody),
    ))]
async fn telemetry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<axum::extract::Query<TelemetryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<TelemetryView>>, ApiError> {
    let axum::extract::Query(q) = query?;
    if state.fleet.liveness(&id).is_none() {
        return Err(ApiError::not_found(format!("no node with id {id}")));
    }
    let limit = q.limit.unwrap_or(1000);
    if limit == 0 || limit > MAX_TELEMETRY_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_TELEMETRY_LIMIT}"
        )));
    }
    let store = state.store.clone();
    let records = tokio::task::spawn_blocking(move || {
        if q.newest {
            store.telemetry_newest(&id, q.stream.as_deref(), limit)
        } else {
            store.telemetry(&id, q.stream.as_deref(), q.after_seq, limit)
        }
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(Json(records.into_iter().map(TelemetryView::from).collect()))
}

/// An event as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    /// When it happened (the node's clock for node-reported events).
    pub time: String,
    /// `node_online`, `node_offline`, `node_degraded`, `node_recovered`, `module_started`,
    /// `module_failed`; `module_log` only from nodes of earlier versions (module logs are
    /// now the telemetry stream `$log`).
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// The offline reason, the module's error, or the log line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl From<&EventRecord> for EventView {
    fn from(r: &EventRecord) -> Self {
        let at = |ms| rfc3339(ms);
        match &r.event {
            FleetEvent::Online => Self {
                time: at(r.received_ms),
                kind: "node_online".into(),
                module: None,
                level: None,
                message: None,
            },
            FleetEvent::Offline { reason } => Self {
                time: at(r.received_ms),
                kind: "node_offline".into(),
                module: None,
                level: None,
                message: Some(reason.clone()),
            },
            FleetEvent::Degraded { problems } => Self {
                time: at(r.received_ms),
                kind: "node_degraded".into(),
                module: None,
                level: None,
                message: Some(problems.join("; ")),
            },
            FleetEvent::Recovered => Self {
                time: at(r.received_ms),
                kind: "node_recovered".into(),
                module: None,
                level: None,
                message: None,
            },
            FleetEvent::Node(e) => {
                let (kind, level, message) = match &e.kind {
                    EventKind::ModuleStarted => ("module_started", None, None),
                    EventKind::ModuleFailed { error } => {
                        ("module_failed", None, Some(error.clone()))
                    }
                    EventKind::ModuleLog { level, message } => {
                        ("module_log", Some(level.clone()), Some(message.clone()))
                    }
                };
                Self {
                    time: at(e.ts_ms),
                    kind: kind.into(),
                    module: e.module.clone(),
                    level,
                    message,
                }
            }
        }
    }
}

/// The node's recent events (status changes, module starts, failures, logs), oldest first.
#[utoipa::path(get, path = "/{id}/events", tag = "nodes",
    params(("id" = String, Path, description = "node id")),
    responses(
        (status = 200, body = Vec<EventView>),
        (status = 404, description = "no such node", body = ErrorBody),
    ))]
async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<EventView>>, ApiError> {
    state
        .fleet
        .events(&id)
        .map(|events| Json(events.iter().map(EventView::from).collect()))
        .ok_or_else(|| ApiError::not_found(format!("no node with id {id}")))
}

/// A node as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NodeView {
    pub id: String,
    /// `online`, `degraded` (online, something wrong) or `offline`.
    pub status: String,
    /// What is wrong, while degraded.
    pub problems: Vec<String>,
    /// Why it is offline, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it entered its current status.
    pub since: String,
    pub first_seen: String,
    pub last_seen: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub arch: String,
    pub version: String,
    pub desired_generation: u64,
    pub applied_generation: u64,
    pub modules: Vec<ModuleStateView>,
    /// The node's telemetry backlog: `pending` records, `bytes`, `oldest_age_ms`, `dropped`.
    pub telemetry: wedge_proto::messages::BufferStatus,
    /// Disk (of the node's data directory) and memory, in bytes; 0 when unknown.
    pub resources: wedge_proto::messages::Resources,
}

/// A module instance on a node.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModuleStateView {
    pub name: String,
    pub digest: String,
    /// `fetching`, `compiling`, `starting`, `running` or `failed`.
    pub state: String,
    pub last_error: Option<String>,
    pub restarts: u32,
    /// Counters since the node started the instance: `messages`, `errors`, `dropped`,
    /// `published`, `refused`, `emitted`.
    pub stats: wedge_proto::messages::ModuleStats,
}

impl From<&NodeRecord> for NodeView {
    fn from(n: &NodeRecord) -> Self {
        Self {
            id: n.id.clone(),
            status: n.health().into(),
            reason: match n.health() {
                "degraded" => Some(n.problems.join("; ")),
                _ => n.reason.clone(),
            },
            problems: if n.liveness == Liveness::Online {
                n.problems.clone()
            } else {
                Vec::new()
            },
            since: rfc3339(match n.liveness {
                Liveness::Online => n.since_ms.max(n.problems_since_ms),
                Liveness::Offline => n.since_ms,
            }),
            first_seen: rfc3339(n.first_seen_ms),
            last_seen: (n.last_seen_ms > 0).then(|| rfc3339(n.last_seen_ms)),
            labels: n.labels.clone(),
            arch: n.arch.clone(),
            version: n.version.clone(),
            desired_generation: n.desired_generation,
            applied_generation: n.applied_generation,
            telemetry: n.buffer.clone(),
            resources: n.resources.clone(),
            modules: n
                .modules
                .iter()
                .map(|m| ModuleStateView {
                    name: m.name.clone(),
                    digest: m.digest.to_string(),
                    state: m.state.as_str().into(),
                    last_error: m.last_error.clone(),
                    restarts: m.restarts,
                    stats: m.stats.clone(),
                })
                .collect(),
        }
    }
}

/// Every node. The array is assembled from each node's cached rendering.
#[utoipa::path(get, path = "/", tag = "nodes",
    responses((status = 200, body = Vec<NodeView>)))]
async fn list(State(state): State<AppState>) -> impl IntoResponse {
    let parts = state.fleet.rendered(|n| {
        // A view of our own record types always serializes.
        serde_json::to_vec(&NodeView::from(n)).unwrap_or_else(|_| b"null".to_vec())
    });
    let mut body = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum::<usize>() + 2);
    body.push(b'[');
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(part);
    }
    body.push(b']');
    ([(header::CONTENT_TYPE, "application/json")], body)
}

/// One node.
#[utoipa::path(get, path = "/{id}", tag = "nodes",
    params(("id" = String, Path, description = "node id")),
    responses(
        (status = 200, body = NodeView),
        (status = 404, description = "no such node", body = ErrorBody),
    ))]
async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<NodeView>, ApiError> {
    state
        .fleet
        .get(&id)
        .map(|n| Json(NodeView::from(&n)))
        .ok_or_else(|| ApiError::not_found(format!("no node with id {id}")))
}
