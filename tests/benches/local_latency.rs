//! Local path benchmark: a device publishes a reading to the edge node's broker, the
//! `threshold-alert` module sees it above its threshold and publishes an alert, the device
//! receives the alert. Reports the round trip (median, p90, p99) over sequential readings,
//! and the node's memory with 50 module instances running.
//!
//! Conditions: control plane, node, device and load in this one process; the device speaks
//! plain MQTT to the node's local broker (as devices on a site network do), the node's
//! uplink is TLS. The benchmark checks its outcome: every reading answered by exactly one
//! alert on the alert topic, and every instance running, or it fails.
//!
//! Run: `cargo bench -p wedge-tests --bench local_latency` (release build).
//! `WEDGE_BENCH_ROUNDS` and `WEDGE_BENCH_INSTANCES` shrink it (CI runs a small one as a
//! smoke test).

use std::time::{Duration, Instant};

use anyhow::ensure;
use serde_json::json;
use wedge_tests::{ControlPlane, Device, Node};

const WARMUP: usize = 200;

fn env_or(name: &str, default: usize) -> anyhow::Result<usize> {
    Ok(match std::env::var(name) {
        Ok(v) => v.parse()?,
        Err(_) => default,
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn proc_status(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    println!(
        "conditions: control plane, node, device and load in one process; device on plain local MQTT; uplink TLS; API tokens on"
    );
    let rounds = env_or("WEDGE_BENCH_ROUNDS", 2000)?;
    let instances = env_or("WEDGE_BENCH_INSTANCES", 50)?;
    let cp = ControlPlane::start().await?;
    let node = Node::start(&cp, "bench", &[]).await?;
    cp.api.upload_module("threshold-alert", "1").await?;
    cp.api
        .deploy(&json!({
            "name": "alert",
            "module": "threshold-alert@1",
            "nodes": ["bench"],
            "subscriptions": ["sensors/#"],
            "config": {"threshold": 50, "alert_topic": "alerts/temp"},
            // Sequential round trips run faster than the default publish rate limit.
            "limits": {"publish_per_sec": 1_000_000},
        }))
        .await?;
    cp.api
        .wait_module_state("bench", "alert", "running", Duration::from_secs(120))
        .await?;
    let mut device = Device::connect(node.local_mqtt_addr, "bench-device", &["alerts/#"]).await?;

    for qos in [rumqttc::QoS::AtMostOnce, rumqttc::QoS::AtLeastOnce] {
        let mut samples = Vec::with_capacity(rounds);
        for i in 0..(WARMUP + rounds) {
            let start = Instant::now();
            device
                .client
                .publish("sensors/t", qos, false, b"99".to_vec())
                .await?;
            let (topic, _) = device.recv(Duration::from_secs(10)).await?;
            ensure!(
                topic == "alerts/temp",
                "round {i}: a message on {topic}, not the alert"
            );
            if i >= WARMUP {
                samples.push(start.elapsed());
            }
        }
        // One alert per reading: nothing extra arrives after the last round trip.
        tokio::time::sleep(Duration::from_millis(200)).await;
        ensure!(
            device.try_recv().is_none(),
            "more alerts than readings at {qos:?}"
        );
        println!(
            "outcome at {qos:?}: {} readings published, {} alerts received",
            WARMUP + rounds,
            WARMUP + rounds
        );
        samples.sort_unstable();
        println!(
            "local round trip, device → broker → threshold-alert → broker → device, readings at {qos:?} ({rounds} sequential):"
        );
        println!(
            "  median {:?}  p90 {:?}  p99 {:?}  min {:?}",
            percentile(&samples, 0.5),
            percentile(&samples, 0.9),
            percentile(&samples, 0.99),
            samples[0]
        );
    }

    // Memory with many instances (the whole test process: control plane and node).
    let (rss0, vsz0) = (proc_status("VmRSS:"), proc_status("VmSize:"));
    for i in 0..instances {
        cp.api
            .deploy(&json!({
                "name": format!("alert-{i}"),
                "module": "threshold-alert@1",
                "nodes": ["bench"],
                "subscriptions": [format!("many/{i}")],
                "config": {"threshold": 50, "alert_topic": format!("alerts/many/{i}")},
                "limits": {"memory_bytes": 16_777_216},
            }))
            .await?;
    }
    for i in 0..instances {
        cp.api
            .wait_module_state(
                "bench",
                &format!("alert-{i}"),
                "running",
                Duration::from_secs(120),
            )
            .await?;
    }
    let (rss1, vsz1) = (proc_status("VmRSS:"), proc_status("VmSize:"));
    if let (Some(r0), Some(r1), Some(v0), Some(v1)) = (rss0, rss1, vsz0, vsz1) {
        println!(
            "{instances} more threshold-alert instances (16 MiB limit each): RSS {} → {} MiB (+{:.1} MiB, {:.2} MiB each), address space {} → {} MiB",
            r0 / 1024,
            r1 / 1024,
            (r1 as f64 - r0 as f64) / 1024.0,
            (r1 as f64 - r0 as f64) / 1024.0 / instances as f64,
            v0 / 1024,
            v1 / 1024
        );
    }
    Ok(())
}
