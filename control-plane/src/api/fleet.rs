//! `/api/v1/fleet`: what is wrong with the fleet right now, and since when, in one answer.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use super::nodes::health;
use crate::time::rfc3339;

/// Problems listed, at most.
const TOP_PROBLEMS: usize = 20;

pub fn routes() -> Router<AppState> {
    Router::new().route("/", get(summary))
}

/// The fleet summary.
#[derive(Debug, Serialize, Deserialize)]
pub struct FleetView {
    /// Nodes by status: `total`, `online`, `degraded`, `offline`.
    pub nodes: BTreeMap<String, u64>,
    pub deployments: Vec<DeploymentHealth>,
    /// Degraded and offline nodes, the longest-standing first.
    pub problems: Vec<Problem>,
}

/// How one deployment's current revision is doing across the nodes that report it.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeploymentHealth {
    pub name: String,
    pub revision: u64,
    pub module: String,
    /// Node counts by module state (`running`, `failed`, `fetching`, `starting`).
    pub states: BTreeMap<String, u64>,
}

/// A node that needs attention.
#[derive(Debug, Serialize, Deserialize)]
pub struct Problem {
    pub node: String,
    pub status: String,
    pub reasons: Vec<String>,
    pub since: String,
}

async fn summary(State(state): State<AppState>) -> Result<Json<FleetView>, ApiError> {
    let nodes = state.fleet.list();
    let mut counts: BTreeMap<String, u64> = ["total", "online", "degraded", "offline"]
        .into_iter()
        .map(|k| (k.to_string(), 0))
        .collect();
    let mut problems = Vec::new();
    for n in &nodes {
        *counts.entry("total".into()).or_default() += 1;
        let status = health(n);
        *counts.entry(status.into()).or_default() += 1;
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
    }
    problems.sort_by_key(|(since, _)| *since);
    let mut deployments: Vec<DeploymentHealth> = state
        .store
        .deployments()?
        .into_iter()
        .map(|d| {
            let mut states = BTreeMap::new();
            for n in &nodes {
                for m in n
                    .modules
                    .iter()
                    .filter(|m| m.name == d.name && m.digest == d.module.digest)
                {
                    *states.entry(m.state.as_str().to_string()).or_default() += 1;
                }
            }
            DeploymentHealth {
                name: d.name,
                revision: d.revision,
                module: format!("{}@{}", d.module.name, d.module.version),
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
    }))
}
