//! Telemetry benchmark: how fast a node writes records into its buffer, and how fast a
//! backlog of 100,000 records replays to the control plane (stored durably and
//! acknowledged) after a partition, while live records keep arriving.
//!
//! Conditions: control plane, node and load in this one process; the uplink over TLS with
//! the node's enrolled certificate (the default), API tokens on. The replay figure starts
//! when the node's uplink is connected again; the reconnect (the node's back-off after the
//! partition, TCP and TLS) is reported on its own line. The benchmark checks its outcome:
//! every backlog record stored exactly once at the control plane, or it fails.
//!
//! Run: `cargo bench -p wedge-tests --bench replay` (release build).
//! `WEDGE_BENCH_BACKLOG=N` changes the backlog (CI runs a small one as a smoke test).

use std::time::{Duration, Instant};

use anyhow::ensure;
use wedge_tests::proxy::Proxy;
use wedge_tests::{ControlPlane, Node, metric, wait_for};

const LIVE_PER_SEC: u64 = 1_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    println!(
        "conditions: control plane, node and load in one process; uplink TLS (enrolled node certificate); API tokens on"
    );
    let backlog: u64 = match std::env::var("WEDGE_BENCH_BACKLOG") {
        Ok(v) => v.parse()?,
        Err(_) => 100_000,
    };
    let cp = ControlPlane::start().await?;
    let proxy = Proxy::start(cp.mqtt_addr).await?;
    let enrollment = cp.enrollment.clone();
    let node = Node::start_with_config(wedge_edge_node::Config {
        node_id: "replay".into(),
        control_plane: format!("mqtts://{}", proxy.addr()),
        enroll_token: enrollment.as_ref().map(|e| e.token.clone()),
        ca_sha256: enrollment.map(|e| e.ca_sha256),
        local_mqtt_listen: "127.0.0.1:0".parse()?,
        http_listen: "127.0.0.1:0".parse()?,
        heartbeat_interval_secs: 1,
        buffer_bytes: 512 * 1024 * 1024,
        ..Default::default()
    })
    .await?;
    cp.api
        .wait_status("replay", "online", Duration::from_secs(60))
        .await?;
    let buffer = node.buffer()?.clone();

    // The partition: everything written now waits on the node.
    proxy.cut();
    let payload = br#"{"temperature": 21.5, "humidity": 40.2, "line": "A3"}"#;
    let start = Instant::now();
    for i in 0..backlog {
        buffer.append("bench", "readings", i, payload)?;
    }
    let write = start.elapsed();
    println!(
        "buffer writes: {backlog} records of {} B in {write:?} = {:.0} records/s (one writer)",
        payload.len(),
        backlog as f64 / write.as_secs_f64()
    );
    let (pending, bytes) = buffer.pending();
    println!(
        "backlog: {pending} records, {:.1} MiB on disk",
        bytes as f64 / 1048576.0
    );

    // Live traffic during the replay.
    let live_buffer = buffer.clone();
    let live = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(1000 / LIVE_PER_SEC));
        let mut n = 0u64;
        loop {
            tick.tick().await;
            if live_buffer.append("bench", "live", n, payload).is_err() {
                return n;
            }
            n += 1;
        }
    });

    let metrics = format!("http://{}/metrics", node.http_addr()?);
    let uplink_connected = || async {
        let text = reqwest::get(&metrics).await.ok()?.text().await.ok()?;
        metric(&text, "wedge_uplink_connected", &[])
    };
    wait_for(
        "the node noticed the partition",
        Duration::from_secs(120),
        || async { (uplink_connected().await? == 0.0).then_some(()) },
    )
    .await?;
    let restored = Instant::now();
    proxy.restore();
    let start = wait_for(
        "the uplink connected again",
        Duration::from_secs(120),
        || async { (uplink_connected().await? == 1.0).then(Instant::now) },
    )
    .await?;
    println!(
        "reconnect after the partition (back-off, TCP, TLS): {:?}",
        start - restored
    );
    let acked_at = wait_for(
        "the backlog acknowledged",
        Duration::from_secs(600),
        || async {
            // Acknowledged records are deleted: the backlog is gone once the first live
            // record after it is the oldest thing left.
            let first = buffer.first_available().ok()?;
            (first > backlog).then(Instant::now)
        },
    )
    .await?;
    let took = acked_at - start;
    live.abort();
    println!(
        "replay of {backlog} records with ~{LIVE_PER_SEC}/s live, from the reconnect: {took:?} = {:.0} records/s stored and acknowledged",
        backlog as f64 / took.as_secs_f64()
    );

    // The outcome: every backlog record stored once, none missing.
    let mut node_seqs = Vec::with_capacity(backlog as usize);
    let mut after = 0u64;
    loop {
        let path =
            format!("/api/v1/nodes/replay/telemetry?stream=readings&after_seq={after}&limit=10000");
        let (status, body) = cp.api.get(&path).await?;
        ensure!(status == 200, "telemetry query answered {status}: {body}");
        let page = body.as_array().cloned().unwrap_or_default();
        let Some(last) = page.last() else { break };
        after = last["seq"].as_u64().unwrap_or(u64::MAX);
        node_seqs.extend(page.iter().filter_map(|r| r["node_seq"].as_u64()));
    }
    let stored = node_seqs.len();
    node_seqs.sort_unstable();
    node_seqs.dedup();
    println!(
        "outcome: {backlog} records buffered, {stored} stored, {} stored twice",
        stored - node_seqs.len()
    );
    ensure!(
        stored as u64 == backlog && node_seqs.len() == stored,
        "the replay did not store every record exactly once ({stored} stored of {backlog}, {} distinct)",
        node_seqs.len()
    );
    Ok(())
}
