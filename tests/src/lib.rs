//! # wedge-tests — harness for end-to-end tests, benchmarks and the demo (`deploy/demo`)
//!
//! Starts real control planes and edge nodes in-process, each with its own embedded
//! broker on an ephemeral port and its own store in a temporary directory, and talks to
//! them the way users and devices do: HTTP for the API, MQTT for devices.
//!
//! Nothing here sleeps to synchronise: [`wait_for`] polls a condition until a deadline.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::mpsc;

pub mod mosquitto;
pub mod process;
pub mod proxy;
pub mod rollout;
pub mod sim;

/// Polls `check` every 50 ms until it yields `Some`, or fails after `deadline`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if start.elapsed() > deadline {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates an operator token in a control plane's data directory (before or while it
/// runs) and returns it.
pub fn operator_token(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let role = wedge_control_plane::auth::Role::Operator;
    Ok(wedge_control_plane::auth::create(data_dir, "tests", role)?.1)
}

/// A control plane running in this process.
pub struct ControlPlane {
    running: Option<wedge_control_plane::Running>,
    _dir: tempfile::TempDir,
    pub api: Api,
    /// The operator token the harness uses (None with auth off).
    pub token: Option<String>,
    pub mqtt_addr: SocketAddr,
    /// A bootstrap token nodes enroll with and the CA hash they pin (None with TLS off).
    pub enrollment: Option<Enrollment>,
    data_dir: std::path::PathBuf,
}

/// The device account every harness node has, and [`Device`] uses.
pub const DEVICE_USER: &str = "device";
pub const DEVICE_PASSWORD: &str = "wedge-test-device";

/// The `[[devices.users]]` entry for [`DEVICE_USER`] (hashed once per process).
pub fn device_user() -> wedge_edge_node::devices::DeviceUser {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash = HASH.get_or_init(|| {
        wedge_edge_node::devices::hash_password(DEVICE_PASSWORD).unwrap_or_default()
    });
    wedge_edge_node::devices::DeviceUser {
        username: DEVICE_USER.into(),
        password_hash: hash.clone(),
    }
}

/// What a node needs to enroll.
#[derive(Debug, Clone)]
pub struct Enrollment {
    pub token: String,
    pub ca_sha256: String,
}

/// Creates a bootstrap token on a running control plane (for up to 10,000 nodes).
pub fn enrollment(running: &wedge_control_plane::Running) -> anyhow::Result<Option<Enrollment>> {
    let Some(identity) = running.identity() else {
        return Ok(None);
    };
    let now = wedge_control_plane::time::now_ms();
    let (_, token) = identity
        .tokens()
        .create("tests", 10_000, 86_400_000, None, now)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Some(Enrollment {
        token,
        ca_sha256: identity.ca_sha256(),
    }))
}

impl ControlPlane {
    /// Starts one on ephemeral ports with a fresh store.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = wedge_control_plane::Config {
            data_dir: dir.path().to_path_buf(),
            api_listen: "127.0.0.1:0".parse()?,
            mqtt_listen: "127.0.0.1:0".parse()?,
            ..Default::default()
        };
        Self::start_with(config, dir).await
    }

    /// Starts one with `config`; with API auth on (the default) the harness's [`Api`]
    /// carries an operator token, also in [`ControlPlane::token`].
    pub async fn start_with(
        config: wedge_control_plane::Config,
        dir: tempfile::TempDir,
    ) -> anyhow::Result<Self> {
        let token = if config.auth.enabled {
            Some(operator_token(&config.data_dir)?)
        } else {
            None
        };
        let data_dir = config.data_dir.clone();
        let https = config.api_https();
        let running = wedge_control_plane::App::start(config).await?;
        let api = if https {
            let ca = wedge_pki::Ca::load_or_create(&data_dir)?;
            Api::https(running.api_addr(), token.clone(), ca.cert_pem())?
        } else {
            Api::with_token(running.api_addr(), token.clone())
        };
        Ok(Self {
            api,
            token,
            mqtt_addr: running.mqtt_addr(),
            enrollment: enrollment(&running)?,
            data_dir,
            running: Some(running),
            _dir: dir,
        })
    }

    /// The URL nodes use to reach this control plane.
    pub fn mqtt_url(&self) -> String {
        let scheme = if self.enrollment.is_some() {
            "mqtts"
        } else {
            "mqtt"
        };
        format!("{scheme}://{}", self.mqtt_addr)
    }

    /// The control plane's data directory (its CA lives there).
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Sets what a node needs to enroll with this control plane.
    pub fn enroll(&self, config: &mut wedge_edge_node::Config) {
        config.control_plane = self.mqtt_url();
        if let Some(e) = &self.enrollment {
            config.enroll_token = Some(e.token.clone());
            config.ca_sha256 = Some(e.ca_sha256.clone());
        }
    }

    /// TLS settings of a node with a certificate for `cn` from this control plane's own CA
    /// (enrolled, as far as the broker can tell): for tests that play a node by hand.
    pub fn node_tls(&self, cn: &str) -> anyhow::Result<std::sync::Arc<rustls::ClientConfig>> {
        let ca = wedge_pki::Ca::load_or_create(&self.data_dir)?;
        let credential = ca.issue_client(cn, Duration::from_secs(3600))?;
        Ok(wedge_pki::client_config(ca.cert_pem(), &credential)?)
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }
}

/// The status message of a node `node` that runs nothing: the control plane registers it.
pub fn idle_heartbeat(node: &str) -> Vec<u8> {
    use wedge_proto::messages::{Heartbeat, StatusMessage};
    wedge_proto::encode(&StatusMessage::Heartbeat(Heartbeat {
        node_id: node.to_string(),
        sent_at_ms: wedge_proto::now_ms(),
        arch: "x86_64".into(),
        version: "test".into(),
        labels: Default::default(),
        desired_generation: 0,
        applied_generation: 0,
        modules: Vec::new(),
        buffer: Default::default(),
        resources: Default::default(),
        precompile_key: None,
    }))
}

/// An edge node running in this process.
pub struct Node {
    pub id: String,
    running: Option<wedge_edge_node::Running>,
    _dir: tempfile::TempDir,
    pub local_mqtt_addr: SocketAddr,
}

impl Node {
    /// Starts a node connected to `cp`, with a fresh store and an ephemeral local broker.
    pub async fn start(
        cp: &ControlPlane,
        id: &str,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::start_with_listen(cp, id, labels, "127.0.0.1:0".parse()?).await
    }

    /// Starts a node from a full configuration (its data dir is replaced by a fresh one).
    pub async fn start_with_config(mut config: wedge_edge_node::Config) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        config.data_dir = dir.path().to_path_buf();
        let id = config.node_id.clone();
        let running = wedge_edge_node::App::start(config).await?;
        Ok(Self {
            id,
            local_mqtt_addr: running.local_mqtt_addr(),
            running: Some(running),
            _dir: dir,
        })
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// The node's telemetry buffer.
    pub fn buffer(&self) -> anyhow::Result<&wedge_edge_node::buffer::Buffer> {
        Ok(self.running.as_ref().context("node is stopped")?.buffer())
    }

    /// Like [`Node::start`], with the local broker on `listen`.
    pub async fn start_with_listen(
        cp: &ControlPlane,
        id: &str,
        labels: &[(&str, &str)],
        listen: SocketAddr,
    ) -> anyhow::Result<Self> {
        Self::start_configured(cp, id, labels, listen, |_| {}).await
    }

    /// Starts a node whose configuration `tweak` adjusts first.
    pub async fn start_configured(
        cp: &ControlPlane,
        id: &str,
        labels: &[(&str, &str)],
        listen: SocketAddr,
        tweak: impl FnOnce(&mut wedge_edge_node::Config),
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut config = wedge_edge_node::Config {
            node_id: id.to_string(),
            data_dir: dir.path().to_path_buf(),
            control_plane: cp.mqtt_url(),
            local_mqtt_listen: listen,
            http_listen: "127.0.0.1:0".parse()?,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            heartbeat_interval_secs: 1,
            ..Default::default()
        };
        cp.enroll(&mut config);
        config.devices.users = vec![device_user()];
        tweak(&mut config);
        let running = wedge_edge_node::App::start(config).await?;
        Ok(Self {
            id: id.to_string(),
            local_mqtt_addr: running.local_mqtt_addr(),
            running: Some(running),
            _dir: dir,
        })
    }

    /// The node's HTTP server (`/metrics`, `/healthz`, `/readyz`).
    pub fn http_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self
            .running
            .as_ref()
            .context("node is stopped")?
            .http_addr())
    }

    /// Every telemetry record waiting in the node's buffer, in sequence order.
    pub fn telemetry(&self) -> anyhow::Result<Vec<wedge_proto::messages::TelemetryRecord>> {
        let running = self.running.as_ref().context("node is stopped")?;
        Ok(running.buffer().read(0, usize::MAX)?)
    }

    /// Stops the node cleanly (it says goodbye to the control plane).
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }
}

/// A JSON client of the HTTP API.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    http: reqwest::Client,
}

impl Api {
    /// A client without a token (for a control plane with auth off).
    pub fn new(addr: SocketAddr) -> Self {
        Self::with_token(addr, None)
    }

    /// A client that sends `token` as its bearer token.
    pub fn with_token(addr: SocketAddr, token: Option<String>) -> Self {
        Self::build(format!("http://{addr}"), token, None)
    }

    /// A client of an HTTPS API whose certificate comes from the CA `ca_pem`.
    pub fn https(addr: SocketAddr, token: Option<String>, ca_pem: &str) -> anyhow::Result<Self> {
        let tls = wedge_pki::client_config_anonymous(ca_pem)?;
        // Listening on every address: reach it by a name its certificate carries.
        let mut addr = addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        Ok(Self::build(
            format!("https://{addr}"),
            token,
            Some(std::sync::Arc::unwrap_or_clone(tls)),
        ))
    }

    fn build(base: String, token: Option<String>, tls: Option<rustls::ClientConfig>) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = token
            && let Ok(v) = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
        {
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        let mut http = reqwest::Client::builder().default_headers(headers);
        if let Some(tls) = tls {
            http = http.use_preconfigured_tls(tls);
        }
        Self {
            base,
            http: http.build().unwrap_or_default(),
        }
    }

    /// GET `path`; returns (status, JSON body or `null`).
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let resp = self.http.get(format!("{}{path}", self.base)).send().await?;
        Self::finish(resp).await
    }

    /// GET `path` as text (e.g. `/metrics`).
    pub async fn get_text(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let resp = self.http.get(format!("{}{path}", self.base)).send().await?;
        Ok((resp.status().as_u16(), resp.text().await?))
    }

    /// DELETE `path`.
    pub async fn delete(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let resp = self
            .http
            .delete(format!("{}{path}", self.base))
            .send()
            .await?;
        Self::finish(resp).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await?;
        Self::finish(resp).await
    }

    pub async fn post_bytes(&self, path: &str, body: Vec<u8>) -> anyhow::Result<(u16, Value)> {
        self.post_signed(path, body, None).await
    }

    /// Posts a module with a `Wedge-Signature` header when `signature` is given.
    pub async fn post_signed(
        &self,
        path: &str,
        body: Vec<u8>,
        signature: Option<&wedge_proto::signing::ModuleSignature>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/wasm")
            .body(body);
        if let Some(sig) = signature {
            req = req.header("wedge-signature", sig.to_header());
        }
        Self::finish(req.send().await?).await
    }

    async fn finish(resp: reqwest::Response) -> anyhow::Result<(u16, Value)> {
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, body))
    }

    /// Uploads a module built from `wasm-modules/`; returns its digest.
    pub async fn upload_module(&self, name: &str, version: &str) -> anyhow::Result<String> {
        let bytes = wedge_modules::bytes(name)?;
        let (status, body) = self
            .post_bytes(
                &format!("/api/v1/modules?name={name}&version={version}"),
                bytes,
            )
            .await?;
        if status != 201 && status != 200 {
            bail!("upload of {name} failed: {status} {body}");
        }
        body["digest"]
            .as_str()
            .map(str::to_string)
            .context("no digest in the upload answer")
    }

    /// Posts a deployment; fails unless the control plane answers 201.
    /// Creates a bootstrap token through the API (for a control plane in another process).
    pub async fn enrollment(&self) -> anyhow::Result<Enrollment> {
        let (status, body) = self
            .post_json(
                "/api/v1/enrollment-tokens",
                &serde_json::json!({"name": "tests", "uses": 10_000}),
            )
            .await?;
        anyhow::ensure!(status == 201, "enrollment token: {status} {body}");
        Ok(Enrollment {
            token: body["token"].as_str().unwrap_or_default().to_string(),
            ca_sha256: body["ca_sha256"].as_str().unwrap_or_default().to_string(),
        })
    }

    pub async fn deploy(&self, deployment: &Value) -> anyhow::Result<Value> {
        let (status, body) = self.post_json("/api/v1/deployments", deployment).await?;
        if status != 201 {
            bail!("deployment refused: {status} {body}");
        }
        Ok(body)
    }

    /// Telemetry the control plane stored for node `id` (of `stream`, if given), in order.
    pub async fn telemetry(&self, id: &str, stream: Option<&str>) -> anyhow::Result<Vec<Value>> {
        let mut path = format!("/api/v1/nodes/{id}/telemetry?limit=10000");
        if let Some(s) = stream {
            path.push_str(&format!("&stream={s}"));
        }
        let (status, body) = self.get(&path).await?;
        if status != 200 {
            bail!("telemetry query failed: {status} {body}");
        }
        Ok(body.as_array().cloned().unwrap_or_default())
    }

    /// The module instance `name` on node `id`, if the node reports it.
    pub async fn module(&self, id: &str, name: &str) -> Option<Value> {
        let node = self.node(id).await.ok().flatten()?;
        node["modules"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == name)
            .cloned()
    }

    /// A deployment with its rollout, if it exists.
    pub async fn deployment(&self, name: &str) -> anyhow::Result<Option<Value>> {
        let (status, body) = self.get(&format!("/api/v1/deployments/{name}")).await?;
        Ok((status == 200).then_some(body))
    }

    /// Waits until deployment `name`'s rollout of `revision` reaches `phase`.
    pub async fn wait_rollout(
        &self,
        name: &str,
        revision: u64,
        phase: &str,
        deadline: Duration,
    ) -> anyhow::Result<Value> {
        wait_for(
            &format!("rollout of {name} revision {revision} {phase}"),
            deadline,
            || async {
                self.deployment(name).await.ok().flatten().filter(|d| {
                    d["rollout"]["revision"] == revision && d["rollout"]["phase"] == phase
                })
            },
        )
        .await
    }

    /// Waits until node `id` runs module instance `name` from blob `digest`.
    pub async fn wait_running_digest(
        &self,
        id: &str,
        name: &str,
        digest: &str,
        deadline: Duration,
    ) -> anyhow::Result<Value> {
        wait_for(
            &format!("{name} running {digest} on {id}"),
            deadline,
            || async {
                let m = self.module(id, name).await?;
                (m["state"] == "running" && m["digest"] == digest).then_some(m)
            },
        )
        .await
    }

    /// One node's JSON, if the control plane knows it.
    pub async fn node(&self, id: &str) -> anyhow::Result<Option<Value>> {
        let (status, body) = self.get(&format!("/api/v1/nodes/{id}")).await?;
        Ok((status == 200).then_some(body))
    }

    /// Waits until node `id` has status `status`.
    pub async fn wait_status(
        &self,
        id: &str,
        status: &str,
        deadline: Duration,
    ) -> anyhow::Result<Value> {
        let start = Instant::now();
        let mut last = None;
        loop {
            if let Some(n) = self.node(id).await.ok().flatten() {
                if n["status"] == status {
                    return Ok(n);
                }
                last = Some(n);
            }
            if start.elapsed() > deadline {
                // Say what the node was instead (degraded with its problems, never registered…).
                bail!("node {id} not {status} after {deadline:?}; last seen as {last:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until node `id` reports module instance `name` in `state`.
    pub async fn wait_module_state(
        &self,
        id: &str,
        name: &str,
        state: &str,
        deadline: Duration,
    ) -> anyhow::Result<Value> {
        wait_for(
            &format!("module {name} {state} on {id}"),
            deadline,
            || async {
                let node = self.node(id).await.ok().flatten()?;
                let found = node["modules"]
                    .as_array()?
                    .iter()
                    .any(|m| m["name"] == name && m["state"] == state);
                found.then_some(node)
            },
        )
        .await
    }
}

/// A device on a node's local broker: publishes readings, receives what it subscribed to.
pub struct Device {
    pub client: AsyncClient,
    messages: mpsc::Receiver<(String, Vec<u8>)>,
    task: tokio::task::JoinHandle<()>,
    counts: std::sync::Arc<Counts>,
}

/// What a device's connection has seen.
#[derive(Debug, Default)]
pub struct Counts {
    /// CONNACKs: 1 after the first connect, +1 per reconnect.
    pub connacks: std::sync::atomic::AtomicU64,
    /// PUBACKs of its QoS 1 publishes.
    pub pubacks: std::sync::atomic::AtomicU64,
}

impl Device {
    /// Connects to `broker` and subscribes to `filters`, returning once the broker has
    /// acknowledged every subscription.
    pub async fn connect(
        broker: SocketAddr,
        client_id: &str,
        filters: &[&str],
    ) -> anyhow::Result<Self> {
        let mut opts = MqttOptions::new(client_id, broker.ip().to_string(), broker.port());
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_max_packet_size(1024 * 1024, 1024 * 1024);
        opts.set_credentials(DEVICE_USER, DEVICE_PASSWORD);
        let (client, mut eventloop) = AsyncClient::new(opts, 256);
        let mut net = eventloop.network_options();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        for f in filters {
            client.subscribe(*f, QoS::AtMostOnce).await?;
        }
        let (tx, rx) = mpsc::channel(4096);
        let (ready_tx, mut ready_rx) = mpsc::channel(1);
        let want = filters.len();
        let counts = std::sync::Arc::new(Counts::default());
        let task = tokio::spawn(drive(eventloop, tx, ready_tx, want, counts.clone()));
        tokio::time::timeout(Duration::from_secs(10), ready_rx.recv())
            .await
            .context("no SUBACK from the local broker within 10 s")?
            .context("device event loop ended before SUBACK")?;
        Ok(Self {
            client,
            messages: rx,
            task,
            counts,
        })
    }

    /// What the connection has seen so far.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    pub async fn publish(&self, topic: &str, payload: &[u8]) -> anyhow::Result<()> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .await?;
        Ok(())
    }

    /// The next message received, within `deadline`.
    pub async fn recv(&mut self, deadline: Duration) -> anyhow::Result<(String, Vec<u8>)> {
        tokio::time::timeout(deadline, self.messages.recv())
            .await
            .context("no message within the deadline")?
            .context("device connection ended")
    }

    /// A message already received, if any.
    pub fn try_recv(&mut self) -> Option<(String, Vec<u8>)> {
        self.messages.try_recv().ok()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn drive(
    mut eventloop: EventLoop,
    tx: mpsc::Sender<(String, Vec<u8>)>,
    ready: mpsc::Sender<()>,
    mut subacks_wanted: usize,
    counts: std::sync::Arc<Counts>,
) {
    use std::sync::atomic::Ordering;
    if subacks_wanted == 0 {
        let _ = ready.try_send(());
    }
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                subacks_wanted = subacks_wanted.saturating_sub(1);
                if subacks_wanted == 0 {
                    let _ = ready.try_send(());
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                counts.connacks.fetch_add(1, Ordering::SeqCst);
                if subacks_wanted == 0 {
                    let _ = ready.try_send(());
                }
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                counts.pubacks.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if tx
                    .send((p.topic.clone(), p.payload.to_vec()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "device connection error; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// The value of the sample `name` whose labels include every pair of `labels`, in
/// Prometheus/OpenMetrics text (`name{k="v",…} value`).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if series_name != name {
                return None;
            }
            let all = labels.iter().all(|(k, v)| {
                series_labels
                    .split(',')
                    .any(|kv| kv == format!("{k}=\"{v}\""))
            });
            if !all {
                return None;
            }
            value.parse().ok()
        })
}
