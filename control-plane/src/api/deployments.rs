//! `/api/v1/deployments`: put a module on a set of nodes.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wedge_proto::Digest;
use wedge_proto::messages::Limits;
use wedge_proto::rules;
use wedge_proto::topics::{validate_filter, validate_id};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::Path;
use super::modules::ModuleView;
use crate::fleet::Fleet;
use crate::model::{DeploymentRecord, Liveness, ModuleRecord, Target};
use crate::rollout::Control;
use crate::rollout::plan::{NodeState, Phase, Rollout};
use crate::rollout::strategy::Strategy;
use crate::time::{now_ms, rfc3339};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(abort))
}

/// `POST /api/v1/deployments` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentRequest {
    pub name: String,
    /// `sha256:<hex>` or `name@version`.
    pub module: String,
    #[serde(default)]
    pub nodes: Option<Vec<String>>,
    #[serde(default)]
    pub selector: Option<Selector>,
    #[serde(default)]
    pub subscriptions: Vec<String>,
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    /// Topic prefixes the module may publish to; absent or empty: any non-reserved topic.
    #[serde(default)]
    pub publish_prefixes: Vec<String>,
    /// Period of the module's `on-tick`, milliseconds (at least 10).
    #[serde(default)]
    pub tick_ms: Option<u64>,
    #[serde(default)]
    pub limits: Option<LimitsView>,
    /// How the revision spreads; absent: every node at once, no automatic rollback.
    #[serde(default)]
    pub strategy: Option<Strategy>,
}

/// Per-module sandbox limits; absent fields take the node's defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_per_sec: Option<u32>,
}

impl From<&LimitsView> for Limits {
    fn from(l: &LimitsView) -> Self {
        Self {
            memory_bytes: l.memory_bytes,
            call_timeout_ms: l.call_timeout_ms,
            kv_bytes: l.kv_bytes,
            publish_per_sec: l.publish_per_sec,
        }
    }
}

impl From<&Limits> for LimitsView {
    fn from(l: &Limits) -> Self {
        Self {
            memory_bytes: l.memory_bytes,
            call_timeout_ms: l.call_timeout_ms,
            kv_bytes: l.kv_bytes,
            publish_per_sec: l.publish_per_sec,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    pub labels: BTreeMap<String, String>,
}

/// A deployment as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeploymentView {
    pub name: String,
    pub revision: u64,
    pub module: ModuleView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
    pub subscriptions: Vec<String>,
    pub config: serde_json::Value,
    pub publish_prefixes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tick_ms: Option<u64>,
    pub limits: LimitsView,
    pub strategy: Strategy,
    pub created_at: String,
    /// The rollout of the latest revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutView>,
}

/// Where a rollout stands.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RolloutView {
    pub revision: u64,
    /// The revision nodes return to that a reader can name: the last completed one, or,
    /// once an unfinished rollout was superseded, the healthy revision most nodes share.
    /// Absent only while nothing can be returned to (a deployment's first rollout). On a
    /// rollback each node returns to its own healthy revision (`nodes[].revision`).
    pub stable_revision: Option<u64>,
    /// `canary`, `batches`, `complete`, `rolled_back` or `aborted`.
    pub phase: String,
    pub paused: bool,
    /// Why it rolled back or was aborted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub started_at: String,
    pub phase_since: String,
    /// Targeted nodes by rollout state (`pending`, `updating`, `baking`, `healthy`,
    /// `failed`, `rolled_back`), plus `total` and `offline`.
    pub counts: BTreeMap<String, usize>,
    /// Per node (on `GET /api/v1/deployments/{name}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<NodeRolloutView>>,
    /// Earlier rollouts of this deployment, oldest first.
    pub history: Vec<OutcomeView>,
}

/// One node in a rollout.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NodeRolloutView {
    pub node: String,
    pub state: String,
    /// The revision the node is told to run.
    pub revision: Option<u64>,
    pub online: bool,
    pub since: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How an earlier rollout ended.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OutcomeView {
    pub revision: u64,
    pub phase: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub ended_at: String,
}

const NODE_STATES: [NodeState; 6] = [
    NodeState::Pending,
    NodeState::Updating,
    NodeState::Baking,
    NodeState::Healthy,
    NodeState::Failed,
    NodeState::RolledBack,
];

fn rollout_view(r: &Rollout, fleet: &Fleet, with_nodes: bool) -> RolloutView {
    let mut counts: BTreeMap<String, usize> = NODE_STATES
        .iter()
        .map(|s| (s.as_str().to_string(), 0))
        .collect();
    for (state, n) in r.counts() {
        counts.insert(state.as_str().to_string(), n);
    }
    let mut offline = 0;
    let mut nodes = Vec::new();
    for (id, p) in &r.nodes {
        let online = fleet.liveness(id) == Some(Liveness::Online);
        offline += usize::from(!online);
        if with_nodes {
            nodes.push(NodeRolloutView {
                node: id.clone(),
                state: p.state.as_str().into(),
                revision: r.assigned.get(id).copied(),
                online,
                since: rfc3339(p.since_ms),
                error: p.error.clone(),
            });
        }
    }
    counts.insert("total".into(), r.nodes.len());
    counts.insert("offline".into(), offline);
    RolloutView {
        revision: r.revision,
        stable_revision: r.stable,
        phase: r.phase.as_str().into(),
        paused: r.paused,
        reason: r.reason.clone(),
        started_at: rfc3339(r.started_ms),
        phase_since: rfc3339(r.phase_since_ms),
        counts,
        nodes: with_nodes.then_some(nodes),
        history: r
            .history
            .iter()
            .map(|o| OutcomeView {
                revision: o.revision,
                phase: o.phase.as_str().into(),
                reason: o.reason.clone(),
                ended_at: rfc3339(o.ended_ms),
            })
            .collect(),
    }
}

impl DeploymentView {
    fn with_rollout(mut self, state: &AppState, with_nodes: bool) -> Self {
        self.rollout = state.rollouts.plans().with(&self.name, |p| {
            rollout_view(&p.rollout, &state.fleet, with_nodes)
        });
        self
    }
}

impl From<&DeploymentRecord> for DeploymentView {
    fn from(d: &DeploymentRecord) -> Self {
        let (nodes, selector) = match &d.target {
            Target::Nodes(ids) => (Some(ids.clone()), None),
            Target::Labels(labels) => (
                None,
                Some(Selector {
                    labels: labels.clone(),
                }),
            ),
        };
        Self {
            name: d.name.clone(),
            revision: d.revision,
            module: ModuleView::from(&d.module),
            nodes,
            selector,
            subscriptions: d.subscriptions.clone(),
            // Stored from a serde_json::Value, so it parses; fall back to the raw text.
            config: serde_json::from_str(&d.config)
                .unwrap_or_else(|_| serde_json::Value::String(d.config.clone())),
            publish_prefixes: d.publish_prefixes.clone(),
            tick_ms: d.tick_ms,
            limits: LimitsView::from(&d.limits),
            strategy: d.strategy.clone(),
            created_at: rfc3339(d.created_at_ms),
            rollout: None,
        }
    }
}

/// Every deployment at its latest revision, with its rollout's counts (no per-node detail).
#[utoipa::path(get, path = "/", tag = "deployments",
    responses((status = 200, body = Vec<DeploymentView>), (status = 500, body = ErrorBody)))]
async fn list(State(state): State<AppState>) -> Result<Json<Vec<DeploymentView>>, ApiError> {
    let mut all = state.store.deployments()?;
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(
        all.iter()
            .map(|d| DeploymentView::from(d).with_rollout(&state, false))
            .collect(),
    ))
}

/// A deployment at its latest revision, with its rollout node by node.
#[utoipa::path(get, path = "/{name}", tag = "deployments", params(("name" = String, Path, description = "deployment name")),
    responses(
        (status = 200, body = DeploymentView),
        (status = 404, description = "no such deployment", body = ErrorBody),
    ))]
async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<DeploymentView>, ApiError> {
    let d = state
        .store
        .deployment(&name)?
        .ok_or_else(|| ApiError::not_found(format!("no deployment named {name}")))?;
    Ok(Json(DeploymentView::from(&d).with_rollout(&state, true)))
}

/// Pauses the rollout in progress: nodes keep what they run, no new batch starts.
#[utoipa::path(post, path = "/{name}/pause", tag = "deployments", params(("name" = String, Path, description = "deployment name")),
    responses(
        (status = 200, body = DeploymentView),
        (status = 404, description = "no such deployment", body = ErrorBody),
        (status = 409, description = "no rollout in progress", body = ErrorBody),
    ))]
async fn pause(
    state: State<AppState>,
    name: Path<String>,
) -> Result<Json<DeploymentView>, ApiError> {
    control(state, name, Control::Pause).await
}

/// Resumes a paused rollout.
#[utoipa::path(post, path = "/{name}/resume", tag = "deployments", params(("name" = String, Path, description = "deployment name")),
    responses(
        (status = 200, body = DeploymentView),
        (status = 404, description = "no such deployment", body = ErrorBody),
        (status = 409, description = "no rollout in progress", body = ErrorBody),
    ))]
async fn resume(
    state: State<AppState>,
    name: Path<String>,
) -> Result<Json<DeploymentView>, ApiError> {
    control(state, name, Control::Resume).await
}

/// Stops the rollout in progress and sends every node back to the healthy revision it ran
/// before.
#[utoipa::path(post, path = "/{name}/abort", tag = "deployments", params(("name" = String, Path, description = "deployment name")),
    responses(
        (status = 200, body = DeploymentView),
        (status = 404, description = "no such deployment", body = ErrorBody),
        (status = 409, description = "no rollout in progress", body = ErrorBody),
    ))]
async fn abort(
    state: State<AppState>,
    name: Path<String>,
) -> Result<Json<DeploymentView>, ApiError> {
    control(state, name, Control::Abort).await
}

async fn control(
    State(state): State<AppState>,
    Path(name): Path<String>,
    control: Control,
) -> Result<Json<DeploymentView>, ApiError> {
    state.rollouts.control(&name, control).await?;
    show(State(state), Path(name)).await
}

fn resolve_module(state: &AppState, reference: &str) -> Result<ModuleRecord, ApiError> {
    if reference.starts_with("sha256:") {
        let digest: Digest = reference
            .parse()
            .map_err(|e| ApiError::bad_request(format!("module: {e}")))?;
        return state
            .store
            .module_by_digest(&digest)?
            .ok_or_else(|| ApiError::bad_request(format!("no module with digest {digest}")));
    }
    let Some((name, version)) = reference.split_once('@') else {
        return Err(ApiError::bad_request(
            "module must be \"sha256:<hex>\" or \"name@version\"",
        ));
    };
    state.store.module(name, version)?.ok_or_else(|| {
        ApiError::bad_request(format!("no module {name}@{version}; upload it first"))
    })
}

/// Checks a request on its own (no store needed): names, filters, prefixes, limits, strategy,
/// target. Public for the fuzz target `deployment` (tests/fuzz).
pub fn validate(req: &DeploymentRequest) -> Result<Target, ApiError> {
    validate_id(&req.name).map_err(|e| ApiError::bad_request(format!("name {e}")))?;
    for filter in &req.subscriptions {
        validate_filter(filter)
            .map_err(|e| ApiError::bad_request(format!("subscription {filter:?}: {e}")))?;
    }
    for prefix in &req.publish_prefixes {
        rules::check_publish_prefix(prefix).map_err(ApiError::bad_request)?;
    }
    if req.tick_ms.is_some_and(|t| t < rules::MIN_TICK_MS) {
        return Err(ApiError::bad_request(format!(
            "tick_ms must be at least {}",
            rules::MIN_TICK_MS
        )));
    }
    if let Some(strategy) = &req.strategy {
        strategy.validate().map_err(ApiError::bad_request)?;
    }
    if let Some(l) = &req.limits {
        Limits::from(l).validate().map_err(ApiError::bad_request)?;
    }
    match (&req.nodes, &req.selector) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "give either \"nodes\" or \"selector\", not both",
        )),
        (None, None) => Err(ApiError::bad_request(
            "give \"nodes\" (a list of node ids) or \"selector\" ({\"labels\": {...}})",
        )),
        (Some(nodes), None) => {
            for id in nodes {
                validate_id(id)
                    .map_err(|e| ApiError::bad_request(format!("node id {id:?} {e}")))?;
            }
            Ok(Target::Nodes(nodes.clone()))
        }
        (None, Some(sel)) => Ok(Target::Labels(sel.labels.clone())),
    }
}

/// Creates a deployment, or the next revision of one with that name, and rolls it out with
/// its strategy. Posting the latest revision's spec again changes nothing (200), unless that
/// revision's rollout was aborted or rolled back: then it is tried again as a new revision.
#[utoipa::path(post, path = "/", tag = "deployments",
    request_body = DeploymentRequest,
    responses(
        (status = 201, description = "a new revision", body = DeploymentView),
        (status = 200, description = "the same as the latest revision; nothing changed", body = DeploymentView),
        (status = 400, description = "invalid deployment, or its module is not uploaded", body = ErrorBody),
    ))]
async fn create(
    State(state): State<AppState>,
    body: Result<Json<DeploymentRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<DeploymentView>), ApiError> {
    let Json(req) = body?;
    let target = validate(&req)?;
    let module = resolve_module(&state, &req.module)?;
    let config = req
        .config
        .clone()
        .unwrap_or_else(|| serde_json::Value::Object(Default::default()))
        .to_string();
    // Read the latest revision, number the next, store and deploy it as one step.
    let _posting = state.rollouts.posting().await;
    let previous = state.store.deployment(&req.name)?;
    let revision = previous.as_ref().map_or(1, |d| d.revision + 1);
    let mut record = DeploymentRecord {
        name: req.name,
        revision,
        module,
        target,
        subscriptions: req.subscriptions,
        config,
        publish_prefixes: req.publish_prefixes,
        tick_ms: req.tick_ms,
        limits: req.limits.as_ref().map(Limits::from).unwrap_or_default(),
        strategy: req.strategy.unwrap_or_default(),
        created_at_ms: now_ms(),
    };
    if let Some(prev) = previous {
        // Like `kubectl apply`: the same spec again is not a new revision, unless the
        // operator is retrying one that was stopped.
        let (revision, created_at_ms) = (record.revision, record.created_at_ms);
        record.revision = prev.revision;
        record.created_at_ms = prev.created_at_ms;
        let stopped = state
            .rollouts
            .plans()
            .with(&prev.name, |p| {
                matches!(p.rollout.phase, Phase::Aborted | Phase::RolledBack)
            })
            .unwrap_or(false);
        if record == prev && !stopped {
            let view = DeploymentView::from(&prev).with_rollout(&state, true);
            return Ok((StatusCode::OK, Json(view)));
        }
        record.revision = revision;
        record.created_at_ms = created_at_ms;
    }
    check_desired_size(&state, &record)?;
    state.store.put_deployment(&record)?;
    tracing::info!(deployment = %record.name, revision, module = %record.module.digest, "deployment created");
    let view = DeploymentView::from(&record);
    state.rollouts.deploy(record).await?;
    Ok((StatusCode::CREATED, Json(view.with_rollout(&state, true))))
}

/// Refuses a revision that would make some node's desired state larger than one MQTT
/// message: it could never be delivered, and the control plane's broker session would end
/// on every try. Checked against the module alone (any future node) and against every node
/// the revision targets now, with the modules of its other deployments.
fn check_desired_size(state: &AppState, record: &DeploymentRecord) -> Result<(), ApiError> {
    use wedge_proto::messages::{DesiredState, ModuleSpec};
    let limit = state.max_desired_bytes;
    let new = crate::desired::spec(record);
    let size = |modules: Vec<ModuleSpec>| {
        wedge_proto::encode(&DesiredState {
            generation: u64::MAX,
            modules,
        })
        .len()
    };
    let too_large = |what: String, bytes: usize| {
        ApiError::bad_request(format!(
            "deployment {}: {what} would be {bytes} bytes, over the MQTT message limit of \
             {limit} bytes (mqtt_max_payload); make its config smaller",
            record.name
        ))
    };
    let alone = size(vec![new.clone()]);
    if alone > limit {
        return Err(too_large("its desired state".into(), alone));
    }
    let targeted: Vec<String> = match &record.target {
        Target::Nodes(ids) => ids.clone(),
        Target::Labels(_) => {
            let mut ids = Vec::new();
            state.fleet.for_each(|n| {
                if record.target.selects(&n.id, &n.labels) {
                    ids.push(n.id.clone());
                }
            });
            ids
        }
    };
    let plans = state.rollouts.plans();
    for id in targeted {
        let mut modules = plans.modules_for(&id);
        modules.retain(|m| m.name != record.name);
        modules.push(new.clone());
        let bytes = size(modules);
        if bytes > limit {
            return Err(too_large(
                format!("the desired state of node {id} (with its other deployments)"),
                bytes,
            ));
        }
    }
    Ok(())
}
