//! A third-party broker: the control plane (`mqtt_broker`) and a node use Debian's
//! Mosquitto as their uplink broker instead of the embedded one; `mosquitto_pub` and
//! `mosquitto_sub` are the device and the actuator on the node's local broker. Every client
//! logs in: a node with its node id and its own password, confined to its own topics and
//! unable to take over another node's session.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use wedge_tests::mosquitto::{self, Mosquitto};
use wedge_tests::process::program;
use wedge_tests::{ControlPlane, DEVICE_PASSWORD, DEVICE_USER, Node, wait_for};

const DEADLINE: Duration = Duration::from_secs(60);

async fn next_line(lines: &mut tokio::sync::mpsc::Receiver<String>) -> anyhow::Result<String> {
    tokio::time::timeout(DEADLINE, lines.recv())
        .await
        .ok()
        .flatten()
        .ok_or_else(|| anyhow::anyhow!("mosquitto_sub said nothing more"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn control_plane_and_node_work_through_mosquitto() -> anyhow::Result<()> {
    if !mosquitto::available()? {
        eprintln!("skipped: mosquitto is not installed");
        return Ok(());
    }
    const NODE_PASSWORD: &str = "mq-1-secret";
    const OTHER_PASSWORD: &str = "mq-2-secret";
    let mut broker =
        Mosquitto::start_with_nodes(&[("mq-1", NODE_PASSWORD), ("mq-2", OTHER_PASSWORD)])?;
    let dir = tempfile::tempdir()?;
    let node_password_file = dir.path().join("mq-1.password");
    std::fs::write(&node_password_file, format!("{NODE_PASSWORD}\n"))?;
    let password_file = dir.path().join("broker-password");
    std::fs::write(&password_file, format!("{}\n", Mosquitto::CONTROL_PASSWORD))?;
    let cp = ControlPlane::start_with(
        wedge_control_plane::Config {
            data_dir: dir.path().to_path_buf(),
            api_listen: "127.0.0.1:0".parse()?,
            mqtt_broker: Some(broker.url()),
            mqtt_broker_username: Some(Mosquitto::CONTROL_USER.into()),
            mqtt_broker_password_file: Some(password_file.clone()),
            ..Default::default()
        },
        dir,
    )
    .await?;
    assert_eq!(cp.mqtt_url(), broker.url(), "nodes are sent to Mosquitto");
    wait_for(
        "the control plane connected to Mosquitto",
        DEADLINE,
        || async {
            let (status, _) = cp.api.get_text("/readyz").await.ok()?;
            (status == 200).then_some(())
        },
    )
    .await?;
    let node = Node::start_configured(&cp, "mq-1", &[], "127.0.0.1:0".parse()?, |c| {
        c.uplink_password_file = Some(node_password_file.clone())
    })
    .await?;
    cp.api.wait_status("mq-1", "online", DEADLINE).await?;

    cp.api.upload_module("threshold-alert", "1").await?;
    cp.api.upload_module("forward", "1").await?;
    for body in [
        json!({"name": "alert", "module": "threshold-alert@1", "nodes": ["mq-1"],
               "subscriptions": ["sensors/#"],
               "config": {"threshold": 50, "alert_topic": "alerts/temp"}}),
        json!({"name": "fwd", "module": "forward@1", "nodes": ["mq-1"],
               "subscriptions": ["sensors/#"]}),
    ] {
        let (status, answer) = cp.api.post_json("/api/v1/deployments", &body).await?;
        assert_eq!(status, 201, "{answer}");
    }
    cp.api
        .wait_module_state("mq-1", "alert", "running", DEADLINE)
        .await?;
    cp.api
        .wait_module_state("mq-1", "fwd", "running", DEADLINE)
        .await?;

    // The adversary on the uplink broker. Without a login, or with a wrong password: refused.
    let uplink_port = broker.addr.port().to_string();
    let uplink_sub = |login: &[&str], client_id: &str, topic: &str, wait: &str| {
        Command::new(program("mosquitto_sub").expect("available"))
            .args(["-h", "127.0.0.1", "-p", &uplink_port, "-i", client_id])
            .args(login)
            .args(["-t", topic, "-C", "1", "-W", wait])
            .stdin(Stdio::null())
            .output()
    };
    let desired = "wedge/v1/nodes/mq-1/desired";
    for login in [&[][..], &["-u", "mq-1", "-P", "guess"][..]] {
        let out = uplink_sub(login, "intruder", desired, "10")?;
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("not authorised"), "{login:?} got in: {out:?}");
        assert!(out.stdout.is_empty(), "{login:?} read {out:?}");
    }
    // The control plane may read mq-1's retained desired state: it is there at once…
    let control_login = [
        "-u",
        Mosquitto::CONTROL_USER,
        "-P",
        Mosquitto::CONTROL_PASSWORD,
    ];
    let out = uplink_sub(&control_login, "wedge-check", desired, "10")?;
    assert!(out.status.success() && !out.stdout.is_empty(), "{out:?}");
    // …but another node, even claiming mq-1's client id, reads nothing of it (the ACL
    // confines it to its own topics), and takes over nothing (its client id becomes its
    // user name): mq-1 keeps working below.
    let other = ["-u", "mq-2", "-P", OTHER_PASSWORD];
    let out = uplink_sub(&other, "mq-1", desired, "3")?;
    assert!(
        out.stdout.is_empty(),
        "mq-2 read mq-1's desired state: {out:?}"
    );

    // The actuator: mosquitto_sub waits for one alert. `-d` prints the SUBACK, so the
    // readings are published only once it is subscribed.
    let local = node.local_mqtt_addr;
    let port = local.port().to_string();
    let login = ["-u", DEVICE_USER, "-P", DEVICE_PASSWORD];
    // stdbuf: line-buffered output through the pipe, so the SUBACK line arrives when said.
    let mut actuator = Command::new("stdbuf")
        .arg("-oL")
        .arg(program("mosquitto_sub").expect("available"))
        .args(["-d", "-h", "127.0.0.1", "-p", &port, "-i", "actuator"])
        .args(login)
        .args(["-t", "alerts/#", "-C", "1", "-W", "120"])
        .stdout(Stdio::piped())
        .spawn()?;
    let out = actuator.stdout.take().expect("piped");
    let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<String>(64);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if lines_tx.blocking_send(line).is_err() {
                return;
            }
        }
    });
    while !next_line(&mut lines).await?.contains("SUBACK") {}

    // The device: mosquitto_pub, QoS 1.
    for reading in ["10", "72"] {
        let status = Command::new(program("mosquitto_pub").expect("available"))
            .args(["-h", "127.0.0.1", "-p", &port, "-i", "sensor", "-q", "1"])
            .args(login)
            .args(["-t", "sensors/temp", "-m", reading])
            .status()?;
        assert!(status.success(), "mosquitto_pub: {status}");
    }
    let alert = loop {
        let line = next_line(&mut lines).await?;
        if line.starts_with('{') {
            break serde_json::from_str::<Value>(&line)?;
        }
    };
    assert_eq!(
        alert,
        json!({"topic": "sensors/temp", "value": 72.0, "threshold": 50.0})
    );
    assert!(actuator.wait()?.success());
    let _ = reader.join();

    // Telemetry went up through Mosquitto, once each.
    let rows = wait_for("both readings stored", DEADLINE, || async {
        let rows = cp.api.telemetry("mq-1", Some("forward")).await.ok()?;
        (rows.len() == 2).then_some(rows)
    })
    .await?;
    assert_eq!(rows.len(), 2, "{rows:?}");

    // Without its broker the control plane is not ready.
    broker.kill()?;
    wait_for(
        "the control plane unready without its broker",
        DEADLINE,
        || async {
            let (status, body) = cp.api.get_text("/readyz").await.ok()?;
            (status == 503).then_some(body)
        },
    )
    .await?;
    cp.stop().await;
    Ok(())
}
