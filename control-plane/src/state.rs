//! What every HTTP handler (the API and the dashboard) can reach: the domain rooms and the
//! counters, as one cloneable struct of `Arc`s.

use std::sync::Arc;

use crate::fleet::Fleet;
use crate::link::Counters;
use crate::rollout::RolloutEngine;
use crate::store::Store;

/// What every handler can reach. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub fleet: Arc<Fleet>,
    pub rollouts: Arc<RolloutEngine>,
    pub counters: Arc<Counters>,
    pub max_module_size: usize,
    /// Largest message on the broker (`mqtt_max_payload`): a node's desired state must fit.
    pub max_desired_bytes: usize,
    pub identity: Option<Arc<crate::identity::NodeIdentities>>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub precompiler: Arc<crate::precompile::Precompiler>,
}
