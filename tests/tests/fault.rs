//! Store-and-forward under faults, with the real binaries: the link between node and
//! control plane is cut, the node is killed (SIGKILL) during the partition and restarted,
//! the link comes back, and the control plane is killed once during ingest and restarted.
//! Every reading the module emitted must be stored exactly once.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use wedge_tests::process::{Proc, free_port};
use wedge_tests::proxy::Proxy;
use wedge_tests::{Api, Device, metric, wait_for};

const DEADLINE: Duration = Duration::from_secs(120);
/// Readings per phase, one every 5 ms.
const PHASE: u64 = 200;

/// Publishes readings `range` at a fixed rate, then waits until the node's broker has
/// acknowledged all of them, the module has emitted a record for each (`forward`: one
/// record per message) and every record is on the node's disk: from there on the promise
/// holds whatever is killed.
async fn publish(
    device: &Device,
    node: &Proc,
    range: std::ops::RangeInclusive<u64>,
) -> anyhow::Result<()> {
    let before = device.counts().pubacks.load(Ordering::SeqCst);
    let count = range.end() - range.start() + 1;
    let emitted_before = wait_for("the node's metrics", DEADLINE, || async {
        buffer_state(node).await.map(|(emitted, _, _)| emitted)
    })
    .await?;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    for n in range {
        tick.tick().await;
        device
            .publish("sensors/line-1", json!({"n": n}).to_string().as_bytes())
            .await?;
    }
    wait_for(
        "the node's broker acknowledged every reading",
        DEADLINE,
        || async {
            (device.counts().pubacks.load(Ordering::SeqCst) >= before + count).then_some(())
        },
    )
    .await?;
    wait_for("every reading emitted and on disk", DEADLINE, || async {
        let (emitted, durable, last) = buffer_state(node).await?;
        (emitted >= emitted_before + count as f64 && durable >= last).then_some(())
    })
    .await
}

/// The node's (records its module emitted upstream, durable mark, last sequence number).
async fn buffer_state(node: &Proc) -> Option<(f64, f64, f64)> {
    let metrics = format!("http://{}/metrics", node.http_addr().ok()?);
    let text = reqwest::get(&metrics).await.ok()?.text().await.ok()?;
    Some((
        metric(
            &text,
            "wedge_module_messages_out_total",
            &[("module", "fw"), ("to", "uplink")],
        )?,
        metric(&text, "wedge_buffer_durable_seq", &[])?,
        metric(&text, "wedge_buffer_last_seq", &[])?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_lost_nothing_doubled_across_partition_and_crashes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let api_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let mqtt_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let local_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let cp_dir = dir.path().join("cp");
    let node_dir = dir.path().join("node");

    let token = wedge_tests::operator_token(&cp_dir)?;
    let api = Api::with_token(api_addr, Some(token));
    let mut cp = Proc::control_plane(&cp_dir, api_addr, mqtt_addr)?;
    wait_for("control plane API", DEADLINE, || async {
        api.get("/healthz").await.ok().filter(|(s, _)| *s == 200)
    })
    .await?;
    let proxy = Proxy::start(mqtt_addr).await?;
    let enrollment = api.enrollment().await?;
    let mut node = Proc::node("line-1", &node_dir, proxy.addr(), local_addr, &enrollment)?;
    api.wait_status("line-1", "online", DEADLINE).await?;
    api.upload_module("forward", "1").await?;
    api.deploy(&json!({
        "name": "fw",
        "module": "forward@1",
        "nodes": ["line-1"],
        "subscriptions": ["sensors/#"],
        "config": {"stream": "readings"},
    }))
    .await?;
    api.wait_module_state("line-1", "fw", "running", DEADLINE)
        .await?;
    let device = Device::connect(local_addr, "line-1-sensor", &[]).await?;

    // 1. Link up.
    publish(&device, &node, 1..=PHASE).await?;
    // 2. Partition: the node buffers.
    proxy.cut();
    publish(&device, &node, PHASE + 1..=2 * PHASE).await?;
    // 3. The node crashes during the partition and comes back.
    node.kill9()?;
    let connacks = device.counts().connacks.load(Ordering::SeqCst);
    node = Proc::node("line-1", &node_dir, proxy.addr(), local_addr, &enrollment)?;
    wait_for(
        "the device back on the restarted node",
        DEADLINE,
        || async { (device.counts().connacks.load(Ordering::SeqCst) > connacks).then_some(()) },
    )
    .await?;
    publish(&device, &node, 2 * PHASE + 1..=3 * PHASE).await?;
    // 4. The link returns; the backlog replays while live readings flow.
    proxy.restore();
    let live = publish(&device, &node, 3 * PHASE + 1..=4 * PHASE);
    let replaying = async {
        wait_for("replay under way", DEADLINE, || async {
            let (_, body) = api
                .get("/api/v1/nodes/line-1/telemetry?limit=10000")
                .await
                .ok()?;
            (body.as_array()?.len() as u64 > PHASE).then_some(())
        })
        .await
    };
    let (live, replaying) = tokio::join!(live, replaying);
    live?;
    replaying?;
    // 5. The control plane crashes during ingest and comes back.
    let ingest = publish(&device, &node, 4 * PHASE + 1..=5 * PHASE);
    let crash = async {
        wait_for("ingest of the fifth phase under way", DEADLINE, || async {
            let (_, body) = api
                .get("/api/v1/nodes/line-1/telemetry?newest=true&limit=1")
                .await
                .ok()?;
            let n = body.as_array()?.first()?["payload"]["n"].as_u64()?;
            (n > 4 * PHASE).then_some(())
        })
        .await?;
        cp.kill9()?;
        Proc::control_plane(&cp_dir, api_addr, mqtt_addr)
    };
    let (ingest, restarted) = tokio::join!(ingest, crash);
    ingest?;
    cp = restarted?;
    publish(&device, &node, 5 * PHASE + 1..=6 * PHASE).await?;

    let total = 6 * PHASE;
    let stored = wait_for("every reading stored", DEADLINE, || async {
        let (status, body) = api
            .get("/api/v1/nodes/line-1/telemetry?stream=readings&limit=10000")
            .await
            .ok()?;
        let records = body.as_array()?.clone();
        (status == 200 && records.len() as u64 >= total).then_some(records)
    })
    .await?;
    let seqs: Vec<u64> = stored.iter().filter_map(|r| r["seq"].as_u64()).collect();
    let mut readings: Vec<u64> = stored
        .iter()
        .filter_map(|r| r["payload"]["n"].as_u64())
        .collect();
    readings.sort_unstable();
    let mut duplicates = readings.clone();
    duplicates.dedup();
    println!(
        "fault test: {} readings published, {} records stored, {} distinct readings, seq {}..={}",
        total,
        stored.len(),
        duplicates.len(),
        seqs.first().copied().unwrap_or(0),
        seqs.last().copied().unwrap_or(0)
    );
    assert_eq!(
        seqs,
        (1..=total).collect::<Vec<_>>(),
        "gapless sequence, no duplicates"
    );
    assert_eq!(
        readings,
        (1..=total).collect::<Vec<_>>(),
        "every reading exactly once"
    );

    // And the node's backlog drains: everything acknowledged was deleted.
    wait_for("the backlog drained", DEADLINE, || async {
        let n = api.node("line-1").await.ok()??;
        (n["status"] == "online" && n["telemetry"]["pending"] == 0).then_some(())
    })
    .await?;
    drop(node);
    drop(cp);
    Ok(())
}
