//! "Rollouts never make things worse than before", through the sequences users perform
//! with several revisions in flight, over real nodes and real modules: a failing revision
//! posted while the previous one is still baking, canarying or half-rolled, a failing
//! revision superseding another failing one, an abort after a pause in the middle of a
//! superseding canary, and revisions posted concurrently.

use std::time::Duration;

use serde_json::{Value, json};
use wedge_tests::rollout::{history, node_states};
use wedge_tests::{Api, ControlPlane, Device, Node, wait_for};

const DEADLINE: Duration = Duration::from_secs(60);

/// A deployment named `m` of `module` to the nodes labelled `fleet=s`.
fn deployment(module: &str, strategy: Value) -> Value {
    wedge_tests::rollout::deployment("m", module, "s", strategy)
}

/// Canary 1, batches of 1, `bake` seconds, no failure tolerated.
fn careful(bake: u64) -> Value {
    json!({"canary": 1, "batch": 1, "bake_seconds": bake, "max_failure_ratio": 0.0})
}

/// The revision each node is assigned, in node order.
fn assigned(d: &Value) -> Vec<(String, Option<u64>)> {
    node_states(d)
        .into_iter()
        .map(|(id, _, revision)| (id, revision))
        .collect()
}

/// Publishes readings through `device` (to a node running a module that traps on every
/// message) until revision `revision` of `m` is rolled back; returns the deployment.
async fn rolled_back_under_messages(
    api: &Api,
    device: &Device,
    revision: u64,
) -> anyhow::Result<Value> {
    wait_for(
        &format!("revision {revision} rolled back"),
        DEADLINE,
        || async {
            device.publish("sensors/t", b"72").await.ok()?;
            let d = api.deployment("m").await.ok().flatten()?;
            (d["rollout"]["revision"] == revision && d["rollout"]["phase"] == "rolled_back")
                .then_some(d)
        },
    )
    .await
}

async fn fleet(cp: &ControlPlane, ids: &[&str]) -> anyhow::Result<Vec<Node>> {
    let mut nodes = Vec::new();
    for id in ids {
        nodes.push(Node::start(cp, id, &[("fleet", "s")]).await?);
    }
    Ok(nodes)
}

async fn stop(cp: ControlPlane, nodes: Vec<Node>) {
    for mut n in nodes {
        n.stop().await;
    }
    cp.stop().await;
}

/// The issue as users met it: revision 1 runs on every node but is still baking when
/// revision 2, which traps in init, is posted. The failed canary must return every node
/// to revision 1, not remove the module from the fleet.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_revision_posted_while_the_first_still_bakes() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let api = &cp.api;
    let ids = ["a-1", "a-2", "a-3"];
    let nodes = fleet(&cp, &ids).await?;
    let good = api.upload_module("threshold-alert", "1").await?;
    api.upload_module("hostile-trap-init", "1").await?;

    // Long enough a bake that the last node is still baking when every node runs it.
    api.deploy(&deployment("threshold-alert@1", careful(8)))
        .await?;
    for id in ids {
        api.wait_running_digest(id, "m", &good, DEADLINE).await?;
    }
    api.deploy(&deployment("hostile-trap-init@1", careful(3)))
        .await?;
    let d = api.wait_rollout("m", 2, "rolled_back", DEADLINE).await?;
    assert_eq!(
        history(&d),
        [(1, "superseded".to_string())],
        "revision 1 had not finished"
    );
    assert_eq!(d["rollout"]["stable_revision"], 1, "{d}");
    assert_eq!(
        assigned(&d),
        ids.iter()
            .map(|id| (id.to_string(), Some(1)))
            .collect::<Vec<_>>()
    );
    for id in ids {
        api.wait_running_digest(id, "m", &good, DEADLINE).await?;
    }
    stop(cp, nodes).await;
    Ok(())
}

/// Revision 2 fails on its canary but tolerates failures, so it stays in flight; revision
/// 3 fails too. Every node ends on revision 1, the last one that ran healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_revision_superseding_a_failing_one() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let api = &cp.api;
    let ids = ["b-1", "b-2", "b-3"];
    let nodes = fleet(&cp, &ids).await?;
    let good = api.upload_module("threshold-alert", "1").await?;
    api.upload_module("hostile-trap-init", "1").await?;
    api.upload_module("hostile-trap-message", "1").await?;
    api.deploy(&deployment("threshold-alert@1", json!({})))
        .await?;
    api.wait_rollout("m", 1, "complete", DEADLINE).await?;

    api.deploy(&deployment(
        "hostile-trap-init@1",
        json!({"canary": 1, "batch": 1, "bake_seconds": 3600, "max_failure_ratio": 1.0}),
    ))
    .await?;
    wait_for("revision 2's canary failed", DEADLINE, || async {
        api.deployment("m")
            .await
            .ok()
            .flatten()
            .filter(|d| d["rollout"]["counts"]["failed"] == 1)
    })
    .await?;
    // Revision 3: another failing module.
    api.deploy(&deployment("hostile-trap-message@1", careful(30)))
        .await?;
    // Its canary gets messages, so it traps.
    let d =
        wait_for("revision 3's canary assigned", DEADLINE, || async {
            api.deployment("m").await.ok().flatten().filter(|d| {
                d["rollout"]["revision"] == 3 && d["rollout"]["counts"]["updating"] == 1
            })
        })
        .await?;
    let canary = assigned(&d)
        .into_iter()
        .find(|(_, r)| *r == Some(3))
        .map(|(id, _)| id)
        .ok_or_else(|| anyhow::anyhow!("no canary: {d}"))?;
    let node = nodes
        .iter()
        .find(|n| n.id == canary)
        .ok_or_else(|| anyhow::anyhow!("no node {canary}"))?;
    let device = Device::connect(node.local_mqtt_addr, "b-sensor", &[]).await?;
    let d = rolled_back_under_messages(api, &device, 3).await?;
    assert_eq!(d["rollout"]["stable_revision"], 1, "{d}");
    assert_eq!(
        assigned(&d),
        ids.iter()
            .map(|id| (id.to_string(), Some(1)))
            .collect::<Vec<_>>(),
        "{d}"
    );
    for id in ids {
        api.wait_running_digest(id, "m", &good, DEADLINE).await?;
    }
    stop(cp, nodes).await;
    Ok(())
}

/// Revision 2 is half-rolled (its canary baking) when revision 3, which traps on every
/// message, is posted and fails: the canary goes back to revision 2, which it ran without
/// failure, the others to revision 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revision_trapping_per_message_posted_while_another_is_half_rolled() -> anyhow::Result<()>
{
    let cp = ControlPlane::start().await?;
    let api = &cp.api;
    let ids = ["c-1", "c-2", "c-3"];
    let nodes = fleet(&cp, &ids).await?;
    let v1 = api.upload_module("threshold-alert", "1").await?;
    let v2 = api.upload_module("forward", "1").await?;
    api.upload_module("hostile-trap-message", "1").await?;
    api.deploy(&deployment("threshold-alert@1", json!({})))
        .await?;
    api.wait_rollout("m", 1, "complete", DEADLINE).await?;
    api.deploy(&deployment("forward@1", careful(3600))).await?;
    api.wait_running_digest("c-1", "m", &v2, DEADLINE).await?;

    api.deploy(&deployment("hostile-trap-message@1", careful(30)))
        .await?;
    let device = Device::connect(nodes[0].local_mqtt_addr, "c-sensor", &[]).await?;
    let d = rolled_back_under_messages(api, &device, 3).await?;
    assert_eq!(
        assigned(&d),
        [
            ("c-1".to_string(), Some(2)),
            ("c-2".to_string(), Some(1)),
            ("c-3".to_string(), Some(1))
        ],
        "{d}"
    );
    assert_eq!(d["rollout"]["stable_revision"], 1, "most nodes run 1: {d}");
    api.wait_running_digest("c-1", "m", &v2, DEADLINE).await?;
    for id in ["c-2", "c-3"] {
        api.wait_running_digest(id, "m", &v1, DEADLINE).await?;
    }
    stop(cp, nodes).await;
    Ok(())
}

/// A first revision is canarying (baking on one node, nothing elsewhere); revision 2 is
/// posted, paused mid-canary, then aborted: the canary goes back to revision 1 and the
/// nodes that never ran anything run nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_and_abort_in_the_middle_of_a_superseding_canary() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let api = &cp.api;
    let ids = ["d-1", "d-2"];
    let nodes = fleet(&cp, &ids).await?;
    let v1 = api.upload_module("threshold-alert", "1").await?;
    let v2 = api.upload_module("window-stats", "1").await?;
    api.deploy(&deployment("threshold-alert@1", careful(3600)))
        .await?;
    api.wait_running_digest("d-1", "m", &v1, DEADLINE).await?;
    api.deploy(&deployment("window-stats@1", careful(3600)))
        .await?;
    api.wait_running_digest("d-1", "m", &v2, DEADLINE).await?;
    let (status, body) = api
        .post_json("/api/v1/deployments/m/pause", &json!({}))
        .await?;
    assert_eq!((status, &body["rollout"]["paused"]), (200, &json!(true)));
    let (status, body) = api
        .post_json("/api/v1/deployments/m/abort", &json!({}))
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rollout"]["phase"], "aborted");
    assert_eq!(body["rollout"]["stable_revision"], 1, "{body}");
    assert_eq!(
        assigned(&body),
        [("d-1".to_string(), Some(1)), ("d-2".to_string(), None)],
        "{body}"
    );
    api.wait_running_digest("d-1", "m", &v1, DEADLINE).await?;
    let d2 = api.node("d-2").await?.unwrap_or_default();
    assert_eq!(d2["modules"], json!([]), "d-2 never ran the module: {d2}");
    stop(cp, nodes).await;
    Ok(())
}

/// Concurrent posts of different specs get distinct, consecutive revisions; the same spec
/// posted concurrently creates one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_posts_are_numbered_atomically() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let api = &cp.api;
    api.upload_module("forward", "1").await?;
    let spec = |sample: u64| {
        json!({
            "name": "c",
            "module": "forward@1",
            "nodes": ["nobody"],
            "config": {"sample": sample},
        })
    };
    let mut posts = tokio::task::JoinSet::new();
    for i in 1..=8u64 {
        let (api, body) = (api.clone(), spec(i));
        posts.spawn(async move { api.post_json("/api/v1/deployments", &body).await });
    }
    let mut revisions = Vec::new();
    for answer in posts.join_all().await {
        let (status, body) = answer?;
        assert_eq!(status, 201, "{body}");
        revisions.push(body["revision"].as_u64().unwrap_or_default());
    }
    revisions.sort_unstable();
    assert_eq!(revisions, (1..=8).collect::<Vec<_>>());

    let same = spec(100);
    let (a, b) = tokio::join!(
        api.post_json("/api/v1/deployments", &same),
        api.post_json("/api/v1/deployments", &same)
    );
    let (a, b) = (a?, b?);
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 201],
        "one creates, the other finds it: {a:?} {b:?}"
    );
    assert_eq!(a.1["revision"], 9);
    assert_eq!(b.1["revision"], 9);
    cp.stop().await;
    Ok(())
}
