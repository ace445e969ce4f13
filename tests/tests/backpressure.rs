//! Bursts from devices into a module that cannot keep up: at QoS 1 nothing the broker
//! acknowledged is lost (devices are slowed down instead); at QoS 0 whatever the module's
//! full queue drops is counted, the same in the API and in the node's metrics.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use serde_json::json;
use wedge_tests::{Api, ControlPlane, DEVICE_PASSWORD, DEVICE_USER, Node, metric, wait_for};

const DEADLINE: Duration = Duration::from_secs(120);

/// A node running `threshold-alert` as `alert` on `sensors/#`, with `queue` messages of
/// queue.
async fn node_with_alert(cp: &ControlPlane, id: &str, queue: usize) -> anyhow::Result<Node> {
    let node = Node::start_configured(cp, id, &[], "127.0.0.1:0".parse()?, |c| {
        c.limits.queue = queue;
    })
    .await?;
    cp.api.wait_status(id, "online", DEADLINE).await?;
    let (status, answer) = cp
        .api
        .post_json(
            "/api/v1/deployments",
            &json!({"name": format!("alert-{id}"), "module": "threshold-alert@1", "nodes": [id],
                    "subscriptions": ["sensors/#"],
                    "config": {"threshold": 50, "alert_topic": "alerts/temp"}}),
        )
        .await?;
    ensure!(status == 201, "{answer}");
    cp.api
        .wait_module_state(id, &format!("alert-{id}"), "running", DEADLINE)
        .await?;
    Ok(node)
}

/// Publishes `count` readings from one device as fast as it can (`wedge-load`, its own
/// process); at QoS 1 it returns once every one is acknowledged.
async fn burst(node: &Node, count: u64, qos: u8) -> anyhow::Result<String> {
    let mut load = tokio::process::Command::new(env!("CARGO_BIN_EXE_wedge-load"));
    load.arg(node.local_mqtt_addr.to_string())
        .args(["--count", &count.to_string(), "--qos", &qos.to_string()])
        .args(["--user", DEVICE_USER, "--password", DEVICE_PASSWORD])
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(DEADLINE, load.output())
        .await
        .context("wedge-load took too long")??;
    ensure!(
        out.status.success(),
        "wedge-load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The module's counters once `messages + dropped` reached `total`.
async fn counters(cp: &ControlPlane, id: &str, total: u64) -> anyhow::Result<(u64, u64)> {
    let name = format!("alert-{id}");
    wait_for(
        "the module to account for every reading",
        DEADLINE,
        || async {
            let stats = cp.api.module(id, &name).await?["stats"].clone();
            let (messages, dropped) = (stats["messages"].as_u64()?, stats["dropped"].as_u64()?);
            (messages + dropped >= total).then_some((messages, dropped))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_qos1_burst_far_larger_than_the_queue_loses_nothing() -> anyhow::Result<()> {
    const READINGS: u64 = 100_000;
    let cp = ControlPlane::start().await?;
    cp.api.upload_module("threshold-alert", "1").await?;
    // A queue of 64: the burst is 1,500 times the queue.
    let node = node_with_alert(&cp, "bp1", 64).await?;

    let load = burst(&node, READINGS, 1).await?;
    ensure!(
        load.starts_with(&format!("sent {READINGS} acked {READINGS}")),
        "{load}"
    );
    let (messages, dropped) = counters(&cp, "bp1", READINGS).await?;
    assert_eq!(
        (messages, dropped),
        (READINGS, 0),
        "every acknowledged reading handled"
    );

    // The devices were slowed down, and it shows.
    let text = Api::new(node.http_addr()?).get_text("/metrics").await?.1;
    let paused = metric(&text, "wedge_devices_paused_total", &[]).context("paused series")?;
    assert!(paused >= 1.0, "back-pressure never engaged:\n{text}");
    assert_eq!(
        metric(
            &text,
            "wedge_module_dropped_total",
            &[("module", "alert-bp1")]
        ),
        Some(0.0)
    );
    cp.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_qos0_burst_drops_only_at_the_queue_and_counts_every_drop() -> anyhow::Result<()> {
    const READINGS: u64 = 20_000;
    let cp = ControlPlane::start().await?;
    cp.api.upload_module("threshold-alert", "1").await?;
    let node = node_with_alert(&cp, "bp0", 16).await?;

    burst(&node, READINGS, 0).await?;
    let (messages, dropped) = counters(&cp, "bp0", READINGS).await?;
    assert_eq!(
        messages + dropped,
        READINGS,
        "each reading handled or counted as dropped"
    );
    assert!(
        dropped > 0,
        "a 16-message queue took a 20,000-reading burst whole"
    );

    let api = Api::new(node.http_addr()?);
    wait_for("the metric to match the API", DEADLINE, || async {
        let text = api.get_text("/metrics").await.ok()?.1;
        let metric = metric(
            &text,
            "wedge_module_dropped_total",
            &[("module", "alert-bp0")],
        )?;
        (metric == dropped as f64).then_some(())
    })
    .await?;
    cp.stop().await;
    Ok(())
}
