//! The ARM64 build (`deploy/build-arm64`: static aarch64-unknown-linux-musl) runs under
//! qemu-aarch64-static against a control plane on this (x86-64) machine: it enrolls, reports
//! arch `aarch64`, loads the native code the control plane compiled for it (cross-compiled
//! from x86-64) and acts on a device's messages.
//!
//! The binary is `deploy/build-arm64`'s default, built without a compiler: a module deployed
//! before the control plane has compiled it for the node waits for that code (the control
//! plane offers it when it is stored), and a configuration that needs compiling is refused
//! at start.
//!
//! `.ci/run` builds the binary first. Outside CI, without the binary, the test says how to
//! build it and passes; in CI (`CI` set) a missing binary or emulator fails it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use wedge_tests::process::{Proc, free_port, program};
use wedge_tests::{ControlPlane, Device, metric, wait_for};

/// Emulated, the node compiles modules an order of magnitude slower.
const DEADLINE: Duration = Duration::from_secs(300);

fn arm64_binary() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("WEDGE_ARM64_NODE") {
        return Ok(PathBuf::from(path));
    }
    // target/debug/deps/<test> → target/
    let exe = std::env::current_exe()?;
    let target = exe
        .ancestors()
        .nth(3)
        .ok_or_else(|| anyhow::anyhow!("unexpected test path {}", exe.display()))?;
    Ok(target.join("aarch64-unknown-linux-musl/edge/wedge-node"))
}

/// `wedge_module_loads_total{source="precompiled"}` in the node's metrics.
fn precompiled_loads(metrics: &str) -> Option<f64> {
    metric(
        metrics,
        "wedge_module_loads_total",
        &[("source", "precompiled")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn arm64_node_runs_a_module_under_qemu() -> anyhow::Result<()> {
    let binary = arm64_binary()?;
    let (true, Some(qemu)) = (binary.exists(), program("qemu-aarch64-static")) else {
        let what = format!(
            "needs {} (deploy/build-arm64) and qemu-aarch64-static (Debian: qemu-user-static)",
            binary.display()
        );
        anyhow::ensure!(std::env::var_os("CI").is_none(), "{what}");
        eprintln!("skipped: {what}");
        return Ok(());
    };
    let cp = ControlPlane::start().await?;
    let enrollment = cp
        .enrollment
        .clone()
        .ok_or_else(|| anyhow::anyhow!("TLS is on"))?;
    let dir = tempfile::tempdir()?;
    let local: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let mut cmd = Command::new(qemu);
    cmd.arg(&binary);
    let node_proc = Proc::node_with(
        cmd,
        "arm-1",
        &dir.path().join("node"),
        cp.mqtt_addr,
        local,
        &enrollment,
    )?;

    let node = cp.api.wait_status("arm-1", "online", DEADLINE).await?;
    assert_eq!(node["arch"], "aarch64", "{node}");

    // The node is known (with its precompile key) before the upload: the control plane
    // compiles the module for aarch64 (cross-compiling) and the node loads that code
    // instead of compiling under the emulator.
    cp.api.upload_module("threshold-alert", "1").await?;
    let native = wait_for("the module precompiled for aarch64", DEADLINE, || async {
        let (_, modules) = cp.api.get("/api/v1/modules").await.ok()?;
        modules.as_array()?.iter().find_map(|m| {
            m["precompiled"].as_array()?.iter().find_map(|n| {
                let key = n["key"].as_str()?;
                key.starts_with("aarch64-unknown-linux-musl/")
                    .then(|| key.to_string())
            })
        })
    })
    .await?;
    eprintln!("precompiled for {native}");
    let (status, body) = cp
        .api
        .post_json(
            "/api/v1/deployments",
            &json!({"name": "alert", "module": "threshold-alert@1", "nodes": ["arm-1"],
                    "subscriptions": ["sensors/#"],
                    "config": {"threshold": 50, "alert_topic": "alerts/temp"}}),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    cp.api
        .wait_module_state("arm-1", "alert", "running", DEADLINE)
        .await?;

    let metrics = wedge_tests::Api::new(node_proc.http_addr()?)
        .get_text("/metrics")
        .await?
        .1;
    assert_eq!(
        precompiled_loads(&metrics),
        Some(1.0),
        "the node loaded the control plane's native code:\n{metrics}"
    );

    // Deployed at once after its upload: the node may hear of it before its code is
    // compiled, and then waits for it (a build without a compiler cannot do otherwise).
    cp.api.upload_module("window-stats", "1").await?;
    let (status, body) = cp
        .api
        .post_json(
            "/api/v1/deployments",
            &json!({"name": "stats", "module": "window-stats@1", "nodes": ["arm-1"],
                    "subscriptions": ["sensors/#"], "config": {}}),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    cp.api
        .wait_module_state("arm-1", "stats", "running", DEADLINE)
        .await?;
    let metrics = wedge_tests::Api::new(node_proc.http_addr()?)
        .get_text("/metrics")
        .await?
        .1;
    assert_eq!(
        precompiled_loads(&metrics),
        Some(2.0),
        "both modules from the control plane's native code:\n{metrics}"
    );

    let mut device = Device::connect(local, "sensor", &["alerts/#"]).await?;
    device.publish("sensors/temp", b"10").await?;
    device.publish("sensors/temp", b"72").await?;
    let (topic, payload) = device.recv(DEADLINE).await?;
    assert_eq!(topic, "alerts/temp");
    let alert: serde_json::Value = serde_json::from_slice(&payload)?;
    assert_eq!(
        alert,
        json!({"topic": "sensors/temp", "value": 72.0, "threshold": 50.0})
    );
    cp.stop().await;
    Ok(())
}

/// Without a compiler, a node that would have to compile (it requires signed modules, or is
/// told not to load native code) refuses to start, and says why.
#[test]
fn arm64_node_without_a_compiler_refuses_to_compile() -> anyhow::Result<()> {
    let binary = arm64_binary()?;
    let (true, Some(qemu)) = (binary.exists(), program("qemu-aarch64-static")) else {
        anyhow::ensure!(
            std::env::var_os("CI").is_none(),
            "needs the ARM64 build and qemu"
        );
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let out = Command::new(qemu)
        .arg(&binary)
        .args(["--node-id", "arm-2", "--precompiled", "false"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("without a compiler") && stderr.contains("precompiled = false"),
        "{stderr}"
    );
    Ok(())
}
