//! "Nothing lost, nothing stored twice" through the restarts users actually do, with the
//! real binaries and the real `forward` module: a drained node stopped with SIGTERM or
//! killed and started again, a node whose data directory was wiped, and a node killed
//! right after a burst, before its buffer was flushed.
//!
//! Each test counts readings published, stored and stored twice. The readings carry their
//! number (`{"n": …}`); probes (`{"probe": …}`) are published until one is stored, so a
//! test knows the module runs and its path upstream works before it counts anything.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use wedge_tests::process::{Proc, free_port};
use wedge_tests::{Api, Device, Enrollment, metric, wait_for};

const DEADLINE: Duration = Duration::from_secs(120);
const NODE: &str = "plant-1";

/// A control plane and one node as separate processes, a device on the node's broker.
struct Rig {
    _dir: tempfile::TempDir,
    api: Api,
    _cp: Proc,
    mqtt_addr: SocketAddr,
    local_addr: SocketAddr,
    node_dir: PathBuf,
    enrollment: Enrollment,
    node: Option<Proc>,
    device: Device,
    probes: u64,
}

impl Rig {
    async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let api_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let mqtt_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let local_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let cp_dir = dir.path().join("cp");
        let node_dir = dir.path().join("node");
        let api = Api::with_token(api_addr, Some(wedge_tests::operator_token(&cp_dir)?));
        let cp = Proc::control_plane(&cp_dir, api_addr, mqtt_addr)?;
        wait_for("control plane API", DEADLINE, || async {
            api.get("/healthz").await.ok().filter(|(s, _)| *s == 200)
        })
        .await?;
        let enrollment = api.enrollment().await?;
        let node = Proc::node(NODE, &node_dir, mqtt_addr, local_addr, &enrollment)?;
        api.wait_status(NODE, "online", DEADLINE).await?;
        api.upload_module("forward", "1").await?;
        api.deploy(&json!({
            "name": "fw",
            "module": "forward@1",
            "nodes": [NODE],
            "subscriptions": ["sensors/#"],
            "config": {"stream": "readings"},
        }))
        .await?;
        api.wait_module_state(NODE, "fw", "running", DEADLINE)
            .await?;
        let device = Device::connect(local_addr, "plant-1-sensor", &[]).await?;
        let mut rig = Self {
            _dir: dir,
            api,
            _cp: cp,
            mqtt_addr,
            local_addr,
            node_dir,
            enrollment,
            node: Some(node),
            device,
            probes: 0,
        };
        rig.probe().await?;
        Ok(rig)
    }

    fn node(&self) -> anyhow::Result<&Proc> {
        self.node
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the node is stopped"))
    }

    /// Starts the node again (same id, same data directory unless it was removed).
    async fn start_node(&mut self) -> anyhow::Result<()> {
        let connacks = self.device.counts().connacks.load(Ordering::SeqCst);
        self.node = Some(Proc::node(
            NODE,
            &self.node_dir,
            self.mqtt_addr,
            self.local_addr,
            &self.enrollment,
        )?);
        let device = &self.device;
        wait_for("the device back on the node", DEADLINE, || async {
            (device.counts().connacks.load(Ordering::SeqCst) > connacks).then_some(())
        })
        .await?;
        self.probe().await
    }

    /// Publishes probes until the module has received one, then waits for a probe to be
    /// stored: the module runs and its records reach the control plane. (Messages published
    /// before the module runs reach no one; once it received one, no more are sent, so a
    /// node whose numbers were taken for duplicates would never get its probe stored.)
    async fn probe(&mut self) -> anyhow::Result<()> {
        self.probes += 1;
        let probe = self.probes;
        let this = &*self;
        wait_for("a probe stored upstream", DEADLINE, || async {
            let received = this
                .node_metric_labelled("wedge_module_messages_in_total", &[("module", "fw")])
                .await
                .unwrap_or(0.0);
            if received == 0.0 {
                this.device
                    .publish(
                        "sensors/probe",
                        json!({"probe": probe}).to_string().as_bytes(),
                    )
                    .await
                    .ok()?;
            }
            let stored = this.api.telemetry(NODE, Some("readings")).await.ok()?;
            stored
                .iter()
                .any(|r| r["payload"]["probe"] == probe)
                .then_some(())
        })
        .await
    }

    /// Publishes readings `range` (QoS 1) and waits for the node's broker to acknowledge
    /// every one of them.
    async fn publish(&self, range: std::ops::RangeInclusive<u64>) -> anyhow::Result<()> {
        let before = self.device.counts().pubacks.load(Ordering::SeqCst);
        let count = range.end() - range.start() + 1;
        for n in range {
            self.device
                .publish("sensors/line", json!({"n": n}).to_string().as_bytes())
                .await?;
        }
        let device = &self.device;
        wait_for("PUBACK for every reading", DEADLINE, || async {
            (device.counts().pubacks.load(Ordering::SeqCst) >= before + count).then_some(())
        })
        .await
    }

    /// Waits until at least `count` readings are stored and the node's backlog is empty;
    /// returns every stored record of the stream.
    async fn wait_stored(&self, count: usize) -> anyhow::Result<Vec<Value>> {
        let api = &self.api;
        wait_for(
            &format!("{count} readings stored and the backlog drained"),
            DEADLINE,
            || async {
                let stored = api.telemetry(NODE, Some("readings")).await.ok()?;
                let n = api.node(NODE).await.ok()??;
                (readings(&stored).len() >= count
                    && n["status"] == "online"
                    && n["telemetry"]["pending"] == 0)
                    .then_some(stored)
            },
        )
        .await
    }

    /// A sample of the node's own metrics.
    async fn node_metric(&self, name: &str) -> anyhow::Result<f64> {
        self.node_metric_labelled(name, &[]).await
    }

    async fn node_metric_labelled(
        &self,
        name: &str,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<f64> {
        let url = format!("http://{}/metrics", self.node()?.http_addr()?);
        let text = reqwest::get(&url).await?.text().await?;
        metric(&text, name, labels).ok_or_else(|| anyhow::anyhow!("no metric {name}"))
    }
}

/// The reading numbers stored, in the order the control plane stored them.
fn readings(stored: &[Value]) -> Vec<u64> {
    stored
        .iter()
        .filter_map(|r| r["payload"]["n"].as_u64())
        .collect()
}

/// Reading numbers stored more than once.
fn duplicated(readings: &[u64]) -> Vec<u64> {
    let mut sorted = readings.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<u64> = sorted
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    out.dedup();
    out
}

/// The API's ingest order has no gap and no repeat.
fn assert_ingest_order(stored: &[Value]) {
    let seqs: Vec<u64> = stored.iter().filter_map(|r| r["seq"].as_u64()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] > w[0]),
        "seq increases for a reader: {seqs:?}"
    );
}

enum Stop {
    Term,
    Kill,
    Wipe,
}

async fn restart_after_the_backlog_was_delivered(stop: Stop, label: &str) -> anyhow::Result<()> {
    const HALF: u64 = 300;
    let mut rig = Rig::start().await?;
    rig.publish(1..=HALF).await?;
    let stored = rig.wait_stored(HALF as usize).await?;
    assert_eq!(readings(&stored), (1..=HALF).collect::<Vec<_>>());
    let epochs_before: Vec<Value> = stored.iter().map(|r| r["epoch"].clone()).collect();

    let node = rig.node.take().ok_or_else(|| anyhow::anyhow!("no node"))?;
    match stop {
        Stop::Term => node.terminate(DEADLINE).await?,
        Stop::Kill => node.kill9()?,
        Stop::Wipe => {
            node.terminate(DEADLINE).await?;
            std::fs::remove_dir_all(&rig.node_dir)?;
            // The node lost its certificate with its data: as an operator would, let the
            // id enroll again (without this, enrolling an id that holds a valid
            // certificate is refused).
            let (status, body) = rig
                .api
                .post_json(
                    &format!("/api/v1/nodes/{NODE}/replace"),
                    &serde_json::json!({}),
                )
                .await?;
            anyhow::ensure!(status == 200, "replace: {status} {body}");
        }
    }
    rig.start_node().await?;
    rig.publish(HALF + 1..=2 * HALF).await?;
    let stored = rig.wait_stored(2 * HALF as usize).await?;
    let got = readings(&stored);
    let dups = duplicated(&got);
    println!(
        "{label}: {} readings published, {} stored, {} stored twice",
        2 * HALF,
        got.len(),
        dups.len()
    );
    assert_eq!(
        got,
        (1..=2 * HALF).collect::<Vec<_>>(),
        "every reading once"
    );
    assert!(dups.is_empty());
    assert_ingest_order(&stored);
    let after = &stored[stored.len() - 1]["epoch"];
    assert!(
        !epochs_before.contains(after),
        "the restarted node numbers in a new epoch"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_of_a_drained_node_then_more_readings() -> anyhow::Result<()> {
    restart_after_the_backlog_was_delivered(Stop::Term, "SIGTERM after drain").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_a_drained_node_then_more_readings() -> anyhow::Result<()> {
    restart_after_the_backlog_was_delivered(Stop::Kill, "kill -9 after drain").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wiped_data_directory_then_more_readings() -> anyhow::Result<()> {
    restart_after_the_backlog_was_delivered(Stop::Wipe, "wiped data directory").await
}

/// kill -9 right after a burst: messages still queued for the module, records not yet
/// flushed. The promise holds from the moment a record is on the node's disk (the
/// `wedge_buffer_durable_seq` metric): every such record is stored exactly once; later
/// ones may be lost, never stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_right_after_a_burst() -> anyhow::Result<()> {
    const BURST: u64 = 2000;
    const AFTER: u64 = 200;
    let mut rig = Rig::start().await?;
    rig.publish(1..=BURST).await?;
    // What is on disk now must survive; the kill follows at once.
    let durable = rig.node_metric("wedge_buffer_durable_seq").await? as u64;
    let node = rig.node.take().ok_or_else(|| anyhow::anyhow!("no node"))?;
    node.kill9()?;
    rig.start_node().await?;
    rig.publish(BURST + 1..=BURST + AFTER).await?;
    let api = &rig.api;
    let stored = wait_for(
        "the readings after the restart stored",
        DEADLINE,
        || async {
            let stored = api.telemetry(NODE, Some("readings")).await.ok()?;
            let n = api.node(NODE).await.ok()??;
            let after = readings(&stored).iter().filter(|n| **n > BURST).count() as u64;
            (after == AFTER && n["telemetry"]["pending"] == 0).then_some(stored)
        },
    )
    .await?;
    let got = readings(&stored);
    let dups = duplicated(&got);
    let from_burst = got.iter().filter(|n| **n <= BURST).count();
    println!(
        "kill -9 after a burst: {} readings published ({BURST} before the kill, {} durable \
         records at the kill), {} stored ({from_burst} of the burst), {} stored twice",
        BURST + AFTER,
        durable,
        got.len(),
        dups.len()
    );
    assert!(dups.is_empty(), "stored twice: {dups:?}");
    assert_ingest_order(&stored);
    // Every record of the killed run's epoch up to the durable mark is stored (module
    // logs included: they share the buffer).
    let all = rig.api.telemetry(NODE, None).await?;
    let first_epoch = &stored[0]["epoch"];
    let mut old: Vec<u64> = all
        .iter()
        .filter(|r| &r["epoch"] == first_epoch)
        .filter_map(|r| r["node_seq"].as_u64())
        .collect();
    old.sort_unstable();
    let first = old.first().copied().unwrap_or(0);
    let expected: Vec<u64> = (first..=durable).collect();
    assert!(
        expected.iter().all(|s| old.binary_search(s).is_ok()),
        "every durable record stored (durable up to {durable}, stored {first}..)"
    );
    let mut after: Vec<u64> = got.into_iter().filter(|n| *n > BURST).collect();
    after.sort_unstable();
    assert_eq!(after, (BURST + 1..=BURST + AFTER).collect::<Vec<_>>());
    Ok(())
}
