//! Devices never have to compile: the control plane compiles each module for the precompile
//! key its nodes report, and a node loads that native code instead of compiling. A node that
//! requires signed modules compiles itself even when native code for it exists; a node that
//! compiles does it in a child process.
//! (The ARM64 node under qemu loads code the x86-64 control plane compiled for it:
//! `arm64.rs`.)

use std::time::Duration;

use anyhow::ensure;
use serde_json::{Value, json};
use wedge_proto::Digest;
use wedge_proto::signing::{Covers, ModuleSignature, Signed, format_public_key, public_key};
use wedge_tests::process::{Proc, binary, free_port};
use wedge_tests::{Api, ControlPlane, Device, Node, metric, wait_for};

const DEADLINE: Duration = Duration::from_secs(120);

/// The module's native artifacts as `GET /modules` lists them.
async fn precompiled(cp: &ControlPlane, name: &str) -> Option<Vec<Value>> {
    let (_, modules) = cp.api.get("/api/v1/modules").await.ok()?;
    let module = modules.as_array()?.iter().find(|m| m["name"] == name)?;
    Some(
        module["precompiled"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
    )
}

/// `wedge_module_loads_total{source}` on the node.
async fn loads(node: &Node, source: &str) -> anyhow::Result<f64> {
    let (_, text) = Api::new(node.http_addr()?).get_text("/metrics").await?;
    Ok(metric(&text, "wedge_module_loads_total", &[("source", source)]).unwrap_or(0.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_loads_native_code_the_control_plane_compiled_for_it() -> anyhow::Result<()> {
    let publisher = [7u8; 32];
    let cp = ControlPlane::start().await?;
    let node = Node::start(&cp, "pc-1", &[]).await?;
    let secure = Node::start_configured(&cp, "pc-signed", &[], "127.0.0.1:0".parse()?, |c| {
        c.trusted_publishers = vec![format_public_key(&public_key(&publisher))];
    })
    .await?;
    for id in ["pc-1", "pc-signed"] {
        cp.api.wait_status(id, "online", DEADLINE).await?;
    }

    // Uploaded once the node's key is known: compiled for that key, for nothing else (the
    // signed node reports no key).
    let bytes = wedge_modules::bytes("threshold-alert")?;
    let digest = Digest::of(&bytes);
    let signature = ModuleSignature::sign_covering(
        &publisher,
        Signed {
            name: "threshold-alert",
            version: "1",
            digest: &digest,
        },
        Covers::NameVersionDigest,
    );
    let (status, body) = cp
        .api
        .post_signed(
            "/api/v1/modules?name=threshold-alert&version=1",
            bytes,
            Some(&signature),
        )
        .await?;
    ensure!(status == 201, "{body}");
    let key =
        wedge_engine::key(&wedge_engine::host_triple()).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let natives = wait_for("the module precompiled", DEADLINE, || async {
        precompiled(&cp, "threshold-alert")
            .await
            .filter(|n| !n.is_empty())
    })
    .await?;
    assert_eq!(natives.len(), 1, "{natives:?}");
    assert_eq!(natives[0]["key"], key.as_str());
    ensure!(
        natives[0]["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:"))
    );

    let (status, body) = cp
        .api
        .post_json(
            "/api/v1/deployments",
            &json!({"name": "alert", "module": "threshold-alert@1",
                    "nodes": ["pc-1", "pc-signed"], "subscriptions": ["sensors/#"],
                    "config": {"threshold": 50, "alert_topic": "alerts/temp"}}),
        )
        .await?;
    ensure!(status == 201, "{body}");
    for id in ["pc-1", "pc-signed"] {
        cp.api
            .wait_module_state(id, "alert", "running", DEADLINE)
            .await?;
    }
    assert_eq!(loads(&node, "precompiled").await?, 1.0);
    assert_eq!(
        loads(&node, "compiled").await?,
        0.0,
        "the node compiled nothing"
    );
    // Native code is not what the publisher signed: the signed node compiled it.
    assert_eq!(loads(&secure, "compiled").await?, 1.0);
    assert_eq!(loads(&secure, "precompiled").await?, 0.0);

    // And the precompiled module does its job.
    for node in [&node, &secure] {
        let mut device = Device::connect(node.local_mqtt_addr, "sensor", &["alerts/#"]).await?;
        device.publish("sensors/temp", b"72").await?;
        let (topic, _) = device.recv(DEADLINE).await?;
        assert_eq!(topic, "alerts/temp");
    }
    cp.stop().await;
    Ok(())
}

/// A node that compiles (here because it is told not to take native code) does it in a
/// child process — its own binary — so the compile's memory goes back when the child ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_compiles_does_it_in_a_child_process() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let enrollment = cp
        .enrollment
        .clone()
        .ok_or_else(|| anyhow::anyhow!("TLS is on"))?;
    let dir = tempfile::tempdir()?;
    let local: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let mut cmd = std::process::Command::new(binary("wedge-node")?);
    cmd.env("WEDGE_PRECOMPILED", "false");
    let node = Proc::node_with(
        cmd,
        "pc-child",
        &dir.path().join("node"),
        cp.mqtt_addr,
        local,
        &enrollment,
    )?;
    cp.api.wait_status("pc-child", "online", DEADLINE).await?;
    cp.api.upload_module("threshold-alert", "1").await?;
    cp.api
        .deploy(
            &json!({"name": "alert", "module": "threshold-alert@1", "nodes": ["pc-child"],
                        "subscriptions": ["sensors/#"],
                        "config": {"threshold": 50, "alert_topic": "alerts/temp"}}),
        )
        .await?;
    cp.api
        .wait_module_state("pc-child", "alert", "running", DEADLINE)
        .await?;
    let (_, text) = Api::new(node.http_addr()?).get_text("/metrics").await?;
    let count = |name, labels: &[(&str, &str)]| metric(&text, name, labels).unwrap_or(0.0);
    assert_eq!(
        count("wedge_module_compiles_total", &[("where", "child")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        count("wedge_module_compiles_total", &[("where", "in_process")]),
        0.0
    );
    assert_eq!(
        count("wedge_module_loads_total", &[("source", "precompiled")]),
        0.0
    );

    let mut device = Device::connect(local, "sensor", &["alerts/#"]).await?;
    device.publish("sensors/temp", b"72").await?;
    let (topic, _) = device.recv(DEADLINE).await?;
    assert_eq!(topic, "alerts/temp");
    cp.stop().await;
    Ok(())
}
