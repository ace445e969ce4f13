//! Burst throughput of one threshold-alert, side by side with the stacks a user would pick
//! instead, in one run on one machine:
//!
//! - **Wedge**: a node (in this process, with its control plane) running `threshold-alert`;
//!   devices publish to the node's embedded broker.
//! - **Node-RED 4** (`tests/benches/node-red`, pinned) with Mosquitto: `mqtt in` → a
//!   `function` node with the same logic → `mqtt out`.
//! - **Plain forwarder**: Mosquitto and a hand-written Rust client (rumqttc, in this process)
//!   that subscribes, applies the same threshold and publishes the alert.
//!
//! The load is the same for all three: `wedge-load` (`tests/src/bin/wedge-load.rs`, rumqttc)
//! in its own process sends `WEDGE_BENCH_READINGS` readings (default 100,000), every one above
//! the threshold, as fast as the connection takes them, at QoS 0 and then at QoS 1 (waiting
//! for every acknowledgement; `mosquitto_pub -l` left most QoS 1 readings unsent at its end); a subscriber counts the alerts until none has come
//! for 3 s. Reported per stack and QoS: alerts received of readings sent, and the rate
//! (alerts over the time from the first reading to the last alert). The outcome is checked
//! only where a stack promises it: nothing.
//!
//! Then, per stack in the same run, the local round trip: one device publishes a reading
//! (QoS 0) and waits for its alert, `WEDGE_BENCH_ROUND_TRIPS` times (default 1,000, after 50
//! of warm-up); reported as median and p99.
//!
//! Run: `cargo bench -p wedge-tests --bench throughput` (release build; needs mosquitto,
//! mosquitto-clients, and `npm ci --prefix tests/benches/node-red`; a stack whose tools are
//! missing is skipped, except under CI). `WEDGE_BENCH_STACKS=wedge` (a comma list of `wedge`,
//! `forwarder`, `node-red`) runs only those, e.g. to profile one.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use wedge_tests::mosquitto::Mosquitto;
use wedge_tests::process::{free_port, program};
use wedge_tests::{ControlPlane, DEVICE_PASSWORD, DEVICE_USER, Node};

const THRESHOLD: f64 = 50.0;
/// No alert for this long after the load ended: the run is over.
const QUIET: Duration = Duration::from_secs(3);

/// Where a stack listens, and the login its devices use.
struct Target {
    name: &'static str,
    addr: SocketAddr,
    login: Option<(&'static str, &'static str)>,
}

/// One run's outcome.
struct Outcome {
    sent: usize,
    alerts: u64,
    elapsed: Duration,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let readings: usize = std::env::var("WEDGE_BENCH_READINGS")
        .ok()
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(100_000);
    let in_ci = std::env::var_os("CI").is_some();
    let Some(mosquitto_pub) = program("mosquitto_pub") else {
        ensure!(!in_ci, "mosquitto_pub is missing (.ci/run installs it)");
        println!("skipped: mosquitto-clients is not installed");
        return Ok(());
    };
    println!(
        "conditions: one machine; load from wedge-load (rumqttc) in its own process, {readings} readings per run, all above the threshold; Wedge's node and control plane in this process (uplink TLS)"
    );

    let stacks =
        std::env::var("WEDGE_BENCH_STACKS").unwrap_or_else(|_| "wedge,forwarder,node-red".into());
    let want = |stack: &str| stacks.split(',').any(|s| s.trim() == stack);
    let round_trips: usize = std::env::var("WEDGE_BENCH_ROUND_TRIPS")
        .ok()
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(1_000);
    let mut results = Vec::new();
    let mut latencies = Vec::new();
    if want("wedge") {
        wedge(readings, round_trips, &mut results, &mut latencies).await?;
    }
    if want("forwarder") {
        forwarder(readings, round_trips, in_ci, &mut results, &mut latencies).await?;
    }
    if want("node-red") {
        node_red(
            &mosquitto_pub,
            readings,
            round_trips,
            in_ci,
            &mut results,
            &mut latencies,
        )
        .await?;
    }
    println!("\n| stack | readings | QoS | alerts received | lost | alerts/s |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, qos, o) in &results {
        println!(
            "| {name} | {} | {qos} | {} | {:.1} % | {:.0} |",
            o.sent,
            o.alerts,
            100.0 * (o.sent as f64 - o.alerts as f64) / o.sent as f64,
            o.alerts as f64 / o.elapsed.as_secs_f64()
        );
    }
    println!("\n| stack | round trips | median | p99 |");
    println!("| --- | --- | --- | --- |");
    for (name, mut times) in latencies {
        if times.is_empty() {
            continue;
        }
        times.sort();
        let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
        println!(
            "| {name} | {} | {} µs | {} µs |",
            times.len(),
            at(0.5).as_micros(),
            at(0.99).as_micros()
        );
    }
    Ok(())
}

/// `n` sequential round trips (after 50 of warm-up): one reading published at QoS 0, timed
/// until its alert arrives.
async fn round_trip(target: &Target, n: usize) -> anyhow::Result<Vec<Duration>> {
    const WARM_UP: usize = 50;
    let (alerts_tx, mut alerts) = tokio::sync::mpsc::unbounded_channel();
    let (client, driver) = subscribe_alerts(target, "bench-rt", move || {
        let _ = alerts_tx.send(());
    })
    .await?;
    let mut times = Vec::with_capacity(n);
    for i in 0..WARM_UP + n {
        let started = Instant::now();
        client
            .publish("sensors/t", QoS::AtMostOnce, false, "72")
            .await?;
        tokio::time::timeout(Duration::from_secs(10), alerts.recv())
            .await
            .with_context(|| format!("{}: no alert within 10 s", target.name))?
            .context("the round-trip client stopped")?;
        if i >= WARM_UP {
            times.push(started.elapsed());
        }
    }
    driver.abort();
    println!(
        "{}: {n} round trips, median {:?}",
        target.name,
        times.get(n / 2).copied().unwrap_or_default()
    );
    Ok(times)
}

/// Sends `readings` readings with `wedge-load` at `qos` and counts the alerts.
async fn burst(target: &Target, qos: u8, readings: usize) -> anyhow::Result<Outcome> {
    let alerts = Arc::new(AtomicU64::new(0));
    let counter = count_alerts(target, alerts.clone()).await?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wedge-load"));
    cmd.arg(target.addr.to_string())
        .args(["--count", &readings.to_string(), "--qos", &qos.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some((user, password)) = target.login {
        cmd.args(["--user", user, "--password", password]);
    }
    let started = Instant::now();
    let load = cmd.spawn().context("cannot start wedge-load")?;
    let status = tokio::task::spawn_blocking(move || load.wait_with_output()).await??;
    ensure!(
        status.status.success(),
        "wedge-load failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    println!("  load: {}", String::from_utf8_lossy(&status.stdout).trim());
    // Until no alert has come for QUIET.
    let mut last = (alerts.load(Ordering::Relaxed), Instant::now());
    let end = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = alerts.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= QUIET || now as usize >= readings {
            break last.1;
        }
    };
    counter.abort();
    let outcome = Outcome {
        sent: readings,
        alerts: alerts.load(Ordering::Relaxed),
        elapsed: end.saturating_duration_since(started),
    };
    println!(
        "{} at QoS {qos}: {} of {} alerts in {:?}",
        target.name, outcome.alerts, outcome.sent, outcome.elapsed
    );
    Ok(outcome)
}

/// Subscribes to `alerts/#` and counts what arrives; returns once subscribed.
async fn count_alerts(
    target: &Target,
    alerts: Arc<AtomicU64>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let (_, task) = subscribe_alerts(target, "bench-count", move || {
        alerts.fetch_add(1, Ordering::Relaxed);
    })
    .await?;
    Ok(task)
}

/// A client of `target` subscribed to `alerts/#` that calls `on_alert` for each alert; returns
/// once subscribed, with the client (to publish with) and the task that drives it.
async fn subscribe_alerts(
    target: &Target,
    name: &str,
    mut on_alert: impl FnMut() + Send + 'static,
) -> anyhow::Result<(AsyncClient, tokio::task::JoinHandle<()>)> {
    let id = format!("{name}-{}", free_port()?);
    let mut opts = MqttOptions::new(id, "127.0.0.1", target.addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    if let Some((user, password)) = target.login {
        opts.set_credentials(user, password);
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    client.subscribe("alerts/#", QoS::AtMostOnce).await?;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let held = client.clone();
    let task = tokio::spawn(async move {
        let _client = held;
        let mut ready = Some(ready_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(_))) => on_alert(),
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .with_context(|| format!("no SUBACK for {name}"))??;
    Ok((client, task))
}

/// The plain forwarder: subscribes to `sensors/#`, publishes an alert for each reading above
/// the threshold.
async fn forward(broker: SocketAddr) -> anyhow::Result<()> {
    let mut opts = MqttOptions::new("bench-forwarder", "127.0.0.1", broker.port());
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 4096);
    client.subscribe("sensors/#", QoS::AtMostOnce).await?;
    loop {
        if let Event::Incoming(Packet::Publish(p)) = eventloop.poll().await? {
            let value = std::str::from_utf8(&p.payload)
                .ok()
                .and_then(|s| s.trim().parse::<f64>().ok());
            if let Some(v) = value.filter(|v| *v > THRESHOLD) {
                let alert = json!({"topic": p.topic, "value": v, "threshold": THRESHOLD});
                client
                    .publish("alerts/temp", QoS::AtMostOnce, false, alert.to_string())
                    .await?;
            }
        }
    }
}

/// Node-RED with one flow: mqtt in → function (the threshold) → mqtt out.
struct NodeRed {
    child: Child,
    _dir: tempfile::TempDir,
}

impl NodeRed {
    fn start(install: &Path, broker: SocketAddr) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let function = format!(
            "let v; try {{ v = JSON.parse(msg.payload); }} catch (e) {{ return null; }}\n\
             if (v !== null && typeof v === 'object') v = v.value;\n\
             if (typeof v === 'number' && v > {THRESHOLD}) {{\n\
               msg.payload = JSON.stringify({{topic: msg.topic, value: v, threshold: {THRESHOLD}}});\n\
               return msg;\n\
             }}\n\
             return null;"
        );
        let flows = json!([
            {"id": "tab", "type": "tab", "label": "bench"},
            {"id": "broker", "type": "mqtt-broker", "name": "local", "broker": "127.0.0.1",
             "port": broker.port().to_string(), "clientid": "node-red-bench", "autoConnect": true,
             "usetls": false, "protocolVersion": "4", "keepalive": "60", "cleansession": true},
            {"id": "in", "type": "mqtt in", "z": "tab", "topic": "sensors/#", "qos": "1",
             "datatype": "utf8", "broker": "broker", "nl": false, "rap": false, "inputs": 0,
             "wires": [["fn"]]},
            {"id": "fn", "type": "function", "z": "tab", "func": function, "outputs": 1,
             "wires": [["out"]]},
            {"id": "out", "type": "mqtt out", "z": "tab", "topic": "alerts/temp", "qos": "0",
             "retain": "false", "broker": "broker", "wires": []}
        ]);
        std::fs::write(dir.path().join("flows.json"), flows.to_string())?;
        let port = free_port()?;
        std::fs::write(
            dir.path().join("settings.js"),
            format!(
                "module.exports = {{ uiPort: {port}, uiHost: '127.0.0.1', flowFile: 'flows.json', \
                 httpAdminRoot: false, httpNodeRoot: false, logging: {{ console: {{ level: 'warn' }} }} }};"
            ),
        )?;
        let node = program("node").context("node is not installed")?;
        let child = Command::new(node)
            .arg(install.join("node_modules/node-red/red.js"))
            .args(["--userDir"])
            .arg(dir.path())
            .args(["--settings"])
            .arg(dir.path().join("settings.js"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start Node-RED")?;
        Ok(Self { child, _dir: dir })
    }

    /// Waits until the flow answers a reading with an alert.
    async fn wait_subscribed(
        &mut self,
        mosquitto_pub: &Path,
        target: &Target,
    ) -> anyhow::Result<()> {
        let alerts = Arc::new(AtomicU64::new(0));
        let counter = count_alerts(target, alerts.clone()).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while alerts.load(Ordering::Relaxed) == 0 {
            ensure!(
                Instant::now() < deadline,
                "Node-RED did not answer within 60 s"
            );
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("Node-RED exited: {status}");
            }
            Command::new(mosquitto_pub)
                .args(["-h", "127.0.0.1", "-p", &target.addr.port().to_string()])
                .args(["-t", "sensors/warmup", "-m", "99"])
                .status()?;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        counter.abort();
        Ok(())
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Results = Vec<(&'static str, u8, Outcome)>;
type Latencies = Vec<(&'static str, Vec<Duration>)>;

/// Wedge's node with `threshold-alert`.
async fn wedge(
    readings: usize,
    round_trips: usize,
    results: &mut Results,
    latencies: &mut Latencies,
) -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let node = Node::start(&cp, "bench", &[]).await?;
    cp.api.upload_module("threshold-alert", "1").await?;
    cp.api
        .deploy(&json!({
            "name": "alert",
            "module": "threshold-alert@1",
            "nodes": ["bench"],
            "subscriptions": ["sensors/#"],
            "config": {"threshold": THRESHOLD, "alert_topic": "alerts/temp"},
        }))
        .await?;
    cp.api
        .wait_module_state("bench", "alert", "running", Duration::from_secs(120))
        .await?;
    let wedge = Target {
        name: "Wedge (threshold-alert)",
        addr: node.local_mqtt_addr,
        login: Some((DEVICE_USER, DEVICE_PASSWORD)),
    };
    for (run, qos) in [0, 1].into_iter().enumerate() {
        let outcome = burst(&wedge, qos, readings).await?;
        // Each reading is handled, dropped at the module's full queue (counted), or lost
        // before it reached the module (the broker's log outran the node's link). The
        // node reports its counters with its heartbeat: read them once they stop moving.
        let seen = ((run + 1) * readings) as u64;
        let mut stats = serde_json::Value::Null;
        let until = Instant::now() + Duration::from_secs(15);
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let now = cp.api.module("bench", "alert").await.unwrap_or_default()["stats"].clone();
            if now == stats {
                break;
            }
            stats = now;
        }
        let counted =
            stats["messages"].as_u64().unwrap_or(0) + stats["dropped"].as_u64().unwrap_or(0);
        println!(
            "  Wedge module counters after QoS {qos} (cumulative): {stats}; never reached the module: {}",
            seen.saturating_sub(counted)
        );
        ensure!(counted > 0, "the module saw nothing");
        results.push((wedge.name, qos, outcome));
    }
    latencies.push((wedge.name, round_trip(&wedge, round_trips).await?));

    Ok(())
}

/// Mosquitto and the plain forwarder.
async fn forwarder(
    readings: usize,
    round_trips: usize,
    in_ci: bool,
    results: &mut Results,
    latencies: &mut Latencies,
) -> anyhow::Result<()> {
    // Mosquitto + a plain forwarder.
    match Mosquitto::start_open() {
        Ok(broker) => {
            let target = Target {
                name: "Mosquitto + Rust forwarder",
                addr: broker.addr,
                login: None,
            };
            let forwarder = tokio::spawn(forward(broker.addr));
            for qos in [0, 1] {
                results.push((target.name, qos, burst(&target, qos, readings).await?));
            }
            latencies.push((target.name, round_trip(&target, round_trips).await?));
            forwarder.abort();
        }
        Err(e) => {
            ensure!(!in_ci, "mosquitto: {e:#}");
            println!("skipped Mosquitto stacks: {e:#}");
        }
    }

    Ok(())
}

/// Mosquitto and Node-RED.
async fn node_red(
    mosquitto_pub: &Path,
    readings: usize,
    round_trips: usize,
    in_ci: bool,
    results: &mut Results,
    latencies: &mut Latencies,
) -> anyhow::Result<()> {
    // Mosquitto + Node-RED.
    let red = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/node-red");
    if red.join("node_modules/node-red/red.js").exists() {
        let broker = Mosquitto::start_open()?;
        let mut node_red = NodeRed::start(&red, broker.addr)?;
        let target = Target {
            name: "Mosquitto + Node-RED 4",
            addr: broker.addr,
            login: None,
        };
        node_red.wait_subscribed(mosquitto_pub, &target).await?;
        for qos in [0, 1] {
            results.push((target.name, qos, burst(&target, qos, readings).await?));
        }
        latencies.push((target.name, round_trip(&target, round_trips).await?));
        node_red.stop();
    } else {
        ensure!(
            !in_ci,
            "Node-RED is not installed (npm ci --prefix tests/benches/node-red)"
        );
        println!("skipped Node-RED: run npm ci --prefix tests/benches/node-red");
    }

    Ok(())
}
