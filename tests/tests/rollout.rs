//! Safe rollouts over real edge nodes: automatic rollback of a revision that traps at
//! init, abort and supersede of a stuck rollout, late joiners, offline detection, and a
//! node that boots without its control plane.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use wedge_tests::process::{Proc, free_port};
use wedge_tests::rollout::{history, node_states};
use wedge_tests::sim::{SimFleet, SimOptions};
use wedge_tests::{Api, ControlPlane, Device, Node, wait_for};

const DEADLINE: Duration = Duration::from_secs(60);

/// A deployment of `module` to the nodes labelled `fleet=r`.
fn alert(name: &str, module: &str, strategy: Value) -> Value {
    wedge_tests::rollout::deployment(name, module, "r", strategy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revision_that_traps_at_init_is_rolled_back() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let api = &cp.api;
    let mut nodes = Vec::new();
    for id in ["r-1", "r-2", "r-3"] {
        nodes.push(Node::start(&cp, id, &[("fleet", "r")]).await?);
    }
    let good = api.upload_module("threshold-alert", "1").await?;
    let bad = api.upload_module("hostile-trap-init", "1").await?;

    api.deploy(&alert("alert", "threshold-alert@1", json!({})))
        .await?;
    api.wait_rollout("alert", 1, "complete", DEADLINE).await?;
    for id in ["r-1", "r-2", "r-3"] {
        api.wait_running_digest(id, "alert", &good, DEADLINE)
            .await?;
    }

    let created = api
        .deploy(&alert(
            "alert",
            "hostile-trap-init@1",
            json!({"canary": 1, "batch": "50%", "bake_seconds": 1, "max_failure_ratio": 0.0}),
        ))
        .await?;
    assert_eq!(created["revision"], 2);
    assert_eq!(created["rollout"]["phase"], "canary");

    let d = api
        .wait_rollout("alert", 2, "rolled_back", DEADLINE)
        .await?;
    let reason = d["rollout"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("1 of 1 updated nodes failed"), "{reason}");
    assert!(reason.contains("r-1"), "the canary is named: {reason}");
    assert_eq!(d["rollout"]["stable_revision"], 1);
    assert_eq!(
        node_states(&d),
        [
            ("r-1".into(), "failed".into(), Some(1)),
            ("r-2".into(), "pending".into(), Some(1)),
            ("r-3".into(), "pending".into(), Some(1)),
        ],
        "only the canary ever got revision 2; every node is assigned revision 1"
    );
    assert_eq!(d["rollout"]["counts"]["failed"], 1);

    // The canary runs the good module again; the others never stopped running it.
    for id in ["r-1", "r-2", "r-3"] {
        api.wait_running_digest(id, "alert", &good, DEADLINE)
            .await?;
    }
    for id in ["r-2", "r-3"] {
        let m = api.module(id, "alert").await.unwrap_or_default();
        assert_eq!(m["restarts"], 0, "{id} was never touched: {m}");
    }
    let (_, fleet) = api.get("/api/v1/fleet").await?;
    let dep = &fleet["deployments"][0];
    assert_eq!(dep["phase"], "rolled_back", "{fleet}");
    assert_eq!(dep["revisions"], json!({"1": 3}), "{fleet}");
    assert_ne!(bad, good);

    // Controlling a finished rollout is refused with the reason.
    let (status, body) = api
        .post_json("/api/v1/deployments/alert/resume", &json!({}))
        .await?;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("rolled_back")
    );
    for mut n in nodes {
        n.stop().await;
    }
    cp.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stuck_rollout_is_aborted_or_superseded() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let api = &cp.api;
    let mut nodes = Vec::new();
    for id in ["s-1", "s-2"] {
        nodes.push(Node::start(&cp, id, &[("fleet", "r")]).await?);
    }
    let v1 = api.upload_module("threshold-alert", "1").await?;
    let stats = api.upload_module("window-stats", "1").await?;
    let fw = api.upload_module("forward", "1").await?;
    api.deploy(&alert("m", "threshold-alert@1", json!({})))
        .await?;
    api.wait_rollout("m", 1, "complete", DEADLINE).await?;

    // Revision 2 bakes for an hour on its canary: stuck.
    let stuck = json!({"canary": 1, "batch": 1, "bake_seconds": 3600, "max_failure_ratio": 0.0});
    api.deploy(&alert("m", "window-stats@1", stuck.clone()))
        .await?;
    api.wait_running_digest("s-1", "m", &stats, DEADLINE)
        .await?;
    let d = wait_for("the canary baking", DEADLINE, || async {
        api.deployment("m")
            .await
            .ok()
            .flatten()
            .filter(|d| d["rollout"]["counts"]["baking"] == 1)
    })
    .await?;
    assert_eq!(d["rollout"]["phase"], "canary");

    // Pause and resume answer with the rollout; abort sends the canary back.
    let (status, body) = api
        .post_json("/api/v1/deployments/m/pause", &json!({}))
        .await?;
    assert_eq!((status, &body["rollout"]["paused"]), (200, &json!(true)));
    let (status, body) = api
        .post_json("/api/v1/deployments/m/resume", &json!({}))
        .await?;
    assert_eq!((status, &body["rollout"]["paused"]), (200, &json!(false)));
    let (status, body) = api
        .post_json("/api/v1/deployments/m/abort", &json!({}))
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rollout"]["phase"], "aborted");
    assert_eq!(body["rollout"]["reason"], "aborted by an operator");
    api.wait_running_digest("s-1", "m", &v1, DEADLINE).await?;

    // Revision 3 gets stuck the same way; revision 4 supersedes it and completes.
    api.deploy(&alert("m", "window-stats@1", stuck)).await?;
    api.wait_running_digest("s-1", "m", &stats, DEADLINE)
        .await?;
    api.deploy(&alert("m", "forward@1", json!({"batch": "50%"})))
        .await?;
    let d = api.wait_rollout("m", 4, "complete", DEADLINE).await?;
    for id in ["s-1", "s-2"] {
        api.wait_running_digest(id, "m", &fw, DEADLINE).await?;
    }
    assert_eq!(
        history(&d),
        [
            (1, "complete".to_string()),
            (2, "aborted".to_string()),
            (3, "superseded".to_string())
        ]
    );
    assert_eq!(d["rollout"]["stable_revision"], 4);
    for mut n in nodes {
        n.stop().await;
    }
    cp.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_joining_late_gets_the_current_revision() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let api = &cp.api;
    let mut first = Node::start(&cp, "l-1", &[("fleet", "r")]).await?;
    api.upload_module("threshold-alert", "1").await?;
    let v2 = api.upload_module("forward", "1").await?;
    api.deploy(&alert("m", "threshold-alert@1", json!({})))
        .await?;
    api.wait_rollout("m", 1, "complete", DEADLINE).await?;
    api.deploy(&alert("m", "forward@1", json!({}))).await?;
    api.wait_rollout("m", 2, "complete", DEADLINE).await?;

    let mut late = Node::start(&cp, "l-2", &[("fleet", "r")]).await?;
    api.wait_running_digest("l-2", "m", &v2, DEADLINE).await?;
    let d = wait_for("the late node healthy", DEADLINE, || async {
        api.deployment("m")
            .await
            .ok()
            .flatten()
            .filter(|d| d["rollout"]["counts"]["healthy"] == 2)
    })
    .await?;
    assert_eq!(d["rollout"]["phase"], "complete");
    // A node whose labels no deployment selects gets nothing.
    let mut other = Node::start(&cp, "l-3", &[("fleet", "other")]).await?;
    api.wait_status("l-3", "online", DEADLINE).await?;
    assert_eq!(
        api.node("l-3").await?.unwrap_or_default()["modules"],
        json!([])
    );
    for n in [&mut first, &mut late, &mut other] {
        n.stop().await;
    }
    cp.stop().await;
    Ok(())
}

fn millis(rfc3339: &Value) -> anyhow::Result<u64> {
    let t = humantime::parse_rfc3339(rfc3339.as_str().unwrap_or_default())?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offline_detection_within_the_configured_time() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = wedge_control_plane::Config {
        data_dir: dir.path().to_path_buf(),
        api_listen: "127.0.0.1:0".parse()?,
        mqtt_listen: "127.0.0.1:0".parse()?,
        heartbeat_timeout_secs: 2,
        ..Default::default()
    };
    let cp = ControlPlane::start_with(config, dir).await?;
    let api = &cp.api;
    // Silent failure: connected, but no heartbeat after the first (interval of an hour).
    let silent = SimFleet::start(
        cp.mqtt_addr,
        "silent",
        1,
        SimOptions {
            heartbeat_interval: Duration::from_secs(3600),
            ca_dir: Some(cp.data_dir().to_path_buf()),
            ..SimOptions::default()
        },
    );
    // Crash: the connection drops without a goodbye. It beats every 200 ms until then, so
    // only its last will (not an overdue heartbeat) can mark it offline within 2 s of the
    // crash.
    let crashing = SimFleet::start(
        cp.mqtt_addr,
        "crash",
        1,
        SimOptions {
            heartbeat_interval: Duration::from_millis(200),
            ca_dir: Some(cp.data_dir().to_path_buf()),
            ..SimOptions::default()
        },
    );
    api.wait_status("silent-00000", "online", DEADLINE).await?;
    api.wait_status("crash-00000", "online", DEADLINE).await?;
    drop(crashing);

    let n = api.wait_status("crash-00000", "offline", DEADLINE).await?;
    assert_eq!(n["reason"], "connection lost (last will)", "{n}");
    let n = api.wait_status("silent-00000", "offline", DEADLINE).await?;
    assert_eq!(n["reason"], "heartbeat overdue", "{n}");
    let overdue_for = millis(&n["since"])? - millis(&n["last_seen"])?;
    // Never before the timeout. How soon after it is the sweeper's arithmetic, tested with
    // a given clock in `fleet.rs` (a loaded machine delays it here, not the logic).
    assert!(
        overdue_for >= 2_000,
        "marked offline {overdue_for} ms after the last heartbeat, before the 2 s timeout"
    );
    let (_, events) = api.get("/api/v1/nodes/silent-00000/events").await?;
    let kinds: Vec<&str> = events
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["node_online", "node_offline"], "{events}");
    silent.stop().await;
    cp.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_started_offline_runs_its_modules_and_keeps_them_on_reconnect() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let api_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let mqtt_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let cp_dir = dir.path().join("cp");
    let token = wedge_tests::operator_token(&cp_dir)?;
    let api = Api::with_token(api_addr, Some(token));
    let start_cp = || async {
        let cp = Proc::control_plane(&cp_dir, api_addr, mqtt_addr)?;
        wait_for("control plane API", DEADLINE, || async {
            api.get("/healthz").await.ok().filter(|(s, _)| *s == 200)
        })
        .await?;
        anyhow::Ok(cp)
    };
    let cp = start_cp().await?;
    let enrollment = api.enrollment().await?;
    let node_config = wedge_edge_node::Config {
        node_id: "edge-auto".into(),
        data_dir: dir.path().join("node"),
        control_plane: format!("mqtts://{mqtt_addr}"),
        enroll_token: Some(enrollment.token),
        ca_sha256: Some(enrollment.ca_sha256),
        devices: wedge_edge_node::devices::DevicesConfig {
            users: vec![wedge_tests::device_user()],
            ..Default::default()
        },
        local_mqtt_listen: "127.0.0.1:0".parse()?,
        http_listen: "127.0.0.1:0".parse()?,
        labels: [("fleet".to_string(), "r".to_string())].into(),
        heartbeat_interval_secs: 1,
        ..Default::default()
    };

    let node = wedge_edge_node::App::start(node_config.clone()).await?;
    api.upload_module("threshold-alert", "1").await?;
    api.deploy(&alert("auto", "threshold-alert@1", json!({})))
        .await?;
    api.wait_module_state("edge-auto", "auto", "running", DEADLINE)
        .await?;
    node.stop().await;
    cp.kill9()?;

    // Boot with the control plane unreachable: the saved module runs.
    let node = wedge_edge_node::App::start(node_config).await?;
    let mut device = Device::connect(node.local_mqtt_addr(), "dev", &["alerts"]).await?;
    device.publish("sensors/x", b"55").await?;
    let (topic, payload) = device.recv(DEADLINE).await?;
    assert_eq!(topic, "alerts");
    assert_eq!(serde_json::from_slice::<Value>(&payload)?["value"], 55.0);

    // The control plane returns: the node reconnects and its module is not restarted
    // (the same instance keeps counting messages).
    let cp = start_cp().await?;
    api.wait_status("edge-auto", "online", DEADLINE).await?;
    device.publish("sensors/x", b"56").await?;
    device.recv(DEADLINE).await?;
    let m = wait_for(
        "the module's count after reconnecting",
        DEADLINE,
        || async {
            api.module("edge-auto", "auto")
                .await
                .filter(|m| m["stats"]["messages"] == 2)
        },
    )
    .await?;
    assert_eq!(m["restarts"], 0, "{m}");
    assert_eq!(m["state"], "running");
    node.stop().await;
    drop(cp);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_simulated_fleet_rolls_out_in_batches_and_rolls_back() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let api = &cp.api;
    let fleet = SimFleet::start(
        cp.mqtt_addr,
        "sim",
        40,
        SimOptions {
            labels: std::sync::Arc::new(|_| [("fleet".to_string(), "r".to_string())].into()),
            heartbeat_interval: Duration::from_secs(1),
            ca_dir: Some(cp.data_dir().to_path_buf()),
            ..SimOptions::default()
        },
    );
    wait_for("40 simulated nodes online", DEADLINE, || async {
        let (_, f) = api.get("/api/v1/fleet").await.ok()?;
        (f["nodes"]["online"] == 40).then_some(())
    })
    .await?;
    let v1 = api.upload_module("threshold-alert", "1").await?;
    let v2 = api.upload_module("forward", "1").await?;
    api.deploy(&alert("m", "threshold-alert@1", json!({})))
        .await?;
    api.wait_rollout("m", 1, "complete", DEADLINE).await?;
    assert_eq!(fleet.running("m", &v1.parse()?), 40);

    // Revision 2 fails on nodes 12..=19: the canary (2 nodes) and the first batch of ten
    // pass, the second batch crosses 10 % and everything goes back to revision 1.
    let failing: Vec<usize> = (12..=19).collect();
    fleet.fail(v2.parse()?, Some(&failing));
    api.deploy(&alert(
        "m",
        "forward@1",
        json!({"canary": "5%", "batch": "25%", "max_failure_ratio": 0.1}),
    ))
    .await?;
    let d = api.wait_rollout("m", 2, "rolled_back", DEADLINE).await?;
    let counts = &d["rollout"]["counts"];
    assert_eq!(counts["failed"], 8, "{counts}");
    assert_eq!(counts["rolled_back"], 14, "{counts}");
    assert_eq!(counts["pending"], 18, "never updated: {counts}");
    wait_for("every node back on revision 1", DEADLINE, || async {
        (fleet.running("m", &v1.parse().ok()?) == 40).then_some(())
    })
    .await?;
    fleet.stop().await;
    cp.stop().await;
    Ok(())
}
