//! A model test of the rollout plan: random sequences of posts, node health, nodes going
//! offline and back, pause, resume and abort, with the promises checked after every step:
//! no node left without a healthy revision it had (unless an operator removed the module),
//! `stable` defined while nodes run a healthy revision, counts that add up, revisions in
//! order.

use std::collections::{BTreeMap, BTreeSet};

use wedge_proto::messages::ModuleState;

use super::tests::strategy;
use super::*;
use proptest::prelude::{
    Just, ProptestConfig, TestCaseError, any, prop_assert, prop_assert_eq, prop_oneof, proptest,
};
use proptest::strategy::Strategy as _;

#[derive(Debug, Clone)]
enum Op {
    /// A new revision; `fails`: it traps in init everywhere.
    Post {
        fails: bool,
        canary: u64,
        batch: u64,
        bake_s: u64,
    },
    /// Time passes (milliseconds).
    Tick(u64),
    /// A node goes offline or comes back.
    Flip(usize),
    Pause,
    Resume,
    Abort,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    prop_oneof![
        1 => (any::<bool>(), 0..3u64, 1..3u64, 0..3u64).prop_map(
            |(fails, canary, batch, bake_s)| Op::Post { fails, canary, batch, bake_s }
        ),
        4 => (1..4_000u64).prop_map(Op::Tick),
        1 => (0..4usize).prop_map(Op::Flip),
        1 => Just(Op::Pause),
        1 => Just(Op::Resume),
        1 => Just(Op::Abort),
    ]
}

#[derive(Debug, Default, Clone)]
struct Node {
    online: bool,
    /// The revision it runs (applied while online).
    running: Option<u64>,
    /// Revisions it ran without failure since it last ran none (an abort or
    /// rollback of a first revision removes the module: the operator's call).
    good: BTreeSet<u64>,
}

struct World {
    nodes: Vec<Node>,
    fails: BTreeMap<u64, bool>,
    rollout: Option<Rollout>,
    now: u64,
    /// Revisions that completed their rollout (proven on the fleet).
    completed: BTreeSet<u64>,
    /// What each node ran healthy before the current rollout was posted.
    good_before: Vec<BTreeSet<u64>>,
}

impl World {
    fn observed(&self) -> BTreeMap<String, Observed> {
        let current = self.rollout.as_ref().map(|r| r.revision);
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let report = n.running.filter(|r| Some(*r) == current).map(|r| {
                    if self.fails[&r] {
                        Report {
                            state: ModuleState::Failed,
                            restarts: 1,
                            error: Some("trap in init".into()),
                        }
                    } else {
                        Report {
                            state: ModuleState::Running,
                            restarts: 0,
                            error: None,
                        }
                    }
                });
                let o = Observed {
                    online: n.online,
                    targeted: true,
                    stable_targeted: true,
                    report: report.filter(|_| n.online),
                };
                (format!("n{i}"), o)
            })
            .collect()
    }

    fn step(&mut self) {
        let observed = self.observed();
        let Some(r) = self.rollout.as_mut() else {
            return;
        };
        r.step(self.now, &observed);
        if r.phase == Phase::Complete {
            self.completed.insert(r.revision);
        }
        for (i, n) in self.nodes.iter_mut().enumerate() {
            let assigned = r.assigned.get(&format!("n{i}")).copied();
            if assigned.is_none() {
                // Told to run none (an offline node learns it on return).
                n.good.clear();
            }
            if n.online {
                n.running = assigned;
                if let Some(rev) = assigned
                    && !self.fails[&rev]
                {
                    n.good.insert(rev);
                }
            }
        }
    }

    fn check(&self, posted: u64) -> Result<(), TestCaseError> {
        let Some(r) = &self.rollout else {
            return Ok(());
        };
        prop_assert_eq!(r.revision, posted, "the latest revision is rolled out");
        let counted: usize = r.counts().values().sum();
        prop_assert_eq!(counted, r.nodes.len(), "counts add up");
        let revisions: Vec<u64> = r.history.iter().map(|o| o.revision).collect();
        prop_assert!(
            revisions.windows(2).all(|w| w[0] < w[1]),
            "history in revision order, none repeated: {:?}",
            revisions
        );
        if matches!(r.phase, Phase::RolledBack | Phase::Aborted) {
            for (i, before) in self.good_before.iter().enumerate() {
                let assigned = r.assigned.get(&format!("n{i}")).copied();
                // Whatever it is given back, it ran healthy before or the fleet completed
                // it: never the failed revision, never one it had not been given.
                prop_assert!(
                    assigned.is_none_or(|a| before.contains(&a) || self.completed.contains(&a)),
                    "n{} ran {:?} healthy before revision {}, now assigned {:?}",
                    i,
                    before,
                    r.revision,
                    assigned
                );
                if before.is_empty() {
                    continue;
                }
                // It had a healthy revision: it keeps one.
                prop_assert!(
                    assigned.is_some(),
                    "n{} ran {:?} healthy before revision {}, now has none",
                    i,
                    before,
                    r.revision
                );
                prop_assert!(
                    r.stable.is_some(),
                    "stable_revision is defined while nodes run a healthy one"
                );
            }
        }
        if r.phase == Phase::Complete {
            prop_assert_eq!(r.stable, Some(r.revision));
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn rollouts_never_leave_a_node_worse_off(
        initially_online in proptest::collection::vec(any::<bool>(), 1..5),
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let mut w = World {
            nodes: initially_online
                .iter()
                .map(|&online| Node { online, ..Node::default() })
                .collect(),
            fails: BTreeMap::new(),
            rollout: None,
            now: 0,
            completed: BTreeSet::new(),
            good_before: Vec::new(),
        };
        let mut posted = 0;
        for op in ops {
            match op {
                Op::Post { fails, canary, batch, bake_s } => {
                    posted += 1;
                    w.fails.insert(posted, fails);
                    w.good_before = w.nodes.iter().map(|n| n.good.clone()).collect();
                    let s = strategy(canary, batch, bake_s, 0.0);
                    w.rollout = Some(match w.rollout.take() {
                        Some(r) => r.supersede(posted, s, w.now),
                        None => Rollout::first(posted, s, w.now),
                    });
                }
                Op::Tick(ms) => w.now += ms,
                Op::Flip(i) => {
                    if let Some(n) = w.nodes.get_mut(i) {
                        n.online = !n.online;
                    }
                }
                Op::Pause => {
                    if let Some(r) = w.rollout.as_mut() {
                        let _ = r.pause();
                    }
                }
                Op::Resume => {
                    if let Some(r) = w.rollout.as_mut() {
                        let _ = r.resume();
                    }
                }
                Op::Abort => {
                    if let Some(r) = w.rollout.as_mut() {
                        let _ = r.abort(w.now);
                    }
                }
            }
            w.step();
            w.check(posted)?;
            w.step();
            w.check(posted)?;
        }
    }
}
