//! Keeps every node's desired state in step with the deployments, and makes sure each
//! node hears it.
//!
//! The broker's retained message is a convenience, not the record (the embedded broker
//! forgets retained messages on restart): the store holds each node's desired state, and a
//! node whose heartbeat reports an older generation is sent the current one again, at most
//! once per [`RESEND_INTERVAL`].

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wedge_shared::messages::DesiredState;

use crate::desired;
use crate::fleet::Fleet;
use crate::mqtt::Publisher;
use crate::store::{self, DesiredRecord, Store};

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
    fleet: Arc<Fleet>,
    publisher: Publisher,
    /// Serialises recomputation so two changes never race on a node's generation.
    lock: tokio::sync::Mutex<()>,
    last_sent: Mutex<HashMap<String, Instant>>,
}

impl Reconciler {
    pub fn new(store: Store, fleet: Arc<Fleet>, publisher: Publisher) -> Self {
        Self {
            store,
            fleet,
            publisher,
            lock: tokio::sync::Mutex::new(()),
            last_sent: Mutex::new(HashMap::new()),
        }
    }

    /// Recomputes the desired state of every known node and of `also` (nodes named by a
    /// deployment that have not connected yet), publishing those that changed.
    pub async fn all(&self, also: &[String]) -> Result<(), Error> {
        let _guard = self.lock.lock().await;
        let deployments = self.store.deployments()?;
        let mut targets: Vec<(String, std::collections::BTreeMap<String, String>)> =
            self.fleet.selectors();
        let known: BTreeSet<String> = targets.iter().map(|(id, _)| id.clone()).collect();
        for id in also {
            if !known.contains(id) {
                targets.push((id.clone(), Default::default()));
            }
        }
        for (id, labels) in targets {
            let modules = desired::modules_for(&id, &labels, &deployments);
            self.apply(&id, modules).await?;
        }
        Ok(())
    }

    /// Recomputes the desired state of one node (it joined, or its labels changed).
    pub async fn node(&self, id: &str) -> Result<(), Error> {
        let _guard = self.lock.lock().await;
        let labels = self.fleet.get(id).map(|n| n.labels).unwrap_or_default();
        let deployments = self.store.deployments()?;
        let modules = desired::modules_for(id, &labels, &deployments);
        self.apply(id, modules).await
    }

    async fn apply(
        &self,
        id: &str,
        modules: Vec<wedge_shared::messages::ModuleSpec>,
    ) -> Result<(), Error> {
        let current = self.store.desired(id)?;
        if let Some(next) = desired::next(current.as_ref(), modules) {
            self.store.put_desired(id, &next)?;
            tracing::info!(
                node = id,
                generation = next.generation,
                modules = next.modules.len(),
                "desired state changed"
            );
            self.send(id, &next).await?;
        }
        Ok(())
    }

    /// Re-sends the desired state when a node reports an older generation than the
    /// stored one.
    pub async fn resend_if_behind(&self, id: &str, reported_generation: u64) -> Result<(), Error> {
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
        self.publisher
            .desired(id, &state)
            .await
            .map_err(|reason| Error::Publish {
                node: id.to_string(),
                reason,
            })
    }
}
