//! The demo behind the README's first command: a control plane, an edge node, the
//! `threshold-alert` module deployed to it, and a simulated temperature sensor whose
//! spikes the module turns into alerts on the node's local broker.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{ControlPlane, Device, Node};

/// Where the demo listens.
#[derive(Debug, Clone)]
pub struct Options {
    pub api_listen: SocketAddr,
    pub control_mqtt_listen: SocketAddr,
    pub node_mqtt_listen: SocketAddr,
    /// Time between two sensor readings.
    pub interval: Duration,
}

/// Runs the demo until `stop`; every alert the module publishes is sent to `alerts`.
pub async fn run(
    options: Options,
    alerts: mpsc::Sender<Value>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("wedge-demo-").tempdir()?;
    let cp = ControlPlane::start_with(
        wedge_control_plane::Config {
            data_dir: dir.path().join("control-plane"),
            api_listen: options.api_listen,
            mqtt_listen: options.control_mqtt_listen,
            ..Default::default()
        },
        dir,
    )
    .await
    .context("cannot start the control plane (is the port taken? see --help)")?;
    let mut node = Node::start_with_listen(
        &cp,
        "demo-node-1",
        &[("site", "demo")],
        options.node_mqtt_listen,
    )
    .await
    .context("cannot start the edge node (is the port taken? see --help)")?;
    cp.api
        .wait_status("demo-node-1", "online", Duration::from_secs(30))
        .await?;

    let digest = cp.api.upload_module("threshold-alert", "0.1.0").await?;
    let (status, body) = cp
        .api
        .post_json(
            "/api/v1/deployments",
            &json!({
                "name": "temperature-alert",
                "module": "threshold-alert@0.1.0",
                "selector": {"labels": {"site": "demo"}},
                "subscriptions": ["sensors/#"],
                "config": {"threshold": 50, "alert_topic": "alerts/temperature"},
            }),
        )
        .await?;
    if status != 201 {
        bail!("deployment failed: {status} {body}");
    }
    cp.api
        .wait_module_state(
            "demo-node-1",
            "temperature-alert",
            "running",
            Duration::from_secs(60),
        )
        .await?;

    let mut device = Device::connect(node.local_mqtt_addr, "demo-sensor", &["alerts/#"]).await?;
    println!();
    println!("Wedge demo is running.");
    println!("  control plane API : {}", cp.api.base);
    println!("  module            : threshold-alert@0.1.0 ({digest})");
    println!(
        "  edge node         : demo-node-1, local MQTT broker at {}",
        node.local_mqtt_addr
    );
    println!(
        "  sensor            : publishes to sensors/room-1/temperature every {:?}",
        options.interval
    );
    println!("Try:");
    println!("  curl -s {}/api/v1/nodes", cp.api.base);
    println!("  curl -s {}/api/v1/deployments", cp.api.base);
    println!(
        "  mosquitto_sub -h {} -p {} -t 'alerts/#'",
        node.local_mqtt_addr.ip(),
        node.local_mqtt_addr.port()
    );
    println!("Alerts (readings above 50) appear below. Ctrl-C stops.");
    println!();

    let mut tick = tokio::time::interval(options.interval);
    let mut n: u64 = 0;
    let result = loop {
        tokio::select! {
            _ = stop.cancelled() => break Ok(()),
            _ = tick.tick() => {
                let value = reading(n);
                n += 1;
                let payload = json!({"value": value, "unit": "C"}).to_string();
                if let Err(e) = device.publish("sensors/room-1/temperature", payload.as_bytes()).await {
                    break Err(e);
                }
            }
            msg = device.recv(Duration::from_secs(3600)) => match msg {
                Ok((_, payload)) => {
                    let alert: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
                    println!("ALERT {alert}");
                    let _ = alerts.try_send(alert);
                }
                Err(e) => break Err(e),
            },
        }
    };
    node.stop().await;
    cp.stop().await;
    result
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
