//! What the agent must do to make the running modules match the desired state: a pure
//! function of the two, tested alone (the agent performs the actions).
//!
//! A module keeps running when its spec is unchanged; one whose spec changed is started
//! anew and its running instance retired (the agent starts the new instance and moves the
//! route before stopping the old one, so messages keep flowing); one no longer desired is
//! retired.

use std::collections::{BTreeMap, BTreeSet};

use wedge_proto::messages::ModuleSpec;

/// The actions that turn `running` into `desired`.
#[derive(Debug, Default, PartialEq)]
pub struct Actions {
    /// Running with the desired spec: left alone.
    pub keep: BTreeSet<String>,
    /// To start: new, or changed (in desired order).
    pub start: Vec<ModuleSpec>,
    /// Running instances to stop: gone from the desired state, or replaced.
    pub retire: BTreeSet<String>,
}

/// The actions for `desired` (one spec per name, as the control plane sends) given the specs
/// of the instances `running`.
pub fn diff(desired: &[ModuleSpec], running: &BTreeMap<String, ModuleSpec>) -> Actions {
    let mut actions = Actions::default();
    for spec in desired {
        match running.get(&spec.name) {
            Some(current) if same_but_native(current, spec) => {
                actions.keep.insert(spec.name.clone());
            }
            _ => actions.start.push(spec.clone()),
        }
    }
    actions.retire = running
        .keys()
        .filter(|name| !actions.keep.contains(*name))
        .cloned()
        .collect();
    actions
}

/// Equal but for the native code the control plane offers: a module that runs (however it
/// was compiled) is not restarted because precompiled code for it became available.
fn same_but_native(a: &ModuleSpec, b: &ModuleSpec) -> bool {
    ModuleSpec {
        native: None,
        ..a.clone()
    } == ModuleSpec {
        native: None,
        ..b.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use wedge_proto::Digest;

    fn spec(name: &str, version: u8) -> ModuleSpec {
        ModuleSpec {
            name: name.into(),
            module: name.into(),
            version: version.to_string(),
            digest: Digest::of(&[version]),
            size: 1,
            subscriptions: vec!["sensors/#".into()],
            config: String::new(),
            publish_prefixes: Vec::new(),
            tick_ms: None,
            limits: Default::default(),
            signature: None,
            native: None,
        }
    }

    #[test]
    fn unchanged_kept_changed_restarted_gone_retired() {
        let running = BTreeMap::from([
            ("same".to_string(), spec("same", 1)),
            ("changed".to_string(), spec("changed", 1)),
            ("gone".to_string(), spec("gone", 1)),
        ]);
        let desired = [spec("same", 1), spec("changed", 2), spec("new", 1)];
        let actions = diff(&desired, &running);
        assert_eq!(actions.keep, BTreeSet::from(["same".to_string()]));
        assert_eq!(actions.start, vec![spec("changed", 2), spec("new", 1)]);
        assert_eq!(
            actions.retire,
            BTreeSet::from(["changed".to_string(), "gone".to_string()])
        );
    }

    #[test]
    fn native_code_appearing_does_not_restart_a_running_module() {
        let running = BTreeMap::from([("m".to_string(), spec("m", 1))]);
        let mut offered = spec("m", 1);
        offered.native = Some(wedge_proto::messages::NativeArtifact {
            key: "x86_64-unknown-linux-gnu/0000000000000001".into(),
            digest: Digest::of(b"native"),
            size: 6,
        });
        let actions = diff(&[offered], &running);
        assert_eq!(actions.keep, BTreeSet::from(["m".to_string()]));
        assert!(actions.start.is_empty() && actions.retire.is_empty());
    }

    proptest! {
        /// Whatever runs and whatever is desired: after the actions exactly the desired
        /// specs run, each desired module is kept or started (never both), and only what
        /// is not kept is retired.
        #[test]
        fn the_actions_reach_the_desired_state(
            running in proptest::collection::btree_map("[a-d]", 0u8..3, 0..4),
            desired in proptest::collection::btree_map("[a-d]", 0u8..3, 0..4),
        ) {
            let running: BTreeMap<String, ModuleSpec> =
                running.iter().map(|(n, v)| (n.clone(), spec(n, *v))).collect();
            let desired: Vec<ModuleSpec> = desired.iter().map(|(n, v)| spec(n, *v)).collect();
            let actions = diff(&desired, &running);

            let mut after = running.clone();
            after.retain(|name, _| !actions.retire.contains(name));
            for s in &actions.start {
                prop_assert!(!actions.keep.contains(&s.name));
                prop_assert!(after.insert(s.name.clone(), s.clone()).is_none());
            }
            let wanted: BTreeMap<String, ModuleSpec> =
                desired.iter().map(|s| (s.name.clone(), s.clone())).collect();
            prop_assert_eq!(after, wanted);
            for name in &actions.retire {
                prop_assert!(running.contains_key(name) && !actions.keep.contains(name));
            }
        }
    }
}
