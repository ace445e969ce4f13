//! A fleet simulator: N protocol-level edge nodes to drive a control plane at scale.
//!
//! Each simulated node is one rumqttc client speaking the real uplink protocol: it
//! connects with the same retained last will as `wedge-node`, subscribes to its desired
//! state, "applies" each desired state at once (no blob fetch, no WASM: every module is
//! reported running), reports heartbeats on change and every interval, and says goodbye on
//! stop. Modules can be made to fail on cue, by digest, on chosen nodes. What it does not
//! simulate: blob transfer, telemetry, module load times.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wedge_proto::Digest;
use wedge_proto::envelope::{decode, encode};
use wedge_proto::messages::{
    DesiredState, Heartbeat, ModuleState, ModuleStatus, Offline, StatusMessage,
};
use wedge_proto::topics::NodeTopic;

/// How simulated nodes behave.
#[derive(Clone)]
pub struct SimOptions {
    pub heartbeat_interval: Duration,
    /// Labels of the node with this index.
    pub labels: Arc<dyn Fn(usize) -> BTreeMap<String, String> + Send + Sync>,
    /// Client channel capacity per node (heartbeats beyond it are dropped and counted).
    pub channel: usize,
    /// The control plane's data directory: each simulated node gets a certificate from
    /// the CA there and connects over TLS, like a real enrolled node. `None`: plain MQTT.
    pub ca_dir: Option<std::path::PathBuf>,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(5),
            labels: Arc::new(|_| BTreeMap::from([("sim".to_string(), "yes".to_string())])),
            channel: 16,
            ca_dir: None,
        }
    }
}

/// What one simulated node has applied.
#[derive(Debug, Default)]
pub struct SimNode {
    pub id: String,
    applied_generation: AtomicU64,
    state: Mutex<SimState>,
}

#[derive(Debug, Default)]
struct SimState {
    modules: Vec<ModuleStatus>,
    /// When each generation was applied.
    applied_at: Option<Instant>,
    connected: bool,
}

impl SimNode {
    pub fn applied_generation(&self) -> u64 {
        self.applied_generation.load(Ordering::Relaxed)
    }

    /// The digest this node runs under instance `name`, and its state.
    pub fn module(&self, name: &str) -> Option<(Digest, ModuleState)> {
        lock(&self.state)
            .modules
            .iter()
            .find(|m| m.name == name)
            .map(|m| (m.digest, m.state))
    }

    /// When the node last applied a desired state.
    pub fn applied_at(&self) -> Option<Instant> {
        lock(&self.state).applied_at
    }

    pub fn connected(&self) -> bool {
        lock(&self.state).connected
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Shared by every simulated node.
struct Shared {
    /// (node index or every node, digest) pairs that fail.
    failing: RwLock<HashSet<(Option<usize>, Digest)>>,
    heartbeats_sent: AtomicU64,
    heartbeats_dropped: AtomicU64,
    /// Heartbeats each node sends at once when the value changes.
    burst: watch::Sender<(u64, usize)>,
}

impl Shared {
    fn fails(&self, index: usize, digest: &Digest) -> bool {
        let f = self.failing.read().unwrap_or_else(|p| p.into_inner());
        f.contains(&(None, *digest)) || f.contains(&(Some(index), *digest))
    }
}

/// A running simulated fleet. Dropping it without [`SimFleet::stop`] aborts the nodes
/// (their wills fire).
pub struct SimFleet {
    pub nodes: Vec<Arc<SimNode>>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl SimFleet {
    /// Starts `n` nodes named `{prefix}-{index:05}` against the broker at `broker`.
    pub fn start(broker: SocketAddr, prefix: &str, n: usize, options: SimOptions) -> Self {
        let shared = Arc::new(Shared {
            failing: RwLock::default(),
            heartbeats_sent: AtomicU64::new(0),
            heartbeats_dropped: AtomicU64::new(0),
            burst: watch::channel((0, 0)).0,
        });
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let mut nodes = Vec::with_capacity(n);
        for index in 0..n {
            let node = Arc::new(SimNode {
                id: format!("{prefix}-{index:05}"),
                ..SimNode::default()
            });
            nodes.push(node.clone());
            tasks.spawn(run_node(
                broker,
                index,
                node,
                options.clone(),
                shared.clone(),
                shutdown.clone(),
            ));
        }
        Self {
            nodes,
            shared,
            shutdown,
            tasks,
        }
    }

    /// Modules with `digest` fail on the nodes with these indexes (`None`: on every node),
    /// from their next desired state on.
    pub fn fail(&self, digest: Digest, nodes: Option<&[usize]>) {
        let mut f = self
            .shared
            .failing
            .write()
            .unwrap_or_else(|p| p.into_inner());
        match nodes {
            None => {
                f.insert((None, digest));
            }
            Some(idx) => f.extend(idx.iter().map(|i| (Some(*i), digest))),
        }
    }

    /// Every node sends `count` heartbeats at once (at most its channel's capacity).
    pub fn burst(&self, count: usize) {
        self.shared
            .burst
            .send_modify(|(round, n)| (*round, *n) = (*round + 1, count));
    }

    /// Nodes connected to the broker.
    pub fn connected(&self) -> usize {
        self.nodes.iter().filter(|n| n.connected()).count()
    }

    /// Nodes running `digest` under instance `name`.
    pub fn running(&self, name: &str, digest: &Digest) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.module(name).is_some_and(|(d, _)| d == *digest))
            .count()
    }

    /// (sent, dropped for a full client channel) heartbeats so far.
    pub fn heartbeats(&self) -> (u64, u64) {
        (
            self.shared.heartbeats_sent.load(Ordering::Relaxed),
            self.shared.heartbeats_dropped.load(Ordering::Relaxed),
        )
    }

    /// Every node says goodbye and disconnects.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn run_node(
    broker: SocketAddr,
    index: usize,
    node: Arc<SimNode>,
    options: SimOptions,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let id = node.id.clone();
    let status_topic = NodeTopic::Status.for_node(&id);
    let desired_topic = NodeTopic::Desired.for_node(&id);
    let mut opts = MqttOptions::new(&id, broker.ip().to_string(), broker.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    if let Some(dir) = &options.ca_dir {
        match sim_tls(dir, &id) {
            Ok(tls) => {
                opts.set_transport(rumqttc::Transport::tls_with_config(
                    rumqttc::TlsConfiguration::Rustls(tls),
                ));
            }
            Err(e) => {
                tracing::error!(node = id, error = %e, "no certificate for a simulated node");
                return;
            }
        }
    }
    opts.set_last_will(LastWill::new(
        &status_topic,
        encode(&StatusMessage::Offline(Offline {
            node_id: id.clone(),
            graceful: false,
        })),
        QoS::AtLeastOnce,
        true,
    ));
    let (client, mut eventloop) = AsyncClient::new(opts, options.channel);
    let labels = (options.labels)(index);
    let heartbeat = |node: &SimNode| {
        let st = lock(&node.state);
        let applied = node.applied_generation();
        encode(&StatusMessage::Heartbeat(Heartbeat {
            node_id: node.id.clone(),
            sent_at_ms: wedge_proto::now_ms(),
            arch: "sim".into(),
            version: "sim".into(),
            labels: labels.clone(),
            desired_generation: applied,
            applied_generation: applied,
            modules: st.modules.clone(),
            buffer: Default::default(),
            resources: Default::default(),
            precompile_key: None,
        }))
    };
    let beat = |payload: Vec<u8>| {
        if client
            .try_publish(&status_topic, QoS::AtMostOnce, false, payload)
            .is_ok()
        {
            shared.heartbeats_sent.fetch_add(1, Ordering::Relaxed);
        } else {
            shared.heartbeats_dropped.fetch_add(1, Ordering::Relaxed);
        }
    };
    let mut burst = shared.burst.subscribe();
    let mut tick = tokio::time::interval(options.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retry_after: Option<Instant> = None;
    // Set on every connect until the SUBSCRIBE fits in the client's channel.
    let mut must_subscribe = false;
    loop {
        if must_subscribe {
            must_subscribe = client
                .try_subscribe(&desired_topic, QoS::AtLeastOnce)
                .is_err();
        }
        if retry_after.is_some_and(|t| Instant::now() < t) {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
            }
        }
        retry_after = None;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => beat(heartbeat(&node)),
            Ok(()) = burst.changed() => {
                let (_, count) = *burst.borrow_and_update();
                for _ in 0..count {
                    beat(heartbeat(&node));
                }
            }
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    lock(&node.state).connected = true;
                    must_subscribe = client
                        .try_subscribe(&desired_topic, QoS::AtLeastOnce)
                        .is_err();
                    beat(heartbeat(&node));
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == desired_topic => {
                    if let Ok(desired) = decode::<DesiredState>(&p.payload) {
                        apply(&node, index, &desired, &shared);
                        beat(heartbeat(&node));
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    lock(&node.state).connected = false;
                    retry_after = Some(Instant::now() + Duration::from_secs(1));
                }
            },
        }
    }
    let bye = encode(&StatusMessage::Offline(Offline {
        node_id: id.clone(),
        graceful: true,
    }));
    let _ = client.try_publish(&status_topic, QoS::AtLeastOnce, true, bye);
    let _ = client.try_disconnect();
    // Drive the event loop until the goodbye and the disconnect are out.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while eventloop.poll().await.is_ok() {}
    })
    .await;
}

/// "Runs" the desired modules: failing ones are reported failed, the rest running; a
/// module whose digest did not change keeps its status.
fn apply(node: &SimNode, index: usize, desired: &DesiredState, shared: &Shared) {
    if desired.generation <= node.applied_generation() {
        return;
    }
    let mut st = lock(&node.state);
    let modules = desired
        .modules
        .iter()
        .map(|spec| {
            if let Some(same) = st
                .modules
                .iter()
                .find(|m| m.name == spec.name && m.digest == spec.digest)
            {
                return same.clone();
            }
            let fails = shared.fails(index, &spec.digest);
            ModuleStatus {
                name: spec.name.clone(),
                digest: spec.digest,
                state: if fails {
                    ModuleState::Failed
                } else {
                    ModuleState::Running
                },
                last_error: fails.then(|| "simulated failure at init".to_string()),
                restarts: u32::from(fails),
                stats: Default::default(),
            }
        })
        .collect();
    st.modules = modules;
    st.applied_at = Some(Instant::now());
    node.applied_generation
        .store(desired.generation, Ordering::Relaxed);
}

/// TLS settings of a simulated node: a certificate for `id` straight from the CA in the
/// control plane's data directory (what enrollment would give it).
fn sim_tls(ca_dir: &std::path::Path, id: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let ca = wedge_pki::Ca::load_or_create(ca_dir)?;
    let credential = ca.issue_client(id, Duration::from_secs(86_400))?;
    Ok(wedge_pki::client_config(ca.cert_pem(), &credential)?)
}
