//! Telemetry benchmark: how fast a node writes records into its buffer, and how fast a
//! backlog of 100,000 records replays to the control plane (stored durably and
//! acknowledged) after a partition, while live records keep arriving.
//!
//! Run: `cargo bench -p wedge-tests --bench replay` (release build).

use std::time::{Duration, Instant};

use wedge_tests::proxy::Proxy;
use wedge_tests::{ControlPlane, Node, wait_for};

const BACKLOG: u64 = 100_000;
const LIVE_PER_SEC: u64 = 1_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
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
    for i in 0..BACKLOG {
        buffer.append("bench", "readings", i, payload)?;
    }
    let write = start.elapsed();
    println!(
        "buffer writes: {BACKLOG} records of {} B in {write:?} = {:.0} records/s (one writer)",
        payload.len(),
        BACKLOG as f64 / write.as_secs_f64()
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

    let start = Instant::now();
    proxy.restore();
    let acked_at = wait_for(
        "the backlog acknowledged",
        Duration::from_secs(600),
        || async {
            // Acknowledged records are deleted: the backlog is gone once the first live
            // record after it is the oldest thing left.
            let first = buffer.first_available().ok()?;
            (first > BACKLOG).then(Instant::now)
        },
    )
    .await?;
    let took = acked_at - start;
    live.abort();
    println!(
        "replay of {BACKLOG} records with ~{LIVE_PER_SEC}/s live: {took:?} = {:.0} records/s stored and acknowledged",
        BACKLOG as f64 / took.as_secs_f64()
    );
    Ok(())
}
