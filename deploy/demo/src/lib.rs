//! The demo behind the README's first command: a control plane, three edge nodes with
//! different labels, a simulated temperature sensor on each node's local broker, two
//! deployments — `room-stats` (`window-stats`, whose per-window figures become telemetry the
//! dashboard charts) and `temperature-alert` (`threshold-alert`, which publishes an alert on
//! the node's local broker for every reading above its threshold) — and then a second
//! revision of `temperature-alert` rolled out with a canary, one node at a time, so the
//! dashboard shows a rollout in progress.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use wedge_tests::{ControlPlane, Device, Node};

/// Where the demo listens.
#[derive(Debug, Clone)]
pub struct Options {
    pub api_listen: SocketAddr,
    pub control_mqtt_listen: SocketAddr,
    /// The first node's local broker; the other two take the next ports (or ephemeral ones
    /// when this port is 0).
    pub node_mqtt_listen: SocketAddr,
    /// Time between two readings of each sensor.
    pub interval: Duration,
    /// How long each node of the canary rollout bakes before the next one gets it.
    pub bake: Duration,
}

impl Options {
    /// Everything on ephemeral loopback ports (tests).
    pub fn ephemeral(interval: Duration, bake: Duration) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            api_listen: any,
            control_mqtt_listen: any,
            node_mqtt_listen: any,
            interval,
            bake,
        }
    }
}

/// What the demo reports while it runs.
#[derive(Debug, Clone)]
pub enum Event {
    /// Everything is up; the API (and dashboard) is at `api`.
    Ready { api: String },
    /// A module published an alert on a node's local broker.
    Alert { node: String, alert: Value },
}

/// The demo's nodes: id and labels.
pub const NODES: [(&str, &[(&str, &str)]); 3] = [
    ("berlin-1", &[("site", "berlin"), ("ring", "canary")]),
    ("berlin-2", &[("site", "berlin"), ("ring", "main")]),
    ("paris-1", &[("site", "paris"), ("ring", "main")]),
];

fn node_listen(first: SocketAddr, i: usize) -> SocketAddr {
    if first.port() == 0 {
        first
    } else {
        SocketAddr::new(first.ip(), first.port() + i as u16)
    }
}

/// Runs the demo until `stop`, reporting to `events` (a full channel drops the event).
pub async fn run(
    options: Options,
    events: mpsc::Sender<Event>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("wedge-demo-").tempdir()?;
    let cp = ControlPlane::start_with(
        wedge_control_plane::Config {
            data_dir: dir.path().join("control-plane"),
            api_listen: options.api_listen,
            mqtt_listen: options.control_mqtt_listen,
            // The demo is for trying things on one machine: no tokens to copy around.
            auth: wedge_control_plane::config::AuthConfig {
                enabled: false,
                ..Default::default()
            },
            ..Default::default()
        },
        dir,
    )
    .await
    .context("cannot start the control plane (is the port taken? see --help)")?;

    let mut nodes = Vec::new();
    for (i, (id, labels)) in NODES.iter().enumerate() {
        let listen = node_listen(options.node_mqtt_listen, i);
        // Anonymous devices on, so `mosquitto_pub -p PORT …` works against the demo.
        let node = Node::start_configured(&cp, id, labels, listen, |c| {
            c.devices.allow_anonymous = true;
        })
        .await
        .with_context(|| format!("cannot start edge node {id} on {listen} (port taken?)"))?;
        nodes.push(node);
    }
    for (id, _) in NODES {
        cp.api
            .wait_status(id, "online", Duration::from_secs(30))
            .await?;
    }

    cp.api.upload_module("window-stats", "0.1.0").await?;
    cp.api.upload_module("threshold-alert", "0.1.0").await?;
    let window_ms = 2000;
    cp.api
        .deploy(&json!({
            "name": "room-stats",
            "module": "window-stats@0.1.0",
            "selector": {"labels": {}},
            "subscriptions": ["sensors/#"],
            "tick_ms": window_ms,
            "config": {"stream": "room-stats"},
        }))
        .await?;
    let alert = |threshold: u32, strategy: Value| {
        json!({
            "name": "temperature-alert",
            "module": "threshold-alert@0.1.0",
            "selector": {"labels": {}},
            "subscriptions": ["sensors/#"],
            "config": {"threshold": threshold, "alert_topic": "alerts/temperature"},
            "strategy": strategy,
        })
    };
    cp.api.deploy(&alert(50, json!({}))).await?;
    for (id, _) in NODES {
        for name in ["room-stats", "temperature-alert"] {
            cp.api
                .wait_module_state(id, name, "running", Duration::from_secs(60))
                .await?;
        }
    }

    cp.api
        .wait_rollout("temperature-alert", 1, "complete", Duration::from_secs(60))
        .await?;

    // Each node gets a sensor on its local broker that also listens for the alerts.
    let mut devices = Vec::new();
    for node in &nodes {
        let device = Device::connect(
            node.local_mqtt_addr,
            &format!("{}-sensor", node.id),
            &["alerts/#"],
        )
        .await?;
        devices.push(device);
    }

    // Revision 2 lowers the threshold, canary first (the node labelled ring=canary is
    // not special to the rollout: the canary is whichever node comes first).
    let bake = options.bake.as_secs().max(1);
    let created = cp
        .api
        .deploy(&alert(
            48,
            json!({"canary": 1, "batch": 1, "bake_seconds": bake, "max_failure_ratio": 0}),
        ))
        .await?;
    if created["revision"] != 2 {
        bail!("expected revision 2, got {created}");
    }

    let base = cp.api.base.clone();
    print_banner(&base, &nodes, options.interval, bake);
    let _ = events.try_send(Event::Ready { api: base });

    let mut tick = tokio::time::interval(options.interval);
    let mut n: u64 = 0;
    let result = 'run: loop {
        tokio::select! {
            _ = stop.cancelled() => break Ok(()),
            _ = tick.tick() => {
                for (i, device) in devices.iter().enumerate() {
                    let value = reading(n + 7 * i as u64);
                    let payload = json!({"value": value, "unit": "C"}).to_string();
                    if let Err(e) = device.publish("sensors/room-1/temperature", payload.as_bytes()).await {
                        break 'run Err(e);
                    }
                }
                n += 1;
                for (node, device) in nodes.iter().zip(devices.iter_mut()) {
                    while let Some((_, payload)) = device.try_recv() {
                        let alert: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
                        println!("ALERT from {}: {alert}", node.id);
                        let _ = events.try_send(Event::Alert { node: node.id.clone(), alert });
                    }
                }
            }
        }
    };
    for mut node in nodes {
        node.stop().await;
    }
    cp.stop().await;
    result
}

fn print_banner(base: &str, nodes: &[Node], interval: Duration, bake: u64) {
    let ctl = format!("cargo run -q --release --bin wedgectl -- --api {base}");
    println!();
    println!("Wedge demo is running.");
    println!();
    println!("  Dashboard      : {base}/");
    println!("  API auth       : OFF for the demo; anyone who reaches the API may deploy code");
    println!("  API            : {base}/api/v1  (description: {base}/api/openapi.json)");
    for node in nodes {
        let labels = NODES
            .iter()
            .find(|(id, _)| *id == node.id)
            .map(|(_, l)| {
                l.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        println!(
            "  Edge node      : {:<9} labels {:<24} local MQTT broker {}",
            node.id, labels, node.local_mqtt_addr
        );
    }
    println!(
        "  Devices        : ANONYMOUS access ON for the demo (also user {} / password {})",
        wedge_tests::DEVICE_USER,
        wedge_tests::DEVICE_PASSWORD
    );
    println!(
        "  Uplink         : TLS; each node enrolled with a bootstrap token and has its own certificate"
    );
    println!(
        "  Sensors        : one per node, sensors/room-1/temperature every {interval:?}, a spike every fifth reading"
    );
    println!("  Deployments    : room-stats (window-stats: per-window min/max/mean as telemetry)");
    println!(
        "                   temperature-alert (threshold-alert): revision 2 (threshold 50 -> 48) rolling out now,"
    );
    println!("                   canary first, then one node at a time, each baking {bake} s");
    println!();
    println!("Try:");
    println!("  {ctl} nodes");
    println!("  {ctl} nodes --label site=berlin");
    println!("  {ctl} node berlin-1");
    println!("  {ctl} rollout status temperature-alert --watch");
    println!("  {ctl} telemetry berlin-1 --stream room-stats --follow");
    println!("  {ctl} events paris-1");
    println!();
    println!("Alerts (readings above the threshold) appear below. Ctrl-C stops.");
    println!();
}

/// A temperature around 40 °C that spikes above 50 every fifth reading.
fn reading(n: u64) -> f64 {
    let base = 40.0 + 5.0 * ((n as f64) / 3.0).sin();
    let value = if n % 5 == 4 { base + 20.0 } else { base };
    (value * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn readings_spike_above_the_threshold_regularly() {
        let spikes = (0..20).filter(|n| super::reading(*n) > 50.0).count();
        assert_eq!(spikes, 4);
    }
}
