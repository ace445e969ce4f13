//! Which modules a node should run, given the deployments. Pure: no I/O, no clock.

use wedge_proto::messages::ModuleSpec;

use crate::model::{DeploymentRecord, DesiredRecord};

/// The module list made of these deployment revisions (each node's assigned ones),
/// sorted by instance name so equal inputs give equal outputs.
pub fn modules_for<'a>(records: impl IntoIterator<Item = &'a DeploymentRecord>) -> Vec<ModuleSpec> {
    let mut modules: Vec<ModuleSpec> = records.into_iter().map(spec).collect();
    modules.sort_by(|a, b| a.name.cmp(&b.name));
    modules
}

/// What a node is told about one deployment revision.
pub fn spec(d: &DeploymentRecord) -> ModuleSpec {
    ModuleSpec {
        name: d.name.clone(),
        module: d.module.name.clone(),
        version: d.module.version.clone(),
        digest: d.module.digest,
        size: d.module.size,
        subscriptions: d.subscriptions.clone(),
        config: d.config.clone(),
        publish_prefixes: d.publish_prefixes.clone(),
        tick_ms: d.tick_ms,
        limits: d.limits.clone(),
        signature: d.module.signature.clone(),
        native: None,
    }
}

/// The next desired record for a node: the same one when nothing changed, otherwise the
/// new module list under the next generation. `None` when a node that never had modules
/// still has none (nothing to tell it).
pub fn next(current: Option<&DesiredRecord>, modules: Vec<ModuleSpec>) -> Option<DesiredRecord> {
    match current {
        Some(cur) if cur.modules == modules => None,
        None if modules.is_empty() => None,
        cur => Some(DesiredRecord {
            generation: cur.map_or(0, |c| c.generation) + 1,
            modules,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ModuleRecord, Target};
    use wedge_proto::Digest;

    fn deployment(name: &str, target: Target) -> DeploymentRecord {
        DeploymentRecord {
            name: name.into(),
            revision: 1,
            module: ModuleRecord {
                name: "m".into(),
                version: "1".into(),
                digest: Digest::of(name.as_bytes()),
                size: 3,
                uploaded_at_ms: 0,
                signature: None,
            },
            target,
            subscriptions: vec!["s/#".into()],
            config: "{}".into(),
            publish_prefixes: vec![],
            tick_ms: None,
            limits: Default::default(),
            strategy: Default::default(),
            created_at_ms: 0,
        }
    }

    #[test]
    fn sorted_by_name() {
        let ds = [
            deployment("zeta", Target::Nodes(vec!["n1".into()])),
            deployment("alpha", Target::Nodes(vec!["n1".into()])),
        ];
        let names: Vec<_> = modules_for(&ds).into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["alpha", "zeta"]);
    }

    #[test]
    fn generation_moves_only_on_change() {
        let ds = [deployment("a", Target::Nodes(vec!["n1".into()]))];
        let m = modules_for(&ds);
        assert_eq!(next(None, vec![]), None);
        let first = next(None, m.clone()).unwrap();
        assert_eq!(first.generation, 1);
        assert_eq!(next(Some(&first), m), None);
        let emptied = next(Some(&first), vec![]).unwrap();
        assert_eq!(emptied.generation, 2);
        assert!(emptied.modules.is_empty());
    }
}
