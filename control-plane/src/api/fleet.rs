//! `/api/v1/fleet`: what is wrong with the fleet right now, and since when, in one answer.

use std::collections::{BTreeMap, HashMap};

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wedge_proto::Digest;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use crate::link::Counters;
use crate::time::rfc3339;

/// Problems listed, at most.
const TOP_PROBLEMS: usize = 20;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(summary))
}

/// The fleet summary.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FleetView {
    /// Nodes by status: `total`, `online`, `degraded`, `offline`.
    pub nodes: BTreeMap<String, u64>,
    pub deployments: Vec<DeploymentHealth>,
    /// Degraded and offline nodes, the longest-standing first.
    pub problems: Vec<Problem>,
    /// What the control plane has taken in since it started.
    pub ingest: Ingest,
}

/// Counters of the control plane's MQTT session since it started.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Ingest {
    pub heartbeats: u64,
    pub telemetry_records: u64,
    pub telemetry_duplicates: u64,
    /// Messages dropped because the inbound queue was full (senders retry).
    pub dropped_inbound: u64,
    pub decode_errors: u64,
    /// Messages refused for claiming another node's identity.
    pub impersonation: u64,
}

impl From<&Counters> for Ingest {
    fn from(c: &Counters) -> Self {
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        Self {
            heartbeats: get(&c.heartbeats),
            telemetry_records: get(&c.telemetry_stored),
            telemetry_duplicates: get(&c.telemetry_duplicates),
            dropped_inbound: get(&c.dropped_inbound),
            decode_errors: get(&c.decode_errors),
            impersonation: get(&c.impersonation),
        }
    }
}

/// How one deployment's current revision is doing across the nodes that report it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeploymentHealth {
    pub name: String,
    pub revision: u64,
    pub module: String,
    /// The rollout phase of the latest revision.
    pub phase: String,
    /// Node counts by the revision they are told to run.
    pub revisions: BTreeMap<String, u64>,
    /// Node counts by the state of the latest revision's module (`running`, `failed`,
    /// `fetching`, `compiling`, `starting`).
    pub states: BTreeMap<String, u64>,
}

/// A node that needs attention.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    pub node: String,
    pub status: String,
    pub reasons: Vec<String>,
    pub since: String,
}

/// The fleet in one answer: nodes by status, deployments by revision and module state, the
/// longest-standing problems, ingest counters.
#[utoipa::path(get, path = "/", tag = "fleet",
    responses((status = 200, body = FleetView), (status = 500, body = ErrorBody)))]
async fn summary(State(state): State<AppState>) -> Result<Json<FleetView>, ApiError> {
    let mut counts: BTreeMap<String, u64> = ["total", "online", "degraded", "offline"]
        .into_iter()
        .map(|k| (k.to_string(), 0))
        .collect();
    let mut problems = Vec::new();
    // Module states by (instance name, digest), counted in the same pass.
    let mut module_states: HashMap<(String, Digest), BTreeMap<String, u64>> = HashMap::new();
    state.fleet.for_each(|n| {
        *counts.entry("total".into()).or_default() += 1;
        let status = n.health();
        *counts.entry(status.into()).or_default() += 1;
        for m in &n.modules {
            *module_states
                .entry((m.name.clone(), m.digest))
                .or_default()
                .entry(m.state.as_str().to_string())
                .or_default() += 1;
        }
        match status {
            "degraded" => problems.push((
                n.problems_since_ms,
                Problem {
                    node: n.id.clone(),
                    status: status.into(),
                    reasons: n.problems.clone(),
                    since: rfc3339(n.problems_since_ms),
                },
            )),
            "offline" => problems.push((
                n.since_ms,
                Problem {
                    node: n.id.clone(),
                    status: status.into(),
                    reasons: n.reason.iter().cloned().collect(),
                    since: rfc3339(n.since_ms),
                },
            )),
            _ => {}
        }
    });
    problems.sort_by_key(|(since, _)| *since);
    let mut deployments: Vec<DeploymentHealth> = state
        .store
        .deployments()?
        .into_iter()
        .map(|d| {
            let states = module_states
                .remove(&(d.name.clone(), d.module.digest))
                .unwrap_or_default();
            let (phase, revisions) = state
                .rollouts
                .plans()
                .with(&d.name, |p| {
                    let mut revisions = BTreeMap::new();
                    for rev in p.rollout.assigned.values() {
                        *revisions.entry(rev.to_string()).or_default() += 1;
                    }
                    (p.rollout.phase.as_str(), revisions)
                })
                .unwrap_or(("unknown", BTreeMap::new()));
            DeploymentHealth {
                name: d.name,
                revision: d.revision,
                module: format!("{}@{}", d.module.name, d.module.version),
                phase: phase.into(),
                revisions,
                states,
            }
        })
        .collect();
    deployments.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(FleetView {
        nodes: counts,
        deployments,
        problems: problems
            .into_iter()
            .take(TOP_PROBLEMS)
            .map(|(_, p)| p)
            .collect(),
        ingest: Ingest::from(&*state.counters),
    }))
}
