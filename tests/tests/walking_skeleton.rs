//! End to end: a module goes from the control plane's API to an edge node and acts on
//! local device messages; the API shows the fleet as it is.

use std::time::Duration;

use serde_json::{Value, json};
use wedge_tests::{ControlPlane, Device, Node};

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn threshold_alert_end_to_end() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let mut n1 = Node::start(&cp, "edge-1", &[("site", "lab")]).await?;
    let mut n2 = Node::start(&cp, "edge-2", &[("site", "yard")]).await?;
    cp.api.wait_status("edge-1", "online", DEADLINE).await?;
    cp.api.wait_status("edge-2", "online", DEADLINE).await?;

    let digest = cp.api.upload_module("threshold-alert", "0.1.0").await?;
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    let (status, modules) = cp.api.get("/api/v1/modules").await?;
    assert_eq!(status, 200);
    assert_eq!(modules[0]["name"], "threshold-alert");
    assert_eq!(modules[0]["digest"], digest.as_str());

    let (status, deployment) = cp
        .api
        .post_json(
            "/api/v1/deployments",
            &json!({
                "name": "temp-alert",
                "module": "threshold-alert@0.1.0",
                "nodes": ["edge-1"],
                "subscriptions": ["sensors/#"],
                "config": {"threshold": 50, "alert_topic": "alerts/temp"},
            }),
        )
        .await?;
    assert_eq!(status, 201, "{deployment}");
    assert_eq!(deployment["module"]["digest"], digest.as_str());

    let node = cp
        .api
        .wait_module_state("edge-1", "temp-alert", "running", DEADLINE)
        .await?;
    assert_eq!(node["modules"][0]["digest"], digest.as_str());

    let mut device = Device::connect(n1.local_mqtt_addr, "device-1", &["alerts/#"]).await?;
    for payload in [&b"10"[..], b"60", b"\"junk\"", br#"{"value": 99}"#] {
        device.publish("sensors/temp", payload).await?;
    }
    // A marker alert from another topic: modules handle messages in order, so when it
    // arrives every alert the four readings caused has arrived before it.
    device.publish("sensors/marker", b"1000").await?;

    let mut alerts = Vec::new();
    loop {
        let (topic, payload) = device.recv(DEADLINE).await?;
        assert_eq!(topic, "alerts/temp");
        let alert: Value = serde_json::from_slice(&payload)?;
        if alert["topic"] == "sensors/marker" {
            break;
        }
        alerts.push(alert);
    }
    assert_eq!(
        alerts,
        vec![
            json!({"topic": "sensors/temp", "value": 60.0, "threshold": 50.0}),
            json!({"topic": "sensors/temp", "value": 99.0, "threshold": 50.0}),
        ]
    );

    // The fleet as the API sees it: both online, the module on the first only.
    let (status, fleet) = cp.api.get("/api/v1/fleet").await?;
    assert_eq!(status, 200);
    assert_eq!(
        fleet["nodes"],
        json!({"total": 2, "online": 2, "degraded": 0, "offline": 0})
    );
    assert_eq!(fleet["problems"], json!([]));
    let (status, nodes) = cp.api.get("/api/v1/nodes").await?;
    assert_eq!(status, 200);
    let nodes = nodes.as_array().expect("a list");
    assert_eq!(nodes.len(), 2);
    for n in nodes {
        assert_eq!(n["status"], "online", "{n}");
        assert_eq!(n["arch"], std::env::consts::ARCH);
        assert!(n["last_seen"].is_string());
    }
    let by_id = |id: &str| {
        nodes
            .iter()
            .find(|n| n["id"] == id)
            .cloned()
            .expect("node listed")
    };
    let e1 = by_id("edge-1");
    assert_eq!(e1["labels"], json!({"site": "lab"}));
    assert_eq!(e1["modules"].as_array().map(Vec::len), Some(1));
    assert_eq!(e1["modules"][0]["state"], "running");
    assert_eq!(by_id("edge-2")["modules"], json!([]));

    // The second node never hears of the module: desired state is per node.
    n2.stop().await;
    let off = cp.api.wait_status("edge-2", "offline", DEADLINE).await?;
    assert_eq!(off["reason"], "shut down");
    let (_, e1) = cp.api.get("/api/v1/nodes/edge-1").await?;
    assert_eq!(e1["status"], "online");

    n1.stop().await;
    cp.api.wait_status("edge-1", "offline", DEADLINE).await?;
    cp.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_refuses_bad_input_clearly() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let api = &cp.api;

    let (status, _) = api.get("/healthz").await?;
    assert_eq!(status, 200);

    // Not a component.
    let (status, body) = api
        .post_bytes(
            "/api/v1/modules?name=m&version=1",
            b"definitely not wasm".to_vec(),
        )
        .await?;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "bad_request");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("component"),
        "{body}"
    );

    // A core module is not a component either.
    let core = b"\0asm\x01\0\0\0".to_vec();
    let (status, body) = api
        .post_bytes("/api/v1/modules?name=m&version=1", core)
        .await?;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("core"),
        "{body}"
    );

    // Missing query parameters, bad names.
    let (status, _) = api.post_bytes("/api/v1/modules", vec![1]).await?;
    assert_eq!(status, 400);
    let (status, _) = api
        .post_bytes("/api/v1/modules?name=a/b&version=1", vec![1])
        .await?;
    assert_eq!(status, 400);

    // Same name and version, different bytes: conflict; same bytes: idempotent.
    let digest = api.upload_module("threshold-alert", "1").await?;
    assert_eq!(api.upload_module("threshold-alert", "1").await?, digest);

    // Deployments: malformed JSON, unknown module, both or neither target, bad filter.
    let (status, body) = api
        .post_bytes("/api/v1/deployments", b"{not json".to_vec())
        .await?;
    assert_eq!(status, 400, "{body}");
    for (bad, why) in [
        (
            json!({"name": "d", "module": "nope@1", "nodes": ["n"]}),
            "no module",
        ),
        (
            json!({"name": "d", "module": "sha256:00", "nodes": ["n"]}),
            "digest",
        ),
        (json!({"name": "d", "module": "threshold-alert@1"}), "nodes"),
        (
            json!({"name": "d", "module": "threshold-alert@1", "nodes": ["n"], "selector": {"labels": {}}}),
            "not both",
        ),
        (
            json!({"name": "d", "module": "threshold-alert@1", "nodes": ["n"], "subscriptions": ["a/#/b"]}),
            "subscription",
        ),
        (
            json!({"name": "bad name", "module": "threshold-alert@1", "nodes": ["n"]}),
            "name",
        ),
        (
            json!({"name": "d", "module": "threshold-alert@1", "nodes": ["n"], "extra": 1}),
            "extra",
        ),
    ] {
        let (status, body) = api.post_json("/api/v1/deployments", &bad).await?;
        assert_eq!(status, 400, "{bad} → {body}");
        let msg = body["error"]["message"].as_str().unwrap_or("");
        assert!(
            msg.contains(why),
            "{bad}: message {msg:?} should mention {why:?}"
        );
    }

    // Unknown node and route.
    let (status, body) = api.get("/api/v1/nodes/ghost").await?;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = api.get("/api/v1/nodes/ghost/events").await?;
    assert_eq!(status, 404);
    let (status, _) = api.get("/api/v1/nope").await?;
    assert_eq!(status, 404);
    cp.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_alerts_and_rolls_out_with_a_canary() -> anyhow::Result<()> {
    use wedge_demo::Event;
    let (events, mut seen) = tokio::sync::mpsc::channel(64);
    let stop = tokio_util::sync::CancellationToken::new();
    let demo = tokio::spawn(wedge_demo::run(
        wedge_demo::Options::ephemeral(Duration::from_millis(20), Duration::from_secs(1)),
        events,
        stop.clone(),
    ));
    let mut api = None;
    let mut alerting = std::collections::BTreeSet::new();
    while api.is_none() || alerting.len() < 3 {
        match tokio::time::timeout(DEADLINE, seen.recv()).await? {
            Some(Event::Ready { api: base }) => api = Some(base),
            Some(Event::Alert { node, alert }) => {
                assert!(alert["value"].as_f64().unwrap_or(0.0) > 48.0, "{alert}");
                assert_eq!(alert["topic"], "sensors/room-1/temperature");
                alerting.insert(node);
            }
            None => anyhow::bail!("the demo stopped: {:?}", demo.await),
        }
    }
    // The canary rollout of revision 2 completes on all three nodes.
    let base = api.unwrap_or_default();
    let api = wedge_tests::Api::new(base.trim_start_matches("http://").parse()?);
    let d = api
        .wait_rollout("temperature-alert", 2, "complete", DEADLINE)
        .await?;
    assert_eq!(d["rollout"]["counts"]["healthy"], 3, "{d}");
    stop.cancel();
    demo.await??;
    Ok(())
}
