//! What the node reports: the status of each module (running instances and those waiting
//! to run) and the heartbeat built from it. Pure: the agent gathers the parts.

use std::collections::BTreeMap;

use wedge_proto::Digest;
use wedge_proto::messages::{
    BufferStatus, Heartbeat, ModuleSpec, ModuleState, ModuleStatus, Resources,
};

use super::NodeProfile;

/// The status of a module that is wanted but has no running instance.
pub fn waiting(spec: &ModuleSpec, state: ModuleState, error: Option<String>) -> ModuleStatus {
    ModuleStatus {
        name: spec.name.clone(),
        digest: spec.digest,
        state,
        last_error: error,
        restarts: 0,
        stats: Default::default(),
    }
}

/// Sets the state (and error) of every waiting module whose blob is `digest`.
pub fn mark_digest(
    waiting: &mut BTreeMap<String, ModuleStatus>,
    digest: &Digest,
    state: ModuleState,
    error: Option<String>,
) {
    for status in waiting.values_mut().filter(|s| s.digest == *digest) {
        status.state = state;
        status.last_error.clone_from(&error);
    }
}

/// Every module's status, running or waiting, sorted by name.
pub fn modules(
    running: impl Iterator<Item = ModuleStatus>,
    waiting: &BTreeMap<String, ModuleStatus>,
) -> Vec<ModuleStatus> {
    let mut all: Vec<ModuleStatus> = running.chain(waiting.values().cloned()).collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    all
}

/// What a heartbeat reports besides the node's profile.
#[derive(Debug)]
pub struct Report {
    pub now_ms: u64,
    pub desired_generation: u64,
    pub applied_generation: u64,
    pub modules: Vec<ModuleStatus>,
    pub buffer: BufferStatus,
    pub resources: Resources,
}

/// The heartbeat of this node.
pub fn heartbeat(profile: &NodeProfile, report: Report) -> Heartbeat {
    Heartbeat {
        node_id: profile.node_id.clone(),
        sent_at_ms: report.now_ms,
        arch: std::env::consts::ARCH.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        labels: profile.labels.clone(),
        desired_generation: report.desired_generation,
        applied_generation: report.applied_generation,
        modules: report.modules,
        buffer: report.buffer,
        resources: report.resources,
        precompile_key: profile.precompile_key.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(name: &str, digest: u8, state: ModuleState) -> ModuleStatus {
        ModuleStatus {
            name: name.into(),
            digest: Digest::of(&[digest]),
            state,
            last_error: None,
            restarts: 0,
            stats: Default::default(),
        }
    }

    #[test]
    fn statuses_are_sorted_and_waiting_ones_marked_by_digest() {
        let mut waiting = BTreeMap::from([
            ("b".to_string(), status("b", 1, ModuleState::Fetching)),
            ("c".to_string(), status("c", 2, ModuleState::Fetching)),
        ]);
        mark_digest(
            &mut waiting,
            &Digest::of(&[1]),
            ModuleState::Failed,
            Some("no".into()),
        );
        let all = modules([status("a", 3, ModuleState::Running)].into_iter(), &waiting);
        let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(all[1].state, ModuleState::Failed);
        assert_eq!(all[1].last_error.as_deref(), Some("no"));
        assert_eq!(all[2].state, ModuleState::Fetching);
    }
}
