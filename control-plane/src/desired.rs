//! Which modules a node should run, given the deployments. Pure: no I/O, no clock.

use std::collections::BTreeMap;

use wedge_shared::messages::ModuleSpec;

use crate::store::{DeploymentRecord, DesiredRecord};

/// The module list for node `id` with `labels`, sorted by instance name so equal inputs
/// give equal outputs.
pub fn modules_for(
    id: &str,
    labels: &BTreeMap<String, String>,
    deployments: &[DeploymentRecord],
) -> Vec<ModuleSpec> {
    let mut modules: Vec<ModuleSpec> = deployments
        .iter()
        .filter(|d| d.target.selects(id, labels))
        .map(|d| ModuleSpec {
            name: d.name.clone(),
            digest: d.module.digest,
            size: d.module.size,
            subscriptions: d.subscriptions.clone(),
            config: d.config.clone(),
            publish_prefixes: d.publish_prefixes.clone(),
            tick_ms: d.tick_ms,
            limits: d.limits.clone(),
        })
        .collect();
    modules.sort_by(|a, b| a.name.cmp(&b.name));
    modules
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
    use crate::store::{ModuleRecord, Target};
    use wedge_shared::Digest;

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
            },
            target,
            subscriptions: vec!["s/#".into()],
            config: "{}".into(),
            publish_prefixes: vec![],
            tick_ms: None,
            limits: Default::default(),
            created_at_ms: 0,
        }
    }

    #[test]
    fn selects_by_id_and_labels_sorted() {
        let labels = BTreeMap::from([("site".to_string(), "x".to_string())]);
        let ds = vec![
            deployment("zeta", Target::Nodes(vec!["n1".into()])),
            deployment("alpha", Target::Labels(labels.clone())),
            deployment("other", Target::Nodes(vec!["n2".into()])),
        ];
        let names: Vec<_> = modules_for("n1", &labels, &ds)
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["alpha", "zeta"]);
        assert!(modules_for("n3", &BTreeMap::new(), &ds).is_empty());
    }

    #[test]
    fn generation_moves_only_on_change() {
        let ds = vec![deployment("a", Target::Nodes(vec!["n1".into()]))];
        let m = modules_for("n1", &BTreeMap::new(), &ds);
        assert_eq!(next(None, vec![]), None);
        let first = next(None, m.clone()).unwrap();
        assert_eq!(first.generation, 1);
        assert_eq!(next(Some(&first), m), None);
        let emptied = next(Some(&first), vec![]).unwrap();
        assert_eq!(emptied.generation, 2);
        assert!(emptied.modules.is_empty());
    }
}
