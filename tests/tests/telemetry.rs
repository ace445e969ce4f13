//! Telemetry store-and-forward through the real system: modules emit, the node buffers,
//! the control plane stores and acknowledges, the node frees what was acknowledged, and
//! the API serves what was stored.

use std::time::Duration;

use serde_json::{Value, json};
use wedge_tests::{ControlPlane, Device, Node, wait_for};

const DEADLINE: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn emitted_records_are_stored_once_and_freed_on_the_node() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let node = Node::start(&cp, "edge", &[]).await?;
    let api = &cp.api;
    api.upload_module("forward", "1").await?;
    api.deploy(&json!({
        "name": "fw",
        "module": "forward@1",
        "nodes": ["edge"],
        "subscriptions": ["readings/#"],
        "config": {"stream": "readings"},
    }))
    .await?;
    api.wait_module_state("edge", "fw", "running", DEADLINE)
        .await?;

    let device = Device::connect(node.local_mqtt_addr, "device", &[]).await?;
    let total = 300u64;
    for i in 1..=total {
        device
            .publish("readings/r", json!({"n": i}).to_string().as_bytes())
            .await?;
    }

    let stored = wait_for("every record stored", DEADLINE, || async {
        let (status, body) = api
            .get("/api/v1/nodes/edge/telemetry?stream=readings&limit=10000")
            .await
            .ok()?;
        let records = body.as_array()?.clone();
        (status == 200 && records.len() as u64 >= total).then_some(records)
    })
    .await?;
    let seqs: Vec<u64> = stored.iter().filter_map(|r| r["seq"].as_u64()).collect();
    assert_eq!(
        seqs,
        (1..=total).collect::<Vec<_>>(),
        "gapless, in order, once"
    );
    let ns: Vec<u64> = stored
        .iter()
        .filter_map(|r| r["payload"]["n"].as_u64())
        .collect();
    assert_eq!(ns, (1..=total).collect::<Vec<_>>());
    assert_eq!(stored[0]["module"], "fw");
    assert!(stored[0]["timestamp"].is_string());

    // Acknowledged records leave the node; its backlog shows in the API.
    wait_for("the node's buffer drained", DEADLINE, || async {
        let n = api.node("edge").await.ok()??;
        (node.telemetry().ok()?.is_empty() && n["telemetry"]["pending"] == 0).then_some(())
    })
    .await?;

    // Paging and filters.
    let (_, page) = api
        .get("/api/v1/nodes/edge/telemetry?after_seq=100&limit=5")
        .await?;
    let page: Vec<u64> = page
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["seq"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(page, [101, 102, 103, 104, 105]);
    let (_, none) = api.get("/api/v1/nodes/edge/telemetry?stream=other").await?;
    assert_eq!(none, json!([]));
    let (status, body) = api.get("/api/v1/nodes/edge/telemetry?limit=0").await?;
    assert_eq!(status, 400, "{body}");
    let (status, _) = api
        .get("/api/v1/nodes/edge/telemetry?after_seq=abc")
        .await?;
    assert_eq!(status, 400);
    let (status, body) = api.get("/api/v1/nodes/ghost/telemetry").await?;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], Value::from("not_found"));
    Ok(())
}
