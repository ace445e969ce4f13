//! One deployment's rollout as it is stored and served: its phase, each node's progress,
//! the revision each node is assigned, and the outcomes of earlier rollouts. The
//! transitions are the pure state machine in `crate::rollout::plan`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::strategy::Strategy;

/// Finished rollouts remembered per deployment.
pub const HISTORY: usize = 10;

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The canary nodes run the new revision; the rest wait.
    Canary,
    /// Batch after batch, each once the previous one is healthy.
    Batches,
    /// Every targeted node has been given the revision.
    Complete,
    /// Too many nodes failed; every node was sent back to the stable revision.
    RolledBack,
    /// An operator stopped it; every node was sent back to the stable revision.
    Aborted,
    /// A newer revision took over (only in history).
    Superseded,
}

impl Phase {
    pub fn is_active(self) -> bool {
        matches!(self, Self::Canary | Self::Batches)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Canary => "canary",
            Self::Batches => "batches",
            Self::Complete => "complete",
            Self::RolledBack => "rolled_back",
            Self::Aborted => "aborted",
            Self::Superseded => "superseded",
        }
    }
}

/// Where one node is in the rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Not updated yet.
    Pending,
    /// Sent the new revision; not running it yet.
    Updating,
    /// Running the new revision, for less than the bake time.
    Baking,
    /// Ran the new revision for the bake time without a crash.
    Healthy,
    /// The new revision failed to start or crashed.
    Failed,
    /// Was updated, then sent back to the stable revision.
    RolledBack,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Updating => "updating",
            Self::Baking => "baking",
            Self::Healthy => "healthy",
            Self::Failed => "failed",
            Self::RolledBack => "rolled_back",
        }
    }

    /// Given the new revision in this rollout.
    pub(crate) fn updated(self) -> bool {
        matches!(
            self,
            Self::Updating | Self::Baking | Self::Healthy | Self::Failed
        )
    }
}

/// One node's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeProgress {
    pub state: NodeState,
    pub since_ms: u64,
    /// What the node ran when the rollout met it; kept while it is pending.
    pub prior: Option<u64>,
    /// The healthy revision it goes back to on a rollback or abort (none: it never ran
    /// one). Rollouts saved before fallbacks existed fall back to `prior`.
    #[serde(default)]
    pub fallback: Option<u64>,
    /// Restarts the node reported when the new revision first ran.
    #[serde(default)]
    pub restarts_seen: u32,
    #[serde(default)]
    pub error: Option<String>,
}

/// A finished rollout, kept for the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub revision: u64,
    pub phase: Phase,
    pub reason: Option<String>,
    pub ended_ms: u64,
}

/// One deployment's rollout of one revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub revision: u64,
    /// The revision nodes go back to; `None` before any revision completed.
    pub stable: Option<u64>,
    pub strategy: Strategy,
    pub phase: Phase,
    pub paused: bool,
    /// Why the rollout is where it is (rolled back, aborted), for people.
    pub reason: Option<String>,
    pub started_ms: u64,
    pub phase_since_ms: u64,
    /// Nodes the revision targets.
    pub nodes: BTreeMap<String, NodeProgress>,
    /// The revision each node should run (absent: none).
    pub assigned: BTreeMap<String, u64>,
    /// Every node the rollout this one superseded knew, with its fallback (none: it never
    /// ran a healthy revision), for nodes as they join.
    #[serde(default)]
    pub fallbacks: BTreeMap<String, Option<u64>>,
    pub history: Vec<Outcome>,
}
