//! The adversary's moves, each with a proof that it fails and that honest parts keep
//! working. (The beginning of the adversary suite: more moves join it as the holes of the
//! security review close.)

use std::time::Duration;

use anyhow::Context as _;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use wedge_proto::messages::{BlobReply, BlobRequest};
use wedge_proto::topics::NodeTopic;
use wedge_tests::{ControlPlane, Device, Node, idle_heartbeat, wait_for};

const DEADLINE: Duration = Duration::from_secs(60);

/// A node of the control plane's broker with a valid certificate for `id` (enrolled as far
/// as the broker can tell), driven by hand.
fn hostile_node(cp: &ControlPlane, id: &str) -> anyhow::Result<(AsyncClient, rumqttc::EventLoop)> {
    let tls = cp.node_tls(id)?;
    let mut opts = MqttOptions::new(id, "127.0.0.1", cp.mqtt_addr.port());
    opts.set_keep_alive(Duration::from_secs(10));
    // Blob chunks are larger than rumqttc's default packet limit.
    opts.set_max_packet_size(
        wedge_proto::envelope::MAX_MESSAGE_SIZE + 1024,
        wedge_proto::envelope::MAX_MESSAGE_SIZE + 1024,
    );
    opts.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(tls),
    ));
    Ok(AsyncClient::new(opts, 16))
}

/// Asks for the first chunk of `digest` on `node`'s own topics and returns the answer.
async fn ask_for_blob(
    client: &AsyncClient,
    eventloop: &mut rumqttc::EventLoop,
    node: &str,
    digest: wedge_proto::Digest,
) -> anyhow::Result<BlobReply> {
    let request = BlobRequest {
        digest,
        offset: 0,
        max_chunks: 1,
    };
    client
        .publish(
            NodeTopic::BlobRequest.for_node(node),
            QoS::AtLeastOnce,
            false,
            wedge_proto::encode(&request),
        )
        .await?;
    let answer = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = eventloop.poll().await? {
                return anyhow::Ok(wedge_proto::decode::<BlobReply>(&p.payload)?);
            }
        }
    })
    .await??;
    Ok(answer)
}

/// A node asks for a module deployed only to another node: "not found", though the blob
/// exists; the same node gets a module of its own desired state; the honest node runs its
/// module all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_fetches_only_the_modules_of_its_own_desired_state() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let api = &cp.api;
    let honest = Node::start(&cp, "honest", &[]).await?;
    let secret = api.upload_module("window-stats", "1").await?;
    let own = api.upload_module("forward", "1").await?;
    api.deploy(
        &json!({"name": "secret", "module": "window-stats@1", "nodes": ["honest"],
        "subscriptions": ["sensors/#"]}),
    )
    .await?;
    api.deploy(
        &json!({"name": "mine", "module": "forward@1", "nodes": ["nosy"],
        "subscriptions": ["sensors/#"]}),
    )
    .await?;
    api.wait_running_digest("honest", "secret", &secret, DEADLINE)
        .await?;

    let (client, mut eventloop) = hostile_node(&cp, "nosy")?;
    client
        .subscribe(NodeTopic::BlobData.for_node("nosy"), QoS::AtLeastOnce)
        .await?;
    tokio::time::timeout(DEADLINE, async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await? {
                return anyhow::Ok(());
            }
        }
    })
    .await??;
    // Its own module is served once its desired state names it (the rollout assigns it
    // within a step), so its desired state exists when it asks for the other one.
    client
        .publish(
            NodeTopic::Status.for_node("nosy"),
            QoS::AtLeastOnce,
            true,
            idle_heartbeat("nosy"),
        )
        .await?;
    let started = std::time::Instant::now();
    loop {
        let answer = ask_for_blob(&client, &mut eventloop, "nosy", own.parse()?).await?;
        if matches!(answer, BlobReply::Chunk(ref c) if c.offset == 0 && !c.data.is_empty()) {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < DEADLINE,
            "its own module was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = ask_for_blob(&client, &mut eventloop, "nosy", secret.parse()?).await?;
    assert!(
        matches!(answer, BlobReply::NotFound { .. }),
        "another node's module was served (a chunk of it came back)"
    );
    api.wait_running_digest("honest", "secret", &secret, DEADLINE)
        .await?;
    drop(honest);
    cp.stop().await;
    Ok(())
}

/// A device that connects with the client id of the node's own in-process link is refused
/// (it would have kicked the link off and left the modules deaf while the node looked
/// ready); one that uses the old, unreserved form of that id is just another device. Alerts
/// keep flowing and `/readyz` stays truthful throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_device_cannot_take_over_the_node_s_own_link() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let node = Node::start(&cp, "edge-1", &[]).await?;
    cp.api.upload_module("threshold-alert", "1").await?;
    cp.api
        .deploy(
            &json!({"name": "alert", "module": "threshold-alert@1", "nodes": ["edge-1"],
            "subscriptions": ["sensors/#"],
            "config": {"threshold": 50, "alert_topic": "alerts/temp"}}),
        )
        .await?;
    cp.api
        .wait_module_state("edge-1", "alert", "running", DEADLINE)
        .await?;
    let mut device = Device::connect(node.local_mqtt_addr, "device-1", &["alerts/#"]).await?;
    alert_flows(&mut device, 60).await?;

    let internal = wedge_proto::topics::node_link_client_id("edge-1");
    assert!(
        !device_admitted(node.local_mqtt_addr, &internal).await?,
        "a device connected as {internal}"
    );
    assert!(device_admitted(node.local_mqtt_addr, "wedge-node-edge-1").await?);

    alert_flows(&mut device, 70).await?;
    let (status, ready) = get_json(&format!("http://{}/readyz", node.http_addr()?)).await?;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["module_link"], "open");
    cp.stop().await;
    Ok(())
}

/// A client that enrolls (or holds a node certificate) cannot use the control plane's own
/// client id on its broker: that id is not a node id, so the gate refuses it, and the
/// control plane keeps its session (nodes stay online, desired states still arrive).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nobody_takes_over_the_control_plane_s_session() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let mut honest = Node::start(&cp, "honest", &[]).await?;
    cp.api.wait_status("honest", "online", DEADLINE).await?;
    let connects = || async {
        let (_, text) = cp.api.get_text("/metrics").await?;
        wedge_tests::metric(&text, "wedge_mqtt_connects_total", &[])
            .context("wedge_mqtt_connects_total")
    };
    assert_eq!(connects().await?, 1.0);
    // With a node certificate whose name is that id (the control plane's own id before it
    // was reserved, and the reserved form): refused, or confined to that (unused) node's
    // topics. Each keeps trying for a while, as a takeover loop would.
    for id in [
        format!("wedge-control-{}", std::process::id()),
        wedge_proto::topics::control_plane_client_id("1"),
    ] {
        let (_client, mut eventloop) = hostile_node(&cp, &id)?;
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                if eventloop.poll().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        })
        .await;
    }
    assert_eq!(
        connects().await?,
        1.0,
        "the control plane's session was cut off"
    );
    let (status, ready) = cp.api.get_text("/readyz").await?;
    assert_eq!((status, ready.as_str()), (200, "ready"));
    // The control plane still talks to nodes: a deployment reaches the honest node.
    let digest = cp.api.upload_module("forward", "1").await?;
    cp.api
        .deploy(
            &json!({"name": "fw", "module": "forward@1", "nodes": ["honest"],
            "subscriptions": ["sensors/#"]}),
        )
        .await?;
    cp.api
        .wait_running_digest("honest", "fw", &digest, DEADLINE)
        .await?;
    honest.stop().await;
    cp.stop().await;
    Ok(())
}

async fn get_json(url: &str) -> anyhow::Result<(u16, serde_json::Value)> {
    let response = reqwest::get(url).await?;
    Ok((response.status().as_u16(), response.json().await?))
}

/// A reading above the threshold makes an alert that the device receives.
async fn alert_flows(device: &mut Device, value: u32) -> anyhow::Result<()> {
    device
        .publish("sensors/temp", value.to_string().as_bytes())
        .await?;
    let (topic, alert) = device.recv(DEADLINE).await?;
    let alert: serde_json::Value = serde_json::from_slice(&alert)?;
    anyhow::ensure!(topic == "alerts/temp" && alert["value"] == f64::from(value));
    Ok(())
}

/// Whether the node's local broker accepts a device (with valid credentials) connecting
/// as `client_id`.
async fn device_admitted(broker: std::net::SocketAddr, client_id: &str) -> anyhow::Result<bool> {
    let mut opts = MqttOptions::new(client_id, broker.ip().to_string(), broker.port());
    opts.set_credentials(wedge_tests::DEVICE_USER, wedge_tests::DEVICE_PASSWORD);
    let (_client, mut eventloop) = AsyncClient::new(opts, 4);
    let admitted = tokio::time::timeout(DEADLINE, async {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                ack.code == rumqttc::ConnectReturnCode::Success
            }
            _ => false,
        }
    })
    .await?;
    Ok(admitted)
}

/// A stranger with a valid bootstrap token tries to enroll as a node that is enrolled and
/// online: refused at CONNECT, so the real node is never kicked off (its uplink never
/// reconnects). A token bound to `berlin-*` enrolls only such ids. When an operator really
/// replaces the machine (`POST /api/v1/nodes/{id}/replace`, `wedgectl replace`), the old
/// one is cut off and the new one enrolls under the id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_valid_token_cannot_take_over_an_enrolled_node() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let api = &cp.api;
    let mut real = Node::start(&cp, "berlin-1", &[]).await?;
    api.wait_status("berlin-1", "online", DEADLINE).await?;
    let reconnects = |node: &Node| {
        let url = format!("http://{}/metrics", node.http_addr().ok()?);
        Some(async move {
            let text = reqwest::get(url).await?.text().await?;
            wedge_tests::metric(&text, "wedge_uplink_reconnects_total", &[])
                .context("wedge_uplink_reconnects_total")
        })
    };
    let before = reconnects(&real).context("node running")?.await?;

    let impostor = Node::start(&cp, "berlin-1", &[]).await;
    let e = format!("{:#}", impostor.err().context("the impostor was enrolled")?);
    assert!(e.contains("already enrolled"), "{e}");
    assert_eq!(
        reconnects(&real).context("node running")?.await?,
        before,
        "the real node was kicked off"
    );

    // A token bound to a pattern.
    let (status, body) = api
        .post_json(
            "/api/v1/enrollment-tokens",
            &json!({"name": "berlin", "uses": 5, "nodes": "berlin-*"}),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["nodes"], "berlin-*");
    let berlin = body["token"].as_str().unwrap_or_default().to_string();
    let with_berlin = |id: &'static str| {
        let berlin = berlin.clone();
        let cp = &cp;
        async move {
            Node::start_configured(cp, id, &[], "127.0.0.1:0".parse()?, |c| {
                c.enroll_token = Some(berlin);
            })
            .await
        }
    };
    let e = format!(
        "{:#}",
        with_berlin("paris-1")
            .await
            .err()
            .context("paris-1 enrolled")?
    );
    assert!(e.contains("not valid"), "{e}");
    let _berlin_2 = with_berlin("berlin-2").await?;
    api.wait_status("berlin-2", "online", DEADLINE).await?;
    let (status, _) = api
        .post_json("/api/v1/enrollment-tokens", &json!({"nodes": "berlin/*"}))
        .await?;
    assert_eq!(status, 400);

    // The operator replaces berlin-1: the old machine is cut off and stays off, the new one
    // enrolls under the id.
    let (status, body) = api
        .post_json("/api/v1/nodes/berlin-1/replace", &json!({}))
        .await?;
    assert_eq!(status, 200, "{body}");
    wait_for("the old berlin-1 cut off", DEADLINE, || async {
        let n = reconnects(&real)?.await.ok()?;
        (n > before).then_some(())
    })
    .await?;
    let _new = Node::start(&cp, "berlin-1", &[]).await?;
    api.wait_status("berlin-1", "online", DEADLINE).await?;
    real.stop().await;
    cp.stop().await;
    Ok(())
}

/// A deployment whose desired state would not fit in one MQTT message is refused at the API
/// (before, the control plane's broker session ended on every try to send it), alone or
/// together with the node's other deployments; the control plane keeps its session.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_desired_state_over_the_message_limit_is_refused_at_the_api() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let api = &cp.api;
    let _node = Node::start(&cp, "edge-1", &[]).await?;
    api.wait_status("edge-1", "online", DEADLINE).await?;
    api.upload_module("forward", "1").await?;
    let with_config = |name: &str, bytes: usize| {
        json!({"name": name, "module": "forward@1", "nodes": ["edge-1"],
            "subscriptions": ["sensors/#"], "config": {"blob": "x".repeat(bytes)}})
    };
    // The default limit is 1 MiB.
    let (status, body) = api
        .post_json("/api/v1/deployments", &with_config("huge", 1_100_000))
        .await?;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("MQTT message limit"), "{body}");
    let (status, body) = api
        .post_json("/api/v1/deployments", &with_config("half-1", 600_000))
        .await?;
    assert_eq!(status, 201, "{body}");
    // (`forward` refuses the made-up config at init; what counts is that the desired
    // state reached the node.)
    wait_for("the 600 KB desired state applied", DEADLINE, || async {
        let n = api.node("edge-1").await.ok()??;
        (n["applied_generation"] == 1 && n["modules"][0]["name"] == "half-1").then_some(())
    })
    .await?;
    let (status, body) = api
        .post_json("/api/v1/deployments", &with_config("half-2", 600_000))
        .await?;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("node edge-1"), "{body}");
    let (_, text) = api.get_text("/metrics").await?;
    assert_eq!(
        wedge_tests::metric(&text, "wedge_mqtt_connects_total", &[]),
        Some(1.0)
    );
    cp.stop().await;
    Ok(())
}

/// A node with a valid certificate floods the control plane with blob requests (each
/// answered with a megabyte of chunks) and tiny telemetry batches. Heartbeats have their
/// own lane and the flooder only its own share of the queue, so an honest node's
/// heartbeats keep being processed throughout and it never looks offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_flooding_node_does_not_starve_the_fleet() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let api = &cp.api;
    let honest = Node::start(&cp, "honest", &[]).await?;
    api.wait_status("honest", "online", DEADLINE).await?;
    let digest = api.upload_module("window-stats", "1").await?;
    api.deploy(
        &json!({"name": "mine", "module": "window-stats@1", "nodes": ["flood"],
        "subscriptions": ["sensors/#"]}),
    )
    .await?;
    let (client, mut eventloop) = hostile_node(&cp, "flood")?;
    client
        .publish(
            NodeTopic::Status.for_node("flood"),
            QoS::AtLeastOnce,
            true,
            idle_heartbeat("flood"),
        )
        .await?;
    let driver = tokio::spawn(async move {
        // Replies are read and thrown away; a cut connection is reopened.
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let heartbeats = || async {
        let (_, text) = api.get_text("/metrics").await?;
        wedge_tests::metric(&text, "wedge_heartbeats_total", &[]).context("heartbeats")
    };
    let request = wedge_proto::encode(&BlobRequest {
        digest: digest.parse()?,
        offset: 0,
        max_chunks: 16,
    });
    let batch = wedge_proto::encode(&wedge_proto::messages::TelemetryBatch {
        epoch: 7,
        epoch_start: 1,
        first_available: 1,
        records: vec![],
    });
    let before = heartbeats().await?;
    let flood = async {
        loop {
            let _ = client
                .publish(
                    NodeTopic::BlobRequest.for_node("flood"),
                    QoS::AtMostOnce,
                    false,
                    request.clone(),
                )
                .await;
            let _ = client
                .publish(
                    NodeTopic::Telemetry.for_node("flood"),
                    QoS::AtMostOnce,
                    false,
                    batch.clone(),
                )
                .await;
        }
    };
    // While it floods, the honest node's heartbeats (one a second) keep being counted and
    // it stays online.
    let watched = async {
        // Five of the ten the honest node sends in ten seconds, counted within twenty
        // (before the lanes and the blob rate, it took about a minute).
        wait_for(
            "honest heartbeats during the flood",
            Duration::from_secs(20),
            || async {
                let n = heartbeats().await.ok()?;
                (n >= before + 5.0).then_some(())
            },
        )
        .await
    };
    tokio::select! {
        _ = flood => unreachable!("the flood never ends by itself"),
        r = watched => r?,
    }
    let n = api.node("honest").await?.context("honest known")?;
    assert_eq!(n["status"], "online", "{n}");
    driver.abort();
    drop(honest);
    cp.stop().await;
    Ok(())
}
