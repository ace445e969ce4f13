//! Deployments and their rollouts as the API shows them, for the rollout tests.

use serde_json::{Value, json};

/// A deployment `name` of `module` to the nodes labelled `fleet=<fleet>`, listening on
/// `sensors/#`, with `strategy` (`{}`: all at once).
pub fn deployment(name: &str, module: &str, fleet: &str, strategy: Value) -> Value {
    let config = if module.starts_with("threshold-alert") {
        json!({"threshold": 50.0, "alert_topic": "alerts"})
    } else {
        json!({})
    };
    json!({
        "name": name,
        "module": module,
        "selector": {"labels": {"fleet": fleet}},
        "subscriptions": ["sensors/#"],
        "config": config,
        "strategy": strategy,
    })
}

/// Each node of the rollout: (id, state, the revision it is told to run), in id order.
pub fn node_states(d: &Value) -> Vec<(String, String, Option<u64>)> {
    d["rollout"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            (
                n["node"].as_str().unwrap_or_default().to_string(),
                n["state"].as_str().unwrap_or_default().to_string(),
                n["revision"].as_u64(),
            )
        })
        .collect()
}

/// How each earlier revision's rollout ended: (revision, phase).
pub fn history(d: &Value) -> Vec<(u64, String)> {
    d["rollout"]["history"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            (
                h["revision"].as_u64().unwrap_or_default(),
                h["phase"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}
