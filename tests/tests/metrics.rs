//! `/metrics` and `/readyz` on both binaries: the series an operator scrapes show what
//! really happened, and readiness means what it says.

use std::time::Duration;

use serde_json::{Value, json};
use wedge_tests::proxy::Proxy;
use wedge_tests::{Api, ControlPlane, Device, Node, metric, wait_for};

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_binaries_expose_the_series_and_readiness() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    // The node reaches the control plane through a proxy that can cut the link.
    let proxy = Proxy::start(cp.mqtt_addr).await?;
    let mut node = Node::start_configured(&cp, "m1", &[], "127.0.0.1:0".parse()?, |c| {
        c.control_plane = format!("mqtts://{}", proxy.addr());
    })
    .await?;
    cp.api.wait_status("m1", "online", DEADLINE).await?;
    cp.api.upload_module("threshold-alert", "1").await?;
    cp.api.upload_module("forward", "1").await?;
    for body in [
        json!({"name": "alert", "module": "threshold-alert@1", "nodes": ["m1"],
               "subscriptions": ["sensors/#"],
               "config": {"threshold": 50, "alert_topic": "alerts/temp"}}),
        json!({"name": "fwd", "module": "forward@1", "nodes": ["m1"],
               "subscriptions": ["sensors/#"]}),
    ] {
        let (status, answer) = cp.api.post_json("/api/v1/deployments", &body).await?;
        assert_eq!(status, 201, "{answer}");
    }
    cp.api
        .wait_module_state("m1", "alert", "running", DEADLINE)
        .await?;
    cp.api
        .wait_module_state("m1", "fwd", "running", DEADLINE)
        .await?;

    let mut device = Device::connect(node.local_mqtt_addr, "sensor", &["alerts/#"]).await?;
    for value in [10, 60, 70, 20, 99] {
        device
            .publish("sensors/temp", value.to_string().as_bytes())
            .await?;
    }
    for _ in 0..3 {
        device.recv(DEADLINE).await?;
    }

    let node_api = Api::new(node.http_addr()?);
    // A call's duration is observed after the call returns, so once both modules show five
    // message calls, every count of what those calls did is in (messages_in alone counts a
    // message before its call, which raced the emit it makes).
    let text = wait_for("node metrics to show all 5 messages", DEADLINE, || async {
        let (status, text) = node_api.get_text("/metrics").await.ok()?;
        let calls = |module| {
            metric(
                &text,
                "wedge_module_call_duration_seconds_count",
                &[("module", module), ("call", "message")],
            )
        };
        (status == 200 && calls("fwd")? >= 5.0 && calls("alert")? >= 5.0).then_some(text)
    })
    .await?;
    let m = |name: &str, labels: &[(&str, &str)]| {
        metric(&text, name, labels).unwrap_or_else(|| panic!("{name} {labels:?} in\n{text}"))
    };
    assert_eq!(
        m("wedge_module_messages_in_total", &[("module", "alert")]),
        5.0
    );
    assert_eq!(
        m(
            "wedge_module_messages_out_total",
            &[("module", "alert"), ("to", "local")]
        ),
        3.0
    );
    assert_eq!(
        m(
            "wedge_module_messages_out_total",
            &[("module", "fwd"), ("to", "uplink")]
        ),
        5.0
    );
    assert_eq!(
        m(
            "wedge_module_call_duration_seconds_count",
            &[("module", "fwd"), ("call", "message")]
        ),
        5.0
    );
    assert_eq!(
        m(
            "wedge_module_call_duration_seconds_count",
            &[("module", "fwd"), ("call", "init")]
        ),
        1.0
    );
    assert_eq!(m("wedge_module_traps_total", &[("module", "fwd")]), 0.0);
    assert_eq!(m("wedge_module_restarts_total", &[("module", "fwd")]), 0.0);
    assert_eq!(m("wedge_uplink_connected", &[]), 1.0);
    for name in [
        "wedge_buffer_pending_records",
        "wedge_buffer_pending_bytes",
        "wedge_buffer_oldest_age_seconds",
        "wedge_buffer_dropped_total",
        "wedge_uplink_reconnects_total",
    ] {
        m(name, &[]);
    }
    assert!(m("wedge_buffer_quota_bytes", &[]) > 0.0);
    assert!(m("process_resident_memory_bytes", &[]) > 1e6);
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );

    // The control plane's side of the same story.
    wait_for("the forwarded records stored", DEADLINE, || async {
        let rows = cp.api.telemetry("m1", Some("forward")).await.ok()?;
        (rows.len() == 5).then_some(())
    })
    .await?;
    cp.api.get("/api/v1/nodes/m1").await?;
    let (status, text) = cp.api.get_text("/metrics").await?;
    assert_eq!(status, 200);
    let m = |name: &str, labels: &[(&str, &str)]| {
        metric(&text, name, labels).unwrap_or_else(|| panic!("{name} {labels:?} in\n{text}"))
    };
    assert_eq!(m("wedge_nodes", &[("status", "online")]), 1.0);
    assert_eq!(m("wedge_nodes", &[("status", "offline")]), 0.0);
    // Both deployments, in whatever phase their rollout has reached by now.
    let rollouts: f64 = text
        .lines()
        .filter(|l| l.starts_with("wedge_rollouts{phase="))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(rollouts, 2.0, "{text}");
    assert!(m("wedge_telemetry_records_stored_total", &[]) >= 5.0);
    assert!(m("wedge_telemetry_acks_total", &[]) >= 1.0);
    assert!(m("wedge_heartbeats_total", &[]) >= 1.0);
    assert_eq!(m("wedge_mqtt_impersonation_total", &[]), 0.0);
    assert!(
        m(
            "wedge_api_request_duration_seconds_count",
            &[
                ("method", "GET"),
                ("route", "/api/v1/nodes/{id}"),
                ("status", "200")
            ]
        ) >= 1.0,
        "latency by route template"
    );
    assert!(m("process_resident_memory_bytes", &[]) > 1e6);
    // Unknown paths are one series, not one per path.
    cp.api.get("/no/such/thing/1").await?;
    cp.api.get("/no/such/thing/2").await?;
    let (_, text) = cp.api.get_text("/metrics").await?;
    assert!(!text.contains("/no/such"), "raw paths never become labels");
    assert!(
        metric(
            &text,
            "wedge_api_request_duration_seconds_count",
            &[("route", "unmatched"), ("status", "404")]
        ) >= Some(2.0)
    );
    // /metrics is an API read: it needs a token.
    let anonymous = reqwest::get(format!("{}/metrics", cp.api.base)).await?;
    let status = anonymous.status().as_u16();
    assert_eq!(status, 401);

    // Readiness. The control plane: store and broker up.
    let (status, _) = cp.api.get_text("/readyz").await?;
    assert_eq!(status, 200);
    // The node: ready, uplink reported; and still ready with its uplink cut, since local
    // processing goes on.
    let (status, ready) = node_api.get("/readyz").await?;
    assert_eq!(status, 200);
    assert_eq!(
        ready,
        json!({"ready": true, "local_broker": "running", "module_link": "open", "store": "ok",
            "uplink": "connected"})
    );
    proxy.cut();
    let ready: Value = wait_for("the node to see its uplink gone", DEADLINE, || async {
        let (status, ready) = node_api.get("/readyz").await.ok()?;
        (status == 200 && ready["uplink"] == "disconnected").then_some(ready)
    })
    .await?;
    assert_eq!(ready["ready"], true);
    let (_, text) = node_api.get_text("/metrics").await?;
    assert_eq!(metric(&text, "wedge_uplink_connected", &[]), Some(0.0));
    device.publish("sensors/temp", b"80").await?;
    device.recv(DEADLINE).await?;
    node.stop().await;
    cp.stop().await;
    Ok(())
}
