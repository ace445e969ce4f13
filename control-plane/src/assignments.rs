//! Which revision of each deployment every node runs: each deployment's rollout and the
//! revisions it refers to, by deployment name. The one answer to "what does node X run",
//! below both rooms that need it: the rollout engine (`crate::rollout`) changes it, the
//! reconciler (`crate::reconcile`) reads it to compute desired states.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;

use wedge_proto::messages::ModuleSpec;

use crate::desired;
use crate::model::{DeploymentRecord, Rollout};
use crate::store::{self, Store};

/// Why the revisions a rollout refers to could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("revision {revision} of deployment {name} is missing from the store")]
    MissingRevision { name: String, revision: u64 },
}

/// One deployment: its rollout and the revisions it assigns.
#[derive(Debug, Clone)]
pub struct DeploymentPlan {
    pub rollout: Rollout,
    /// Every revision the rollout refers to (its own, the stable one, those still assigned).
    pub specs: BTreeMap<u64, DeploymentRecord>,
    /// Changed since last saved (the rollout engine's bookkeeping).
    pub(crate) unsaved: bool,
    pub(crate) saved_at: Option<std::time::Instant>,
}

impl DeploymentPlan {
    pub(crate) fn new(rollout: Rollout) -> Self {
        Self {
            rollout,
            specs: BTreeMap::new(),
            unsaved: false,
            saved_at: None,
        }
    }

    /// The revision being rolled out.
    pub fn current(&self) -> Option<&DeploymentRecord> {
        self.specs.get(&self.rollout.revision)
    }

    fn referenced(&self) -> BTreeSet<u64> {
        let r = &self.rollout;
        let mut out: BTreeSet<u64> = r.assigned.values().copied().collect();
        out.insert(r.revision);
        out.extend(r.stable);
        out.extend(r.nodes.values().filter_map(|p| p.prior));
        out.extend(r.nodes.values().filter_map(|p| p.fallback));
        out.extend(r.fallbacks.values().flatten().copied());
        out
    }

    /// Loads referenced revisions that are missing and forgets unreferenced ones.
    pub(crate) fn sync_specs(&mut self, name: &str, store: &Store) -> Result<(), Error> {
        let wanted = self.referenced();
        self.specs.retain(|r, _| wanted.contains(r));
        for revision in wanted {
            if let std::collections::btree_map::Entry::Vacant(slot) = self.specs.entry(revision) {
                let record =
                    store
                        .revision(name, revision)?
                        .ok_or_else(|| Error::MissingRevision {
                            name: name.to_string(),
                            revision,
                        })?;
                slot.insert(record);
            }
        }
        Ok(())
    }
}

/// Every deployment's plan, by name.
#[derive(Debug, Default)]
pub struct Assignments {
    inner: RwLock<BTreeMap<String, DeploymentPlan>>,
}

impl Assignments {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, DeploymentPlan>> {
        // Poisoning only follows a panic elsewhere; the map is still consistent.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn write(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, DeploymentPlan>> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The modules node `id` should run: each deployment's assigned revision.
    pub fn modules_for(&self, id: &str) -> Vec<ModuleSpec> {
        let plans = self.read();
        let records = plans
            .values()
            .filter_map(|p| p.rollout.assigned.get(id).and_then(|rev| p.specs.get(rev)));
        desired::modules_for(records)
    }

    /// `f` of one deployment's plan, without copying it.
    pub fn with<T>(&self, name: &str, f: impl FnOnce(&DeploymentPlan) -> T) -> Option<T> {
        self.read().get(name).map(f)
    }
}
