//! Keeps every node's desired state in step with the deployments, and makes sure each
//! node hears it.
//!
//! The broker's retained message is a convenience, not the record (the embedded broker
//! forgets retained messages on restart): the store holds each node's desired state, and a
//! node whose heartbeat reports an older generation is sent the current one again, at most
//! once per [`RESEND_INTERVAL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wedge_proto::messages::DesiredState;

use crate::assignments::Assignments;
use crate::desired;
use crate::model::DesiredRecord;
use crate::outbox::Outbox;
use crate::store::{self, Store};

/// Shortest time between two re-sends of a desired state to the same node.
pub const RESEND_INTERVAL: Duration = Duration::from_secs(2);

/// Why reconciliation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("cannot publish the desired state of {node}: {reason}")]
    Publish { node: String, reason: String },
}

/// Computes, stores and publishes desired states.
#[derive(Debug)]
pub struct Reconciler {
    store: Store,
    plans: Arc<Assignments>,
    outbox: Outbox,
    /// Adds the native code each node can load.
    natives: Arc<crate::precompile::Precompiler>,
    /// Serialises recomputation so two changes never race on a node's generation.
    lock: tokio::sync::Mutex<()>,
    last_sent: Mutex<HashMap<String, Instant>>,
    /// Each node's current desired generation, 0 for none (a cache of the store).
    generations: Mutex<HashMap<String, u64>>,
}

impl Reconciler {
    pub fn new(
        store: Store,
        plans: Arc<Assignments>,
        outbox: Outbox,
        natives: Arc<crate::precompile::Precompiler>,
    ) -> Self {
        Self {
            store,
            plans,
            outbox,
            natives,
            lock: tokio::sync::Mutex::new(()),
            last_sent: Mutex::new(HashMap::new()),
            generations: Mutex::new(HashMap::new()),
        }
    }

    /// The generation of node `id`'s desired state; `None` when it has none.
    pub fn generation(&self, id: &str) -> Option<u64> {
        let mut cache = self.generations.lock().unwrap_or_else(|p| p.into_inner());
        // 0 caches "none" (generations start at 1), so nodes without modules cost no read.
        let g = match cache.get(id) {
            Some(g) => *g,
            None => {
                let g = match self.store.desired(id) {
                    Ok(d) => d.map_or(0, |d| d.generation),
                    Err(_) => return None,
                };
                cache.insert(id.to_string(), g);
                g
            }
        };
        (g > 0).then_some(g)
    }

    /// Recomputes the desired state of these nodes from their assigned revisions; stores
    /// the changed ones with one flush, then publishes them.
    pub async fn nodes(&self, ids: impl IntoIterator<Item = String>) -> Result<(), Error> {
        let _guard = self.lock.lock().await;
        let mut changed = Vec::new();
        for id in ids {
            let mut modules = self.plans.modules_for(&id);
            self.natives.offer(&id, &mut modules);
            let current = self.store.desired(&id)?;
            if let Some(next) = desired::next(current.as_ref(), modules) {
                changed.push((id, next));
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        self.store
            .put_desired_many(changed.iter().map(|(id, r)| (id.as_str(), r)))?;
        {
            let mut cache = self.generations.lock().unwrap_or_else(|p| p.into_inner());
            for (id, r) in &changed {
                cache.insert(id.clone(), r.generation);
            }
        }
        tracing::info!(nodes = changed.len(), "desired states changed");
        for (id, next) in &changed {
            tracing::debug!(
                node = id,
                generation = next.generation,
                modules = next.modules.len(),
                "desired state changed"
            );
            self.send(id, next).await?;
        }
        Ok(())
    }

    /// Re-sends the desired state when a node reports an older generation than the
    /// stored one.
    pub async fn resend_if_behind(&self, id: &str, reported_generation: u64) -> Result<(), Error> {
        // The common case, answered from memory: the node is up to date (or has nothing).
        if self.generation(id).is_none_or(|g| g == reported_generation) {
            return Ok(());
        }
        let Some(current) = self.store.desired(id)? else {
            return Ok(());
        };
        if current.generation == reported_generation {
            return Ok(());
        }
        {
            let mut last = self.last_sent.lock().unwrap_or_else(|p| p.into_inner());
            if last.get(id).is_some_and(|t| t.elapsed() < RESEND_INTERVAL) {
                return Ok(());
            }
            last.insert(id.to_string(), Instant::now());
        }
        tracing::debug!(
            node = id,
            reported_generation,
            generation = current.generation,
            "re-sending desired state"
        );
        self.send(id, &current).await
    }

    async fn send(&self, id: &str, record: &DesiredRecord) -> Result<(), Error> {
        self.last_sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), Instant::now());
        let state = DesiredState {
            generation: record.generation,
            modules: record.modules.clone(),
        };
        self.outbox
            .desired(id, &state)
            .await
            .map_err(|reason| Error::Publish {
                node: id.to_string(),
                reason,
            })
    }
}
