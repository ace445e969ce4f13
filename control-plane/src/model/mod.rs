//! The control plane's domain records: what is stored, served by the API and reasoned
//! about by the fleet, rollout and reconcile rooms. Plain data with serde; the rules that
//! change them live in those rooms, the persistence in [`crate::store`].
//!
//! - records of modules, deployments, nodes and desired states (here);
//! - [`strategy`]: how a deployment rolls out (canary, batches, bake, failure ratio);
//! - [`rollout`]: one deployment's rollout as stored (its transitions: `crate::rollout::plan`).

pub mod rollout;
pub mod strategy;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wedge_proto::Digest;
use wedge_proto::messages::{ModuleSpec, ModuleStatus};

pub use rollout::Rollout;
pub use strategy::Strategy;

/// An uploaded module.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleRecord {
    pub name: String,
    pub version: String,
    pub digest: Digest,
    pub size: u64,
    pub uploaded_at_ms: u64,
    /// The publisher's signature, verified at upload.
    #[serde(default)]
    pub signature: Option<wedge_proto::signing::ModuleSignature>,
}

/// Which nodes a deployment targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// These node ids.
    Nodes(Vec<String>),
    /// Every node whose labels include all of these.
    Labels(BTreeMap<String, String>),
}

impl Target {
    /// Whether a node with this id and these labels is targeted.
    pub fn selects(&self, node_id: &str, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Self::Nodes(ids) => ids.iter().any(|id| id == node_id),
            Self::Labels(want) => want.iter().all(|(k, v)| labels.get(k) == Some(v)),
        }
    }
}

/// A module deployed, under a name, to a set of nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub name: String,
    /// Increases each time a deployment with this name is posted.
    pub revision: u64,
    pub module: ModuleRecord,
    pub target: Target,
    pub subscriptions: Vec<String>,
    /// The module's configuration as JSON text.
    pub config: String,
    #[serde(default)]
    pub publish_prefixes: Vec<String>,
    #[serde(default)]
    pub tick_ms: Option<u64>,
    #[serde(default)]
    pub limits: wedge_proto::messages::Limits,
    #[serde(default)]
    pub strategy: Strategy,
    pub created_at_ms: u64,
}

/// Whether a node is reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    Online,
    Offline,
}

/// What the control plane knows about a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    pub liveness: Liveness,
    /// Why it is offline, when it is.
    pub reason: Option<String>,
    pub since_ms: u64,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub labels: BTreeMap<String, String>,
    pub arch: String,
    pub version: String,
    pub desired_generation: u64,
    pub applied_generation: u64,
    pub modules: Vec<ModuleStatus>,
    #[serde(default)]
    pub buffer: wedge_proto::messages::BufferStatus,
    #[serde(default)]
    pub resources: wedge_proto::messages::Resources,
    /// What is wrong with the node while it is online (empty: healthy).
    #[serde(default)]
    pub problems: Vec<String>,
    /// When `problems` last went from empty to not or back.
    #[serde(default)]
    pub problems_since_ms: u64,
    /// Since when the heartbeats of a degraded node have shown no problem: it recovers
    /// [`crate::fleet::RECOVERY_HOLD_MS`] later, not at the first clean heartbeat.
    #[serde(default)]
    pub clear_since_ms: Option<u64>,
}

/// The desired state last computed for a node.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DesiredRecord {
    pub generation: u64,
    pub modules: Vec<ModuleSpec>,
}

impl NodeRecord {
    /// `online`, `degraded` (online with problems) or `offline`.
    pub fn health(&self) -> &'static str {
        match self.liveness {
            Liveness::Offline => "offline",
            Liveness::Online if self.problems.is_empty() => "online",
            Liveness::Online => "degraded",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_selection() {
        let labels = BTreeMap::from([("site".to_string(), "a".to_string())]);
        assert!(Target::Nodes(vec!["n1".into()]).selects("n1", &labels));
        assert!(!Target::Nodes(vec!["n1".into()]).selects("n2", &labels));
        assert!(Target::Labels(labels.clone()).selects("x", &labels));
        assert!(Target::Labels(BTreeMap::new()).selects("x", &BTreeMap::new()));
        let other = BTreeMap::from([("site".to_string(), "b".to_string())]);
        assert!(!Target::Labels(other).selects("x", &labels));
    }
}
