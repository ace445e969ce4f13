//! Node identity over TLS, end to end: enrollment and its refusals, the broker's admission
//! and topic confinement, revocation cutting a live node off, and renewal with nothing lost.

use std::time::Duration;

use rumqttc::{AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use wedge_proto::topics::NodeTopic;
use wedge_tests::{ControlPlane, Device, Node, idle_heartbeat, wait_for};

const DEADLINE: Duration = Duration::from_secs(60);

/// An MQTT client of the control plane's broker with `tls` settings.
fn client(
    cp: &ControlPlane,
    id: &str,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> (AsyncClient, rumqttc::EventLoop) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", cp.mqtt_addr.port());
    opts.set_keep_alive(Duration::from_secs(10));
    if let Some(tls) = tls {
        opts.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls),
        ));
    }
    AsyncClient::new(opts, 16)
}

/// Polls until the connection is accepted, refused, or fails; returns the outcome.
async fn connect_outcome(eventloop: &mut rumqttc::EventLoop) -> Result<(), ConnectionError> {
    let outcome = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    outcome.unwrap_or(Err(ConnectionError::NetworkTimeout))
}

/// Polls until the connection breaks (or `deadline` passes: `false`).
async fn cut_off(eventloop: &mut rumqttc::EventLoop, deadline: Duration) -> bool {
    tokio::time::timeout(deadline, async {
        loop {
            if eventloop.poll().await.is_err() {
                return;
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_broker_admits_only_enrolled_nodes() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;

    // Plain MQTT on the TLS port: no CONNACK, the connection just fails.
    let (_c, mut plain) = client(&cp, "plain", None);
    assert!(connect_outcome(&mut plain).await.is_err());

    // TLS without a certificate and without a valid bootstrap token: refused.
    let ca_pem = std::fs::read_to_string(cp.data_dir().join(wedge_pki::CA_CERT_FILE))?;
    let anonymous = wedge_pki::client_config_anonymous(&ca_pem)?;
    let (_c, mut anon) = client(&cp, "anon", Some(anonymous.clone()));
    assert!(matches!(
        connect_outcome(&mut anon).await,
        Err(ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword
        ))
    ));

    // A certificate from another CA: the TLS handshake fails.
    let other = tempfile::tempdir()?;
    let other_ca = wedge_pki::Ca::load_or_create(other.path())?;
    let forged = other_ca.issue_client("n1", Duration::from_secs(3600))?;
    let (_c, mut foreign) = client(&cp, "n1", Some(wedge_pki::client_config(&ca_pem, &forged)?));
    assert!(connect_outcome(&mut foreign).await.is_err());

    // Our CA's certificate, but another node's client id: refused (no session takeover).
    let (_c, mut takeover) = client(&cp, "n2", Some(cp.node_tls("n1")?));
    assert!(matches!(
        connect_outcome(&mut takeover).await,
        Err(ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadClientId
        ))
    ));

    // A service certificate this control plane did not make for itself: refused.
    let (_c, mut service) = client(
        &cp,
        "svc",
        Some(cp.node_tls("wedge service control-plane")?),
    );
    assert!(matches!(
        connect_outcome(&mut service).await,
        Err(ConnectionError::ConnectionRefused(
            ConnectReturnCode::NotAuthorized
        ))
    ));

    // A node's last will on another node's status topic: refused.
    let mut opts = MqttOptions::new("n1", "127.0.0.1", cp.mqtt_addr.port());
    opts.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(cp.node_tls("n1")?),
    ));
    opts.set_last_will(rumqttc::LastWill::new(
        NodeTopic::Status.for_node("victim"),
        b"x".to_vec(),
        QoS::AtLeastOnce,
        true,
    ));
    let (_c, mut will) = AsyncClient::new(opts, 16);
    assert!(matches!(
        connect_outcome(&mut will).await,
        Err(ConnectionError::ConnectionRefused(
            ConnectReturnCode::NotAuthorized
        ))
    ));

    // The right certificate and client id: admitted.
    let (_c, mut good) = client(&cp, "n1", Some(cp.node_tls("n1")?));
    connect_outcome(&mut good).await?;
    cp.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_may_use_only_its_own_topics() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let api = &cp.api;

    // Its own heartbeat is taken.
    let (mine, mut el) = client(&cp, "honest", Some(cp.node_tls("honest")?));
    connect_outcome(&mut el).await?;
    mine.publish(
        NodeTopic::Status.for_node("honest"),
        QoS::AtLeastOnce,
        false,
        idle_heartbeat("honest"),
    )
    .await?;
    // (The client's event loop must run for the publish to go out.)
    tokio::select! {
        online = api.wait_status("honest", "online", DEADLINE) => { online?; }
        _ = async { while el.poll().await.is_ok() {} } => anyhow::bail!("connection lost"),
    }

    // Publishing as another node ends the connection, and the message goes nowhere.
    mine.publish(
        NodeTopic::Status.for_node("victim"),
        QoS::AtLeastOnce,
        false,
        idle_heartbeat("victim"),
    )
    .await?;
    assert!(
        cut_off(&mut el, Duration::from_secs(10)).await,
        "connection not cut"
    );
    let (status, _) = api.get("/api/v1/nodes/victim").await?;
    assert_eq!(status, 404, "the forged heartbeat must not register a node");

    // Subscribing to another node's desired state ends the connection too.
    let (mine, mut el) = client(&cp, "honest", Some(cp.node_tls("honest")?));
    connect_outcome(&mut el).await?;
    mine.subscribe(NodeTopic::Desired.for_node("victim"), QoS::AtLeastOnce)
        .await?;
    assert!(
        cut_off(&mut el, Duration::from_secs(10)).await,
        "connection not cut"
    );

    // So does a wildcard over every node, and publishing on a control-plane topic of its own.
    for attempt in 0..2 {
        let (mine, mut el) = client(&cp, "honest", Some(cp.node_tls("honest")?));
        connect_outcome(&mut el).await?;
        if attempt == 0 {
            mine.subscribe("wedge/v1/nodes/+/desired", QoS::AtLeastOnce)
                .await?;
        } else {
            mine.publish(
                NodeTopic::Desired.for_node("honest"),
                QoS::AtLeastOnce,
                false,
                b"x".to_vec(),
            )
            .await?;
        }
        assert!(
            cut_off(&mut el, Duration::from_secs(10)).await,
            "attempt {attempt}"
        );
    }
    cp.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enrollment_refuses_bad_tokens_wrong_pins_and_revoked_nodes() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let api = &cp.api;
    let enrollment = cp.enrollment.clone().expect("TLS is on");

    let attempt = |token: Option<String>, pin: Option<String>| {
        let cp = &cp;
        async move {
            Node::start_configured(cp, "newcomer", &[], "127.0.0.1:0".parse()?, |c| {
                c.enroll_token = token;
                c.ca_sha256 = pin;
            })
            .await
            .map(|_| ())
        }
    };
    let refused = |r: anyhow::Result<()>| format!("{:#}", r.expect_err("must be refused"));

    // No token at all: a clear error saying what to do.
    let e = refused(attempt(None, Some(enrollment.ca_sha256.clone())).await);
    assert!(e.contains("bootstrap token"), "{e}");
    // A made-up token.
    let fake = format!("wde_0badc0de_{}", "A".repeat(43));
    let e = refused(attempt(Some(fake), Some(enrollment.ca_sha256.clone())).await);
    assert!(e.contains("not valid"), "{e}");
    // The right token but the wrong CA hash: the node does not talk to that broker.
    let e = refused(attempt(Some(enrollment.token.clone()), Some("0".repeat(64))).await);
    assert!(e.contains("TLS"), "{e}");

    // A single-use token works once.
    let (status, body) = api
        .post_json(
            "/api/v1/enrollment-tokens",
            &json!({"name": "one", "uses": 1}),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["ca_sha256"], enrollment.ca_sha256.as_str());
    let once = body["token"].as_str().unwrap_or_default().to_string();
    let mut first = Node::start_configured(&cp, "first", &[], "127.0.0.1:0".parse()?, |c| {
        c.enroll_token = Some(once.clone());
    })
    .await?;
    api.wait_status("first", "online", DEADLINE).await?;
    let e = refused(attempt(Some(once), Some(enrollment.ca_sha256.clone())).await);
    assert!(e.contains("not valid"), "{e}");
    let (_, list) = api.get("/api/v1/enrollment-tokens").await?;
    let listed = list.as_array().cloned().unwrap_or_default();
    assert!(
        listed
            .iter()
            .any(|t| t["name"] == "one" && t["uses_left"] == 0)
    );
    assert!(
        listed
            .iter()
            .all(|t| t.get("sha256").is_none() && t.get("token").is_none())
    );

    // Bad requests get clear 4xx answers.
    let (status, _) = api
        .post_json("/api/v1/enrollment-tokens", &json!({"uses": 0}))
        .await?;
    assert_eq!(status, 400);
    let (status, _) = api
        .post_json("/api/v1/enrollment-tokens", &json!({"ttl_seconds": 1}))
        .await?;
    assert_eq!(status, 400);
    let (status, _) = api.delete("/api/v1/enrollment-tokens/nope").await?;
    assert_eq!(status, 404);

    // A revoked node cannot enroll again, even with a valid token …
    let (status, body) = api
        .post_json("/api/v1/nodes/first/revoke", &json!({}))
        .await?;
    assert_eq!(status, 200, "{body}");
    first.stop().await;
    // (A fresh data directory each time: a node without a certificate enrolls.)
    let again = || {
        Node::start_configured(
            &cp,
            "first",
            &[],
            "127.0.0.1:0".parse().expect("addr"),
            |_| {},
        )
    };
    let e = format!("{:#}", again().await.err().expect("revoked node refused"));
    assert!(e.contains("revoked"), "{e}");
    // … until an operator readmits it.
    let (status, _) = api
        .post_json("/api/v1/nodes/first/readmit", &json!({}))
        .await?;
    assert_eq!(status, 204);
    let (status, _) = api
        .post_json("/api/v1/nodes/first/readmit", &json!({}))
        .await?;
    assert_eq!(status, 404);
    let _back = again().await?;
    api.wait_status("first", "online", DEADLINE).await?;
    cp.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoking_a_node_cuts_it_off_at_once() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let api = &cp.api;
    let _node = Node::start(&cp, "doomed", &[]).await?;
    api.wait_status("doomed", "online", DEADLINE).await?;

    let (status, body) = api
        .post_json("/api/v1/nodes/doomed/revoke", &json!({}))
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revoked"], true);
    // Its connection is cut (its last will marks it offline at once), and its reconnects
    // are refused: it stays offline.
    let node = api
        .wait_status("doomed", "offline", Duration::from_secs(10))
        .await?;
    assert!(
        node["problems"].to_string().contains("revoked") || node.to_string().contains("revoked"),
        "{node}"
    );
    let stays = wait_for("the node back online", Duration::from_secs(3), || async {
        let n = api.node("doomed").await.ok()??;
        (n["status"] == "online").then_some(())
    })
    .await;
    assert!(stays.is_err(), "a revoked node came back");

    // A viewer may not revoke.
    let api_addr: std::net::SocketAddr = cp.api.base.trim_start_matches("http://").parse()?;
    let role = wedge_control_plane::auth::Role::Viewer;
    let (_, viewer) = wedge_control_plane::auth::create(cp.data_dir(), "v", role)?;
    let viewer = wedge_tests::Api::with_token(api_addr, Some(viewer));
    // (A new token is picked up within a second: until then it is 401.)
    let status = wait_for("the viewer token known", DEADLINE, || async {
        let (status, _) = viewer
            .post_json("/api/v1/nodes/other/revoke", &json!({}))
            .await
            .ok()?;
        (status != 401).then_some(status)
    })
    .await?;
    assert_eq!(status, 403);
    cp.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_renew_before_expiry_and_nothing_is_lost() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = wedge_control_plane::Config {
        data_dir: dir.path().to_path_buf(),
        api_listen: "127.0.0.1:0".parse()?,
        mqtt_listen: "127.0.0.1:0".parse()?,
        ..Default::default()
    };
    // Renewal at 4 s, expiry at 6 s: several renewals while the device sends.
    config.tls.node_cert_lifetime_secs = 6;
    let cp = ControlPlane::start_with(config, dir).await?;
    let api = &cp.api;
    let node = Node::start(&cp, "renewer", &[]).await?;
    api.upload_module("forward", "1").await?;
    api.deploy(&json!({
        "name": "fw",
        "module": "forward@1",
        "nodes": ["renewer"],
        "subscriptions": ["readings/#"],
        "config": {"stream": "readings"},
    }))
    .await?;
    api.wait_module_state("renewer", "fw", "running", DEADLINE)
        .await?;
    let first = std::fs::read_to_string(node.data_dir().join("node.credential"))?;

    // Readings every 100 ms until the certificate was renewed twice (a renewal every ~4 s),
    // so the device sends across both renewals however slow the machine is.
    let device = Device::connect(node.local_mqtt_addr, "device", &[]).await?;
    let credential = || std::fs::read_to_string(node.data_dir().join("node.credential"));
    let started = std::time::Instant::now();
    let mut seen = vec![first];
    let mut total = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while seen.len() < 3 {
        anyhow::ensure!(
            started.elapsed() < DEADLINE,
            "the certificate was renewed {} times in {DEADLINE:?}",
            seen.len() - 1
        );
        tick.tick().await;
        total += 1;
        device
            .publish("readings/r", json!({"n": total}).to_string().as_bytes())
            .await?;
        let now = credential()?;
        if seen.last() != Some(&now) {
            seen.push(now);
        }
    }
    let renewed = seen.pop().unwrap_or_default();
    let id =
        wedge_pki::inspect_pem(&renewed[renewed.find("-----BEGIN CERTIFICATE").unwrap_or(0)..])?;
    assert_eq!(id.common_name, "renewer");

    let stored = wait_for("every reading stored", DEADLINE, || async {
        let (status, body) = api
            .get("/api/v1/nodes/renewer/telemetry?stream=readings&limit=10000")
            .await
            .ok()?;
        let records = body.as_array()?.clone();
        (status == 200 && records.len() as u64 >= total).then_some(records)
    })
    .await?;
    let ns: Vec<u64> = stored
        .iter()
        .filter_map(|r| r["payload"]["n"].as_u64())
        .collect();
    assert_eq!(
        ns,
        (1..=total).collect::<Vec<_>>(),
        "all of them, once, in order"
    );
    api.wait_status("renewer", "online", DEADLINE).await?;
    cp.stop().await;
    Ok(())
}
