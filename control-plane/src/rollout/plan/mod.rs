//! One deployment's rollout as a state machine. Pure: the caller passes the time and what
//! it observes of each node; [`Rollout::step`] advances phases, judges node health and
//! says whose assignment changed.
//!
//! Each node is *assigned* at most one revision of the deployment: the new one once its
//! batch comes, until then whatever it ran before (the stable revision, or the revision of
//! a rollout this one superseded — so a superseded rollout causes no extra restarts).
//! A rollout never waits on an offline node: batches are chosen among online nodes, and an
//! offline node simply gets the revision when it comes back.
//!
//! **Where a rollback goes.** Every node has a *fallback*: the revision it last ran
//! healthy before this rollout. Rolling back or aborting assigns each node its own
//! fallback, never a fleet-wide guess, so a revision posted while an earlier one is still
//! canarying, baking or half-rolled returns each node to what it really ran: the earlier
//! revision where that was running without failure (baking or healthy), the revision
//! before it where it was not. Only a node that never ran a healthy revision of the
//! deployment ends with none. When a rollout is superseded its nodes' fallbacks are
//! carried into the new one ([`Rollout::supersede`]).
//!
//! Several revisions in flight, precisely: *supersede* ends the running rollout wherever
//! it is (recorded as `superseded`) and starts the new revision from the nodes' actual
//! state; *pause* stops new batches (failures still roll back); *abort* and an automatic
//! *rollback* send every node of the current rollout to its fallback. `stable` is the
//! revision nodes return to that a reader can name: the last completed one, or — once an
//! unfinished rollout is superseded — the fallback most nodes share (ties: the newest).

use std::collections::{BTreeMap, BTreeSet};

use wedge_proto::messages::ModuleState;

use crate::model::Strategy;
pub use crate::model::rollout::{HISTORY, NodeProgress, NodeState, Outcome, Phase, Rollout};

/// What the control plane sees of the module this deployment runs on one node.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub state: ModuleState,
    pub restarts: u32,
    pub error: Option<String>,
}

/// One node as seen for one deployment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    pub online: bool,
    /// The rollout's revision selects this node.
    pub targeted: bool,
    /// The stable revision selects it.
    pub stable_targeted: bool,
    /// The node's report of the module, only when it runs the rollout's revision (right
    /// digest, latest desired state applied).
    pub report: Option<Report>,
}

/// What a step changed.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    /// Nodes whose assigned revision changed: their desired state must be recomputed.
    pub assignments: BTreeSet<String>,
    /// Anything changed (persist the rollout).
    pub dirty: bool,
}

/// Why a control request was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the rollout of revision {revision} is {phase}; {action} needs a rollout in progress")]
pub struct NotActive {
    pub revision: u64,
    pub phase: &'static str,
    pub action: &'static str,
}

impl Rollout {
    /// The rollout of a deployment's first revision.
    pub fn first(revision: u64, strategy: Strategy, now_ms: u64) -> Self {
        Self::start(
            revision,
            None,
            strategy,
            BTreeMap::new(),
            BTreeMap::new(),
            Vec::new(),
            now_ms,
        )
    }

    fn start(
        revision: u64,
        stable: Option<u64>,
        strategy: Strategy,
        assigned: BTreeMap<String, u64>,
        fallbacks: BTreeMap<String, Option<u64>>,
        history: Vec<Outcome>,
        now_ms: u64,
    ) -> Self {
        let phase = if strategy.has_canary() {
            Phase::Canary
        } else {
            Phase::Batches
        };
        Self {
            revision,
            stable,
            strategy,
            phase,
            paused: false,
            reason: None,
            started_ms: now_ms,
            phase_since_ms: now_ms,
            nodes: BTreeMap::new(),
            assigned,
            fallbacks,
            history,
        }
    }

    /// A newer revision replaces this rollout, whatever its phase. Nodes keep what they
    /// run until the new rollout reaches them; each keeps the healthy revision it would go
    /// back to (this one's, where it runs it without failure).
    pub fn supersede(self, revision: u64, strategy: Strategy, now_ms: u64) -> Self {
        let fallbacks: BTreeMap<String, Option<u64>> = self
            .nodes
            .keys()
            .chain(self.assigned.keys())
            .map(|id| (id.clone(), self.healthy_revision(id)))
            .collect();
        let stable = if self.phase == Phase::Complete {
            self.stable
        } else {
            most_common(fallbacks.values().flatten().copied()).or(self.stable)
        };
        let mut history = self.history;
        let (phase, reason) = if self.phase.is_active() {
            (
                Phase::Superseded,
                Some(format!("superseded by revision {revision}")),
            )
        } else {
            (self.phase, self.reason)
        };
        history.push(Outcome {
            revision: self.revision,
            phase,
            reason,
            ended_ms: now_ms,
        });
        if history.len() > HISTORY {
            history.remove(0);
        }
        Self::start(
            revision,
            stable,
            strategy,
            self.assigned,
            fallbacks,
            history,
            now_ms,
        )
    }

    /// The healthy revision node `id` runs, or goes back to, as of now.
    fn healthy_revision(&self, id: &str) -> Option<u64> {
        match self.nodes.get(id) {
            Some(p) => match p.state {
                NodeState::Baking | NodeState::Healthy => Some(self.revision),
                // A late joiner or returning node of a completed rollout: the fleet's
                // revision, proven on the others.
                NodeState::Updating | NodeState::Pending if self.phase == Phase::Complete => {
                    Some(self.revision)
                }
                _ => p.fallback,
            },
            // Not part of this rollout: it runs what it was assigned (the stable revision).
            None => self.assigned.get(id).copied(),
        }
    }

    fn check_active(&self, action: &'static str) -> Result<(), NotActive> {
        if self.phase.is_active() {
            Ok(())
        } else {
            Err(NotActive {
                revision: self.revision,
                phase: self.phase.as_str(),
                action,
            })
        }
    }

    /// Stops starting new batches (updated nodes keep running, failures still roll back).
    pub fn pause(&mut self) -> Result<(), NotActive> {
        self.check_active("pause")?;
        self.paused = true;
        Ok(())
    }

    pub fn resume(&mut self) -> Result<(), NotActive> {
        self.check_active("resume")?;
        self.paused = false;
        Ok(())
    }

    /// Stops the rollout and sends every node back to the stable revision (next step).
    pub fn abort(&mut self, now_ms: u64) -> Result<(), NotActive> {
        self.check_active("abort")?;
        self.roll_back(Phase::Aborted, "aborted by an operator".into(), now_ms);
        Ok(())
    }

    fn roll_back(&mut self, phase: Phase, reason: String, now_ms: u64) {
        self.phase = phase;
        self.paused = false;
        self.reason = Some(reason);
        self.phase_since_ms = now_ms;
        for p in self.nodes.values_mut() {
            if matches!(
                p.state,
                NodeState::Updating | NodeState::Baking | NodeState::Healthy
            ) {
                p.state = NodeState::RolledBack;
                p.since_ms = now_ms;
            }
        }
    }

    /// Counts of nodes by state.
    pub fn counts(&self) -> BTreeMap<NodeState, usize> {
        let mut out = BTreeMap::new();
        for p in self.nodes.values() {
            *out.entry(p.state).or_default() += 1;
        }
        out
    }

    /// Advances the rollout given what is observed of every node (nodes missing from
    /// `observed` count as offline and untargeted).
    pub fn step(&mut self, now_ms: u64, observed: &BTreeMap<String, Observed>) -> Changes {
        let before = (self.phase, self.nodes.clone());
        let absent = Observed::default();
        let seen = |id: &str| observed.get(id).unwrap_or(&absent);

        // Membership follows the revision's target (labels can change at any time).
        self.nodes.retain(|id, _| seen(id).targeted);
        for (id, o) in observed.iter().filter(|(_, o)| o.targeted) {
            if !self.nodes.contains_key(id) {
                // A node new to the deployment waits for its batch on the stable revision.
                // A node the superseded rollout knew keeps what it had there (perhaps
                // nothing); a node new to the deployment starts from the stable revision.
                let stable = self.stable.filter(|_| o.stable_targeted);
                let (prior, fallback) = match self.fallbacks.get(id) {
                    Some(fallback) => (self.assigned.get(id).copied(), *fallback),
                    None => (self.assigned.get(id).copied().or(stable), stable),
                };
                let state = if self.phase == Phase::Complete {
                    NodeState::Updating
                } else {
                    NodeState::Pending
                };
                self.nodes.insert(
                    id.clone(),
                    NodeProgress {
                        state,
                        since_ms: now_ms,
                        prior,
                        fallback,
                        restarts_seen: 0,
                        error: None,
                    },
                );
            }
        }

        if matches!(self.phase, Phase::Canary | Phase::Batches | Phase::Complete) {
            let bake_ms = self.strategy.bake_seconds.saturating_mul(1000);
            for (id, p) in self.nodes.iter_mut() {
                let o = seen(id);
                if o.online {
                    judge(p, o.report.as_ref(), bake_ms, now_ms);
                }
            }
        }

        if self.phase.is_active() {
            self.check_failures(now_ms);
        }
        if self.phase.is_active() && !self.paused {
            self.advance(now_ms, observed);
        }

        let mut changes = Changes {
            dirty: before != (self.phase, self.nodes.clone()),
            ..Changes::default()
        };
        let ids: BTreeSet<String> = observed
            .keys()
            .chain(self.assigned.keys())
            .cloned()
            .collect();
        for id in ids {
            let want = self.assignment(&id, seen(&id));
            if self.assigned.get(&id).copied() != want {
                match want {
                    Some(r) => self.assigned.insert(id.clone(), r),
                    None => self.assigned.remove(&id),
                };
                changes.assignments.insert(id);
                changes.dirty = true;
            }
        }
        changes
    }

    fn check_failures(&mut self, now_ms: u64) {
        let updated = self.nodes.values().filter(|p| p.state.updated()).count();
        let failed: Vec<(&String, &NodeProgress)> = self
            .nodes
            .iter()
            .filter(|(_, p)| p.state == NodeState::Failed)
            .collect();
        if failed.is_empty() || updated == 0 {
            return;
        }
        let ratio = failed.len() as f64 / updated as f64;
        if ratio <= self.strategy.max_failure_ratio {
            return;
        }
        let (first, p) = failed[0];
        let reason = format!(
            "{} of {} updated nodes failed (max_failure_ratio {}); {first}: {}",
            failed.len(),
            updated,
            self.strategy.max_failure_ratio,
            p.error.as_deref().unwrap_or("module failed")
        );
        tracing::warn!(revision = self.revision, %reason, "rolling back");
        self.roll_back(Phase::RolledBack, reason, now_ms);
    }

    fn advance(&mut self, now_ms: u64, observed: &BTreeMap<String, Observed>) {
        let online = |id: &str| observed.get(id).is_some_and(|o| o.online);
        let settled = !self.nodes.iter().any(|(id, p)| {
            matches!(p.state, NodeState::Updating | NodeState::Baking) && online(id)
        });
        if !settled {
            return;
        }
        let updated = self.nodes.values().filter(|p| p.state.updated()).count();
        let waiting: Vec<String> = self
            .nodes
            .iter()
            .filter(|(id, p)| p.state == NodeState::Pending && online(id))
            .map(|(id, _)| id.clone())
            .collect();
        let total = self.nodes.len();
        let take = match self.phase {
            Phase::Canary if updated == 0 => self.strategy.canary.of(total).max(1),
            Phase::Canary => {
                self.phase = Phase::Batches;
                self.phase_since_ms = now_ms;
                self.strategy.batch.of(total).max(1)
            }
            _ => self.strategy.batch.of(total).max(1),
        };
        if waiting.is_empty() {
            if updated > 0 && self.phase == Phase::Batches {
                self.complete(now_ms);
            }
            return;
        }
        for id in waiting.into_iter().take(take) {
            if let Some(p) = self.nodes.get_mut(&id) {
                p.state = NodeState::Updating;
                p.since_ms = now_ms;
            }
        }
    }

    fn complete(&mut self, now_ms: u64) {
        self.phase = Phase::Complete;
        self.phase_since_ms = now_ms;
        self.stable = Some(self.revision);
        // Offline nodes get the revision when they come back.
        for p in self.nodes.values_mut() {
            if p.state == NodeState::Pending {
                p.state = NodeState::Updating;
                p.since_ms = now_ms;
            }
        }
        tracing::info!(revision = self.revision, "rollout complete");
    }

    /// The revision node `id` should run.
    fn assignment(&self, id: &str, o: &Observed) -> Option<u64> {
        let stable = self.stable.filter(|_| o.stable_targeted);
        let fallback = |p: &NodeProgress| p.fallback.or(p.prior);
        if matches!(self.phase, Phase::RolledBack | Phase::Aborted) {
            return match self.nodes.get(id) {
                Some(p) => fallback(p),
                None => stable,
            };
        }
        match self.nodes.get(id) {
            Some(p) if p.state == NodeState::Pending => p.prior,
            Some(p) if p.state == NodeState::RolledBack => fallback(p),
            Some(_) => Some(self.revision),
            None if self.phase == Phase::Complete => None,
            None => stable,
        }
    }
}

/// The value seen most often (ties: the largest, i.e. the newest revision).
fn most_common(values: impl Iterator<Item = u64>) -> Option<u64> {
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(v, n)| (*n, *v))
        .map(|(v, _)| v)
}

/// Judges one online node's health for the new revision.
fn judge(p: &mut NodeProgress, report: Option<&Report>, bake_ms: u64, now_ms: u64) {
    let Some(r) = report else {
        return;
    };
    let fail = |p: &mut NodeProgress, why: String| {
        p.state = NodeState::Failed;
        p.since_ms = now_ms;
        p.error = Some(why);
    };
    let error = || r.error.clone().unwrap_or_else(|| "module failed".into());
    match p.state {
        NodeState::Updating => {
            if r.state == ModuleState::Failed || r.restarts > 0 {
                fail(p, error());
            } else if r.state == ModuleState::Running {
                p.state = NodeState::Baking;
                p.since_ms = now_ms;
                p.restarts_seen = r.restarts;
                if bake_ms == 0 {
                    p.state = NodeState::Healthy;
                }
            }
        }
        NodeState::Baking => {
            if r.state == ModuleState::Failed || r.restarts > p.restarts_seen {
                fail(p, format!("crashed while baking: {}", error()));
            } else if now_ms.saturating_sub(p.since_ms) >= bake_ms {
                p.state = NodeState::Healthy;
                p.since_ms = now_ms;
            }
        }
        NodeState::Healthy if r.state == ModuleState::Failed => {
            fail(p, error());
        }
        _ => {}
    }
}

#[cfg(test)]
mod model;

#[cfg(test)]
mod tests {
    use super::super::strategy::Amount;
    use super::*;

    pub(super) fn strategy(canary: u64, batch: u64, bake: u64, ratio: f64) -> Strategy {
        Strategy {
            canary: Amount::Nodes(canary),
            batch: Amount::Nodes(batch),
            bake_seconds: bake,
            max_failure_ratio: ratio,
        }
    }

    fn fleet(n: usize) -> BTreeMap<String, Observed> {
        (0..n)
            .map(|i| {
                (
                    format!("n{i}"),
                    Observed {
                        online: true,
                        targeted: true,
                        stable_targeted: true,
                        report: None,
                    },
                )
            })
            .collect()
    }

    fn run(o: &mut Observed, restarts: u32) {
        o.report = Some(Report {
            state: ModuleState::Running,
            restarts,
            error: None,
        });
    }

    fn fail(o: &mut Observed) {
        o.report = Some(Report {
            state: ModuleState::Failed,
            restarts: 1,
            error: Some("trap in init".into()),
        });
    }

    fn states(r: &Rollout) -> Vec<&'static str> {
        r.nodes.values().map(|p| p.state.as_str()).collect()
    }

    /// Revision 1 everywhere, complete: the starting point of most tests.
    fn stable_fleet(n: usize) -> (Rollout, BTreeMap<String, Observed>) {
        let mut obs = fleet(n);
        let mut r = Rollout::first(1, Strategy::default(), 0);
        let ch = r.step(0, &obs);
        assert_eq!(ch.assignments.len(), n);
        for o in obs.values_mut() {
            run(o, 0);
        }
        r.step(1, &obs);
        assert_eq!(r.phase, Phase::Complete, "{r:?}");
        assert_eq!(r.stable, Some(1));
        for o in obs.values_mut() {
            o.report = None;
        }
        (r, obs)
    }

    #[test]
    fn canary_then_batches_with_bake() {
        let (r, mut obs) = stable_fleet(5);
        let mut r = r.supersede(2, strategy(1, 2, 10, 0.0), 100);
        assert_eq!(r.phase, Phase::Canary);
        let ch = r.step(100, &obs);
        assert_eq!(ch.assignments, BTreeSet::from(["n0".to_string()]));
        assert_eq!(r.assigned["n0"], 2);
        assert_eq!(r.assigned["n1"], 1, "the others keep the stable revision");

        run(obs.get_mut("n0").unwrap(), 0);
        r.step(200, &obs);
        assert_eq!(states(&r)[0], "baking");
        assert!(r.step(5_000, &obs).assignments.is_empty(), "still baking");
        // Baked: the canary is healthy and the first batch starts in the same step.
        let ch = r.step(10_200, &obs);
        assert_eq!(states(&r)[0], "healthy");
        assert_eq!(r.phase, Phase::Batches);
        assert_eq!(ch.assignments.len(), 2, "first batch of two");

        for id in ["n1", "n2"] {
            run(obs.get_mut(id).unwrap(), 0);
        }
        r.step(10_400, &obs);
        let ch = r.step(20_400, &obs);
        assert_eq!(ch.assignments.len(), 2, "second batch");
        for id in ["n3", "n4"] {
            run(obs.get_mut(id).unwrap(), 0);
        }
        r.step(20_600, &obs);
        assert_eq!(r.phase, Phase::Batches, "the last batch is baking");
        r.step(30_600, &obs);
        assert_eq!(r.phase, Phase::Complete);
        assert_eq!(r.stable, Some(2));
        assert!(r.assigned.values().all(|&v| v == 2));
    }

    #[test]
    fn a_failing_canary_rolls_everything_back() {
        let (r, mut obs) = stable_fleet(4);
        let mut r = r.supersede(2, strategy(1, 1, 0, 0.0), 0);
        r.step(0, &obs);
        assert_eq!(r.assigned["n0"], 2);
        fail(obs.get_mut("n0").unwrap());
        let ch = r.step(1, &obs);
        assert_eq!(r.phase, Phase::RolledBack);
        let reason = r.reason.clone().unwrap();
        assert!(reason.contains("1 of 1 updated nodes failed"), "{reason}");
        assert!(reason.contains("n0: trap in init"), "{reason}");
        assert_eq!(ch.assignments, BTreeSet::from(["n0".to_string()]));
        assert!(r.assigned.values().all(|&v| v == 1));
        // Nothing moves afterwards.
        assert!(r.step(2, &obs).assignments.is_empty());
    }

    #[test]
    fn failures_under_the_ratio_are_tolerated() {
        let (r, mut obs) = stable_fleet(4);
        let mut r = r.supersede(2, strategy(0, 2, 0, 0.5), 0);
        r.step(0, &obs);
        fail(obs.get_mut("n0").unwrap());
        run(obs.get_mut("n1").unwrap(), 0);
        let ch = r.step(1, &obs);
        assert_eq!(r.phase, Phase::Batches, "1 of 2 is not above 0.5");
        assert_eq!(ch.assignments.len(), 2, "next batch");
        fail(obs.get_mut("n2").unwrap());
        r.step(2, &obs);
        assert_eq!(r.phase, Phase::Batches, "2 of 4 updated is not above 0.5");
        fail(obs.get_mut("n3").unwrap());
        r.step(3, &obs);
        assert_eq!(r.phase, Phase::RolledBack, "3 of 4 is");
        assert_eq!(r.nodes["n1"].state, NodeState::RolledBack);
    }

    #[test]
    fn a_crash_while_baking_fails_the_node() {
        let (r, mut obs) = stable_fleet(2);
        let mut r = r.supersede(2, strategy(1, 1, 60, 0.0), 0);
        r.step(0, &obs);
        run(obs.get_mut("n0").unwrap(), 0);
        r.step(1, &obs);
        run(obs.get_mut("n0").unwrap(), 1);
        r.step(2, &obs);
        assert_eq!(r.phase, Phase::RolledBack);
        assert!(r.reason.unwrap().contains("crashed while baking"));
    }

    #[test]
    fn pause_resume_and_abort() {
        let (r, mut obs) = stable_fleet(3);
        let mut r = r.supersede(2, strategy(1, 1, 0, 0.0), 0);
        r.pause().unwrap();
        assert!(
            r.step(0, &obs).assignments.is_empty(),
            "paused: nothing starts"
        );
        r.resume().unwrap();
        r.step(1, &obs);
        assert_eq!(r.assigned["n0"], 2, "the canary");
        r.pause().unwrap();
        run(obs.get_mut("n0").unwrap(), 0);
        assert!(
            r.step(2, &obs).assignments.is_empty(),
            "a healthy canary starts no batch while paused"
        );
        assert_eq!(r.nodes["n0"].state, NodeState::Healthy);
        r.abort(4).unwrap();
        let ch = r.step(4, &obs);
        assert_eq!(r.phase, Phase::Aborted);
        assert_eq!(ch.assignments, BTreeSet::from(["n0".to_string()]));
        assert_eq!(r.nodes["n0"].state, NodeState::RolledBack);
        assert!(r.assigned.values().all(|&v| v == 1));
        assert!(r.pause().is_err() && r.resume().is_err() && r.abort(5).is_err());
    }

    #[test]
    fn a_newer_revision_supersedes_a_stuck_one() {
        let (r, mut obs) = stable_fleet(3);
        let mut r = r.supersede(2, strategy(1, 1, 3_600, 0.0), 0);
        r.step(0, &obs);
        run(obs.get_mut("n0").unwrap(), 0);
        r.step(1, &obs);
        assert_eq!(r.nodes["n0"].state, NodeState::Baking, "stuck for an hour");

        let mut r = r.supersede(3, Strategy::default(), 2);
        assert_eq!(r.history.last().unwrap().phase, Phase::Superseded);
        assert_eq!(
            r.stable,
            Some(1),
            "an unfinished revision never becomes stable"
        );
        for o in obs.values_mut() {
            o.report = None;
        }
        let ch = r.step(2, &obs);
        assert_eq!(ch.assignments.len(), 3);
        assert!(r.assigned.values().all(|&v| v == 3));
        for o in obs.values_mut() {
            run(o, 0);
        }
        r.step(3, &obs);
        r.step(4, &obs);
        assert_eq!(r.phase, Phase::Complete);
        assert_eq!(r.stable, Some(3));
    }

    #[test]
    fn superseded_nodes_keep_their_revision_until_their_batch() {
        let (r, mut obs) = stable_fleet(3);
        let mut r = r.supersede(2, strategy(1, 1, 3_600, 0.0), 0);
        r.step(0, &obs);
        run(obs.get_mut("n0").unwrap(), 0);
        r.step(1, &obs);
        let mut r = r.supersede(3, strategy(0, 1, 0, 0.0), 2);
        for o in obs.values_mut() {
            o.report = None;
        }
        // Batch of one, id order: n0 first, so n0 moves 2 → 3 and the others wait on 1.
        r.step(2, &obs);
        assert_eq!(r.assigned["n0"], 3);
        assert_eq!(r.assigned["n1"], 1);
    }

    #[test]
    fn late_joiners_and_offline_nodes() {
        let (mut r, mut obs) = stable_fleet(2);
        // A node joining after completion gets the revision at once.
        obs.insert(
            "late".into(),
            Observed {
                online: true,
                targeted: true,
                stable_targeted: true,
                report: None,
            },
        );
        let ch = r.step(10, &obs);
        assert_eq!(ch.assignments, BTreeSet::from(["late".to_string()]));
        assert_eq!(r.nodes["late"].state, NodeState::Updating);

        // A node joining during a rollout runs the stable revision until its batch.
        let mut during = r.clone().supersede(2, strategy(1, 1, 3_600, 0.0), 11);
        let mut joined = obs.clone();
        joined.insert(
            "later".into(),
            Observed {
                online: false,
                targeted: true,
                stable_targeted: true,
                report: None,
            },
        );
        during.step(11, &joined);
        assert_eq!(during.nodes["later"].state, NodeState::Pending);
        assert_eq!(during.assigned["later"], 1);

        // An offline node does not hold a rollout up; it gets the revision on return.
        obs.get_mut("n1").unwrap().online = false;
        let mut r = r.supersede(2, strategy(0, 1, 0, 0.0), 20);
        for id in ["late", "n0"] {
            r.step(21, &obs);
            run(obs.get_mut(id).unwrap(), 0);
        }
        r.step(22, &obs);
        r.step(23, &obs);
        assert_eq!(r.phase, Phase::Complete);
        assert_eq!(r.assigned["n1"], 2);
    }

    #[test]
    fn a_first_revision_waits_for_nodes_and_leaves_untargeted_ones() {
        let mut r = Rollout::first(1, strategy(1, 1, 0, 0.0), 0);
        assert!(r.step(0, &BTreeMap::new()).assignments.is_empty());
        assert_eq!(r.phase, Phase::Canary, "no node yet: nothing to judge");
        let mut obs = fleet(1);
        r.step(1, &obs);
        assert_eq!(r.assigned["n0"], 1);
        fail(obs.get_mut("n0").unwrap());
        r.step(2, &obs);
        assert_eq!(r.phase, Phase::RolledBack);
        assert!(
            r.assigned.is_empty(),
            "no stable revision: the module is removed"
        );

        // Relabelled out of a complete deployment: the module goes.
        let (mut r, mut obs) = stable_fleet(2);
        obs.get_mut("n1").unwrap().targeted = false;
        let ch = r.step(5, &obs);
        assert_eq!(ch.assignments, BTreeSet::from(["n1".to_string()]));
        assert!(!r.assigned.contains_key("n1"));
    }

    /// The sequence users hit: revision 1 runs everywhere but is still baking when
    /// revision 2 (which traps in init) is posted. The failed canary must send every node
    /// back to revision 1, not remove the module.
    #[test]
    fn a_failing_revision_posted_while_the_previous_one_bakes_returns_to_it() {
        let mut obs = fleet(3);
        let mut r = Rollout::first(1, strategy(1, 1, 3, 0.0), 0);
        // Canary, then one node per batch, each baking 3 s: every node runs 1, the last
        // still baking.
        let mut now = 0;
        for id in ["n0", "n1", "n2"] {
            now += 3_001;
            r.step(now, &obs);
            assert_eq!(r.assigned[id], 1);
            run(obs.get_mut(id).unwrap(), 0);
            r.step(now + 1, &obs);
        }
        assert!(
            r.phase.is_active(),
            "the last node still bakes: {:?}",
            r.phase
        );
        assert_eq!(r.stable, None);

        let mut r = r.supersede(2, strategy(1, 1, 3, 0.0), now);
        assert_eq!(r.stable, Some(1), "every node runs 1 healthy");
        for o in obs.values_mut() {
            o.report = None;
        }
        r.step(now + 1, &obs);
        assert_eq!(r.assigned["n0"], 2, "the canary");
        assert_eq!(r.assigned["n1"], 1, "the others keep 1");
        fail(obs.get_mut("n0").unwrap());
        r.step(now + 2, &obs);
        assert_eq!(r.phase, Phase::RolledBack);
        assert_eq!(
            r.assigned,
            BTreeMap::from([("n0".into(), 1), ("n1".into(), 1), ("n2".into(), 1)]),
            "every node back on the revision it ran"
        );
        assert_eq!(r.stable, Some(1));
    }

    /// Nodes that ran different revisions go back to their own.
    #[test]
    fn a_rollback_returns_each_node_to_its_own_revision() {
        let (r, mut obs) = stable_fleet(3);
        // Revision 2: the canary n0 runs it healthy, n1 got it but never ran it.
        let mut r = r.supersede(2, strategy(1, 1, 3_600, 0.5), 0);
        r.step(0, &obs);
        run(obs.get_mut("n0").unwrap(), 0);
        r.step(1, &obs);
        r.nodes.get_mut("n0").unwrap().state = NodeState::Healthy;
        r.step(2, &obs);
        assert_eq!(r.assigned["n1"], 2, "first batch");
        // Revision 3 supersedes; it fails on its canary.
        let mut r = r.supersede(3, strategy(1, 1, 0, 0.0), 3);
        for o in obs.values_mut() {
            o.report = None;
        }
        r.step(3, &obs);
        fail(obs.get_mut("n0").unwrap());
        r.step(4, &obs);
        assert_eq!(r.phase, Phase::RolledBack);
        assert_eq!(r.assigned["n0"], 2, "n0 ran 2 healthy");
        assert_eq!(r.assigned["n1"], 1, "n1 never ran 2: back to 1");
        assert_eq!(r.assigned["n2"], 1);
    }

    /// Two failing revisions in a row: the nodes end on the last good one, and an abort in
    /// the middle of a phase does the same.
    #[test]
    fn two_failing_revisions_and_an_abort_end_on_the_last_good_one() {
        let (r, mut obs) = stable_fleet(3);
        let mut r = r.supersede(2, strategy(1, 1, 0, 0.0), 0);
        r.step(0, &obs);
        fail(obs.get_mut("n0").unwrap());
        // Revision 3 is posted before revision 2's failure is judged.
        let mut r = r.supersede(3, strategy(0, 3, 0, 0.0), 1);
        assert_eq!(r.stable, Some(1));
        for o in obs.values_mut() {
            o.report = None;
        }
        r.step(1, &obs);
        assert!(r.assigned.values().all(|&v| v == 3), "one batch of three");
        r.abort(2).unwrap();
        r.step(2, &obs);
        assert_eq!(r.phase, Phase::Aborted);
        assert!(r.assigned.values().all(|&v| v == 1), "{:?}", r.assigned);
    }
}
