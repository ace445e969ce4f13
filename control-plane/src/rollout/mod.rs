//! Rollouts: how a deployment's new revision reaches its nodes, gated on their health.
//!
//! - [`strategy`]: canary size, batch size, bake time, failure ratio.
//! - [`plan`]: one deployment's rollout as a pure state machine.
//! - [`RolloutEngine`] (here): drives every deployment's rollout. A step observes the fleet
//!   registry, advances each rollout, persists the ones that changed and hands the nodes
//!   whose assigned revision changed to the [`Reconciler`], which recomputes and publishes
//!   their desired states. Steps run every [`STEP_INTERVAL`] and at once when a deployment
//!   is posted or controlled, or a node joins or changes labels.
//!
//! The rollouts live in [`Assignments`] (`crate::assignments`), the one source of "which revision
//! does node X run": this room changes them, the reconciler only reads them.

pub mod plan;
pub use crate::model::strategy;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::assignments::{self, Assignments, DeploymentPlan};
use crate::fleet::Fleet;
use crate::model::{DeploymentRecord, Liveness, Target};
use crate::reconcile::{self, Reconciler};
use crate::store::{self, Store};
use crate::time::now_ms;
use plan::{NotActive, Observed, Report, Rollout};

/// How often rollouts advance without a nudge (bake timers, health changes).
pub const STEP_INTERVAL: Duration = Duration::from_millis(250);

/// Longest a change of node health alone waits before the rollout is saved.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// Why a rollout operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Reconcile(#[from] reconcile::Error),
    #[error("no deployment named {0}")]
    Unknown(String),
    #[error(transparent)]
    NotActive(#[from] NotActive),
    #[error(transparent)]
    Assignments(#[from] assignments::Error),
}

/// An operator's request on a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Pause,
    Resume,
    Abort,
}

/// Drives the rollouts. Share it behind an `Arc`.
#[derive(Debug)]
pub struct RolloutEngine {
    store: Store,
    fleet: Arc<Fleet>,
    reconciler: Arc<Reconciler>,
    plans: Arc<Assignments>,
    wake: Notify,
    /// One step at a time: steps and operator requests never interleave.
    lock: tokio::sync::Mutex<()>,
    /// One deployment post at a time, from reading the latest revision to rolling out the
    /// next: concurrent posts get distinct, consecutive revisions.
    posts: tokio::sync::Mutex<()>,
    /// Nodes whose desired state could not be published; retried on the next step.
    retry: std::sync::Mutex<BTreeSet<String>>,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RolloutEngine {
    /// Loads every deployment's rollout from the store. A deployment stored without one
    /// starts a default rollout of its latest revision.
    pub fn load(
        store: Store,
        fleet: Arc<Fleet>,
        reconciler: Arc<Reconciler>,
        plans: Arc<Assignments>,
    ) -> Result<Self, Error> {
        {
            let mut map = plans.write();
            for d in store.deployments()? {
                let rollout = match store.rollout(&d.name)? {
                    Some(r) => r,
                    None => Rollout::first(d.revision, d.strategy.clone(), now_ms()),
                };
                let mut plan = DeploymentPlan::new(rollout);
                plan.sync_specs(&d.name, &store)?;
                map.insert(d.name.clone(), plan);
            }
        }
        Ok(Self {
            store,
            fleet,
            reconciler,
            plans,
            wake: Notify::new(),
            lock: tokio::sync::Mutex::new(()),
            posts: tokio::sync::Mutex::new(()),
            retry: Default::default(),
        })
    }

    pub fn plans(&self) -> &Arc<Assignments> {
        &self.plans
    }

    /// Asks for a step soon (a node joined or changed labels).
    pub fn nudge(&self) {
        self.wake.notify_one();
    }

    /// Held by whoever numbers, stores and deploys a new revision (see `posts`).
    pub async fn posting(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.posts.lock().await
    }

    /// Starts rolling out a stored revision; a rollout in progress is superseded.
    pub async fn deploy(&self, record: DeploymentRecord) -> Result<(), Error> {
        {
            let _guard = self.lock.lock().await;
            let now = now_ms();
            let mut plans = self.plans.write();
            let name = record.name.clone();
            let plan = match plans.remove(&name) {
                Some(mut old) => {
                    if old.rollout.phase.is_active() {
                        // One last look first: a rollout whose nodes are all healthy but
                        // that was not stepped since completes now, so its revision
                        // becomes the stable one the new revision can roll back to.
                        let observed = self.observe(&name, &old);
                        let changes = old.rollout.step(now, &observed);
                        lock(&self.retry).extend(changes.assignments);
                    }
                    old.rollout =
                        old.rollout
                            .supersede(record.revision, record.strategy.clone(), now);
                    old
                }
                None => DeploymentPlan::new(Rollout::first(
                    record.revision,
                    record.strategy.clone(),
                    now,
                )),
            };
            let mut plan = plan;
            plan.specs.insert(record.revision, record);
            plan.sync_specs(&name, &self.store)?;
            self.store.put_rollout(&name, &plan.rollout)?;
            plans.insert(name, plan);
        }
        // Publishing thousands of desired states takes a while: the request returns and
        // the rollout task takes the first step at once.
        self.nudge();
        Ok(())
    }

    /// Pauses, resumes or aborts a deployment's rollout.
    pub async fn control(&self, name: &str, control: Control) -> Result<(), Error> {
        {
            let _guard = self.lock.lock().await;
            let mut plans = self.plans.write();
            let plan = plans
                .get_mut(name)
                .ok_or_else(|| Error::Unknown(name.to_string()))?;
            match control {
                Control::Pause => plan.rollout.pause()?,
                Control::Resume => plan.rollout.resume()?,
                Control::Abort => plan.rollout.abort(now_ms())?,
            }
            tracing::info!(deployment = name, ?control, "rollout controlled");
            self.store.put_rollout(name, &plan.rollout)?;
        }
        self.step_logged().await;
        Ok(())
    }

    /// A step whose failure is logged: the request it follows is already recorded, and
    /// the next periodic step retries.
    async fn step_logged(&self) {
        if let Err(e) = self.step().await {
            tracing::warn!(error = %e, "rollout step failed; retrying on the next one");
        }
    }

    /// Advances every rollout once and publishes the desired states that changed.
    pub async fn step(&self) -> Result<(), Error> {
        let _guard = self.lock.lock().await;
        let now = now_ms();
        let mut changed = BTreeSet::new();
        {
            let mut plans = self.plans.write();
            for (name, plan) in plans.iter_mut() {
                let observed = self.observe(name, plan);
                let phase = plan.rollout.phase;
                let changes = plan.rollout.step(now, &observed);
                plan.unsaved |= changes.dirty;
                // Assignments and phases are saved at once; node health at most once per
                // SAVE_INTERVAL (a 10,000-node rollout record is a megabyte, and health is
                // judged again from the next heartbeats after a restart anyway).
                let must = !changes.assignments.is_empty() || phase != plan.rollout.phase;
                let due = plan.saved_at.is_none_or(|t| t.elapsed() >= SAVE_INTERVAL);
                if plan.unsaved && (must || due) {
                    plan.sync_specs(name, &self.store)?;
                    self.store.put_rollout(name, &plan.rollout)?;
                    plan.unsaved = false;
                    plan.saved_at = Some(std::time::Instant::now());
                }
                changed.extend(changes.assignments);
            }
        }
        changed.append(&mut lock(&self.retry));
        if !changed.is_empty()
            && let Err(e) = self.reconciler.nodes(changed.iter().cloned()).await
        {
            // The assignments moved on; their desired states must still follow.
            lock(&self.retry).append(&mut changed);
            return Err(e.into());
        }
        Ok(())
    }

    /// What the rollout of deployment `name` needs to know about each relevant node.
    fn observe(&self, name: &str, plan: &DeploymentPlan) -> BTreeMap<String, Observed> {
        let mut out = BTreeMap::new();
        let Some(current) = plan.current() else {
            return out;
        };
        let stable = plan.rollout.stable.and_then(|s| plan.specs.get(&s));
        let rollout = &plan.rollout;
        self.fleet.for_each(|n| {
            let targeted = current.target.selects(&n.id, &n.labels);
            let stable_targeted = stable.is_some_and(|s| s.target.selects(&n.id, &n.labels));
            if !targeted
                && !stable_targeted
                && !rollout.assigned.contains_key(&n.id)
                && !rollout.nodes.contains_key(&n.id)
            {
                return;
            }
            // A report counts only once the node applied its latest desired state: a
            // revision with the same module but other config must really be running.
            let applied = self
                .reconciler
                .generation(&n.id)
                .is_none_or(|g| n.applied_generation >= g);
            let report = n
                .modules
                .iter()
                .find(|m| m.name == name && m.digest == current.module.digest)
                .filter(|_| applied)
                .map(|m| Report {
                    state: m.state,
                    restarts: m.restarts,
                    error: m.last_error.clone(),
                });
            out.insert(
                n.id.clone(),
                Observed {
                    online: n.liveness == Liveness::Online,
                    targeted,
                    stable_targeted,
                    report,
                },
            );
        });
        // Nodes named by id that have never connected: assigned now, told when they come.
        for (record, is_current) in [(Some(current), true), (stable, false)] {
            if let Some(DeploymentRecord {
                target: Target::Nodes(ids),
                ..
            }) = record
            {
                for id in ids {
                    let o = out.entry(id.clone()).or_default();
                    if is_current {
                        o.targeted = true;
                    } else {
                        o.stable_targeted = true;
                    }
                }
            }
        }
        out
    }

    /// Steps every [`STEP_INTERVAL`] or when nudged, until shutdown.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(STEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
                _ = self.wake.notified() => {}
            }
            self.step_logged().await;
        }
        let _guard = self.lock.lock().await;
        for (name, plan) in self.plans.write().iter_mut().filter(|(_, p)| p.unsaved) {
            if let Err(e) = self.store.put_rollout(name, &plan.rollout) {
                tracing::warn!(deployment = name, error = %e, "cannot save the rollout");
            }
        }
    }
}
