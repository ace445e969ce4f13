//! The node's MQTT session with the control plane.
//!
//! - Connects with rumqttc (TCP_NODELAY on, explicit packet limits: rumqttc's 10 KiB default
//!   would kill the event loop on the first blob chunk) and a retained last will that marks
//!   the node offline.
//! - Reconnects with exponential backoff and jitter (rumqttc alone retries at once, forever).
//! - On every connect it re-subscribes and tells the agent, which answers with a heartbeat
//!   carrying the generation it runs: the control plane re-sends the desired state if that
//!   is stale, so nothing depends on the broker having kept a retained message.
//! - Inbound messages go to the agent over a bounded queue with `try_send`: the event loop
//!   never waits on the agent. What is dropped is repeated (desired state on the next
//!   heartbeat) or retried (blob chunks on a stall).
//! - Outbound: [`UplinkClient`] never blocks the agent either; when the client's queue is
//!   full (link down), a heartbeat or request is skipped and sent again later.
//! - TLS: the session presents the node's certificate ([`identity`]) and renews it at two
//!   thirds of its lifetime over its own connection: a new key and CSR, the reply saved,
//!   then a graceful reconnect with the new certificate. Nothing is lost on the way:
//!   unacknowledged publishes are resent after the reconnect and telemetry stays in the
//!   buffer until the control plane acknowledges it.

pub mod fetch;
pub mod identity;
pub mod upload;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wedge_proto::messages::{
    BlobReply, BlobRequest, DesiredState, Heartbeat, NodeEvent, Offline, StatusMessage,
    TelemetryAck, TelemetryBatch,
};
use wedge_proto::topics::{self, NodeTopic};
use wedge_proto::{MAX_MESSAGE_SIZE, decode, encode};

/// What the session hands the agent.
#[derive(Debug)]
pub enum Inbound {
    /// (Re)connected: report at once and resume fetches.
    Connected,
    Desired(DesiredState),
    Blob(BlobReply),
}

/// Counters of the uplink.
#[derive(Debug, Default)]
pub struct Counters {
    /// Whether the session is up (set on CONNACK, cleared when the connection is lost).
    pub connected: AtomicBool,
    pub reconnects: AtomicU64,
    pub decode_errors: AtomicU64,
    pub dropped_inbound: AtomicU64,
    pub skipped_outbound: AtomicU64,
}

/// Sends to the control plane without ever blocking. Cheap to clone.
#[derive(Debug, Clone)]
pub struct UplinkClient {
    client: AsyncClient,
    node_id: String,
    counters: Arc<Counters>,
}

impl UplinkClient {
    fn send(&self, kind: NodeTopic, retain: bool, payload: Vec<u8>) -> bool {
        let ok = self
            .client
            .try_publish(
                kind.for_node(&self.node_id),
                QoS::AtLeastOnce,
                retain,
                payload,
            )
            .is_ok();
        if !ok {
            self.counters
                .skipped_outbound
                .fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Publishes a heartbeat (retained, so a control plane that starts later sees it).
    pub fn heartbeat(&self, hb: &Heartbeat) -> bool {
        self.send(
            NodeTopic::Status,
            true,
            encode(&StatusMessage::Heartbeat(hb.clone())),
        )
    }

    pub fn blob_request(&self, req: &BlobRequest) -> bool {
        self.send(NodeTopic::BlobRequest, false, encode(req))
    }

    pub fn telemetry(&self, batch: &TelemetryBatch) -> bool {
        self.send(NodeTopic::Telemetry, false, encode(batch))
    }

    pub fn event(&self, event: &NodeEvent) -> bool {
        self.send(NodeTopic::Events, false, encode(event))
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }
}

/// How to reach the control plane.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_id: String,
    pub host: String,
    pub port: u16,
    pub keep_alive: Duration,
    /// The node's certificate; `None` for a plain `mqtt://` uplink.
    pub tls: Option<identity::Tls>,
    /// Where a renewed certificate is saved.
    pub data_dir: std::path::PathBuf,
    /// User name and password on a third-party broker (`uplink_password_file`).
    pub credentials: Option<(String, String)>,
}

/// The session; [`UplinkSession::run`] drives it.
pub struct UplinkSession {
    settings: Settings,
    client: AsyncClient,
    eventloop: EventLoop,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for UplinkSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UplinkSession")
            .field("node_id", &self.settings.node_id)
            .finish()
    }
}

/// Creates the client and its session (nothing connects until the session runs).
pub fn connect(settings: Settings) -> (UplinkClient, UplinkSession) {
    let mut opts = MqttOptions::new(&settings.node_id, &settings.host, settings.port);
    opts.set_keep_alive(settings.keep_alive);
    opts.set_clean_session(true);
    if let Some((user, password)) = &settings.credentials {
        opts.set_credentials(user, password);
    }
    let limit = MAX_MESSAGE_SIZE + 4096;
    opts.set_max_packet_size(limit, limit);
    opts.set_last_will(LastWill::new(
        NodeTopic::Status.for_node(&settings.node_id),
        encode(&StatusMessage::Offline(Offline {
            node_id: settings.node_id.clone(),
            graceful: false,
        })),
        QoS::AtLeastOnce,
        true,
    ));
    if let Some(tls) = &settings.tls {
        match tls.client_config() {
            Ok(config) => {
                opts.set_transport(rumqttc::Transport::tls_with_config(
                    rumqttc::TlsConfiguration::Rustls(config),
                ));
            }
            Err(e) => tracing::error!(error = %e, "the saved certificate is unusable"),
        }
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 256);
    let mut net = eventloop.network_options();
    net.set_tcp_nodelay(true);
    net.set_connection_timeout(5);
    eventloop.set_network_options(net);
    let counters = Arc::new(Counters::default());
    (
        UplinkClient {
            client: client.clone(),
            node_id: settings.node_id.clone(),
            counters: counters.clone(),
        },
        UplinkSession {
            settings,
            client,
            eventloop,
            counters,
        },
    )
}

/// Backoff between reconnects: doubles from 100 ms to 10 s, with ±25 % jitter so a fleet
/// that lost its control plane does not come back in lockstep.
fn jittered(base: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(base.as_nanos() as u64);
    let r = (h.finish() % 1000) as f64 / 1000.0; // 0.0..1.0
    base.mul_f64(0.75 + r * 0.5)
}

impl UplinkSession {
    /// Runs until `shutdown`, then says goodbye (a retained graceful offline) and
    /// disconnects.
    pub async fn run(
        mut self,
        agent: mpsc::Sender<Inbound>,
        uploads: mpsc::Sender<upload::UploadEvent>,
        shutdown: CancellationToken,
    ) {
        let node = self.settings.node_id.clone();
        let mut backoff = Duration::from_millis(100);
        let mut connected = false;
        let mut renewal = Renewal::new(self.settings.tls.as_ref());
        loop {
            self.counters.connected.store(connected, Ordering::Relaxed);
            let event = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = renewal.due(), if connected => {
                    renewal.request(&self.client, &node);
                    continue;
                }
                event = self.eventloop.poll() => event,
            };
            match event {
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) if renewal.reconnecting => {
                    // Our own goodbye before presenting the renewed certificate: drop the
                    // connection now (no last will) and reconnect on the next poll.
                    renewal.reconnecting = false;
                    self.eventloop.clean();
                    connected = false;
                    let _ = uploads.try_send(upload::UploadEvent::Disconnected);
                    continue;
                }
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected = true;
                    backoff = Duration::from_millis(100);
                    self.on_connected(&agent, &uploads);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    self.on_publish(&p, &mut renewal, &agent, &uploads);
                }
                Ok(_) => {}
                Err(e) => {
                    if connected {
                        self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                        connected = false;
                        let _ = uploads.try_send(upload::UploadEvent::Disconnected);
                    }
                    let wait = jittered(backoff);
                    tracing::warn!(error = %e, retry_in = ?wait, "control plane unreachable");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        self.counters.connected.store(false, Ordering::Relaxed);
        if connected {
            self.goodbye().await;
        }
    }

    /// Connected: subscribe to this node's downward topics, tell the agent and the uploader.
    fn on_connected(
        &self,
        agent: &mpsc::Sender<Inbound>,
        uploads: &mpsc::Sender<upload::UploadEvent>,
    ) {
        let node = self.settings.node_id.clone();
        tracing::info!(
            host = self.settings.host,
            port = self.settings.port,
            "connected to the control plane"
        );
        let client = self.client.clone();
        // Subscribing from this task could wait on the queue this loop drains.
        tokio::spawn(async move {
            for kind in [
                NodeTopic::Desired,
                NodeTopic::BlobData,
                NodeTopic::TelemetryAck,
                NodeTopic::CertReply,
            ] {
                if let Err(e) = client
                    .subscribe(kind.for_node(&node), QoS::AtLeastOnce)
                    .await
                {
                    tracing::warn!(error = %e, "subscribe failed");
                }
            }
        });
        self.forward(agent, Inbound::Connected);
        // Acks and connection changes are small and rare; the uploader keeps up.
        let _ = uploads.try_send(upload::UploadEvent::Connected);
    }

    /// A message from the control plane: a certificate reply (renewal), a telemetry
    /// acknowledgement (the uploader's), or a desired state or blob chunk (the agent's).
    fn on_publish(
        &mut self,
        p: &rumqttc::Publish,
        renewal: &mut Renewal,
        agent: &mpsc::Sender<Inbound>,
        uploads: &mpsc::Sender<upload::UploadEvent>,
    ) {
        let node = self.settings.node_id.clone();
        let Some((to, kind)) = topics::parse(&p.topic) else {
            return;
        };
        if to != node {
            return;
        }
        if kind == NodeTopic::CertReply {
            if let Some(config) = renewal.on_reply(&node, &self.settings.data_dir, &p.payload) {
                self.eventloop
                    .mqtt_options
                    .set_transport(rumqttc::Transport::tls_with_config(
                        rumqttc::TlsConfiguration::Rustls(config),
                    ));
                let _ = self.client.try_disconnect();
            }
            return;
        }
        if kind == NodeTopic::TelemetryAck {
            match decode::<TelemetryAck>(&p.payload) {
                Ok(ack) => {
                    let _ = uploads.try_send(upload::UploadEvent::Ack {
                        epoch: ack.epoch,
                        upto: ack.upto,
                    });
                }
                Err(e) => {
                    self.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "undecodable telemetry ack");
                }
            }
            return;
        }
        let inbound = match kind {
            NodeTopic::Desired => decode::<DesiredState>(&p.payload).map(Inbound::Desired),
            NodeTopic::BlobData => decode::<BlobReply>(&p.payload).map(Inbound::Blob),
            NodeTopic::Status
            | NodeTopic::BlobRequest
            | NodeTopic::Events
            | NodeTopic::Telemetry
            | NodeTopic::TelemetryAck
            | NodeTopic::CertRequest
            | NodeTopic::CertReply => return,
        };
        match inbound {
            Ok(m) => self.forward(agent, m),
            Err(e) => {
                self.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(topic = p.topic, error = %e, "undecodable message from the control plane");
            }
        }
    }

    fn forward(&self, agent: &mpsc::Sender<Inbound>, msg: Inbound) {
        if agent.try_send(msg).is_err() {
            self.counters
                .dropped_inbound
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!("agent queue full; inbound message dropped");
        }
    }

    /// Replaces the retained status with a graceful offline and disconnects, so the
    /// control plane marks us offline at once instead of after the heartbeat timeout.
    async fn goodbye(mut self) {
        let offline = StatusMessage::Offline(Offline {
            node_id: self.settings.node_id.clone(),
            graceful: true,
        });
        let _ = self.client.try_publish(
            NodeTopic::Status.for_node(&self.settings.node_id),
            QoS::AtLeastOnce,
            true,
            encode(&offline),
        );
        let _ = self.client.try_disconnect();
        let drained = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match self.eventloop.poll().await {
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("control plane did not take our goodbye in time");
        }
    }
}

/// Certificate renewal at two thirds of the lifetime.
struct Renewal {
    tls: Option<identity::Tls>,
    /// When to ask (again).
    at: Option<tokio::time::Instant>,
    /// The key of the request in flight.
    pending_key: Option<String>,
    /// A renewed certificate is in; the next DISCONNECT is ours.
    reconnecting: bool,
}

impl Renewal {
    fn new(tls: Option<&identity::Tls>) -> Self {
        let mut renewal = Self {
            tls: tls.cloned(),
            at: None,
            pending_key: None,
            reconnecting: false,
        };
        renewal.schedule();
        renewal
    }

    fn schedule(&mut self) {
        self.at = self.tls.as_ref().and_then(|tls| {
            let identity = wedge_pki::inspect_pem(&tls.credential.cert_pem).ok()?;
            let wait = identity
                .renew_at()
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            Some(tokio::time::Instant::now() + wait)
        });
    }

    async fn due(&self) {
        match self.at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }

    fn request(&mut self, client: &AsyncClient, node: &str) {
        // Ask again in 30 s if no answer comes (or the request could not be queued).
        self.at = Some(tokio::time::Instant::now() + Duration::from_secs(30));
        let (key, csr) = match wedge_pki::new_key_and_csr(node) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::error!(error = %e, "cannot make a key for renewal");
                return;
            }
        };
        let request = encode(&wedge_proto::messages::CertRequest { csr, token: None });
        if client
            .try_publish(
                NodeTopic::CertRequest.for_node(node),
                QoS::AtLeastOnce,
                false,
                request,
            )
            .is_ok()
        {
            tracing::info!("renewing the node certificate");
            self.pending_key = Some(key);
        }
    }

    /// Handles a reply; returns the TLS settings to reconnect with when a certificate came.
    fn on_reply(
        &mut self,
        node: &str,
        data_dir: &std::path::Path,
        payload: &[u8],
    ) -> Option<Arc<rustls::ClientConfig>> {
        use wedge_proto::messages::CertReply;
        let key = self.pending_key.take()?;
        match decode::<CertReply>(payload) {
            Ok(CertReply::Issued { certificate, ca }) => {
                let tls = identity::accept_issued(node, key, certificate, ca, None)
                    .and_then(|tls| identity::save(data_dir, &tls).map(|()| tls))
                    .and_then(|tls| Ok((tls.client_config()?, tls)));
                match tls {
                    Ok((config, tls)) => {
                        tracing::info!("node certificate renewed; reconnecting with it");
                        self.tls = Some(tls);
                        self.schedule();
                        self.reconnecting = true;
                        Some(config)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "renewed certificate not usable");
                        None
                    }
                }
            }
            Ok(CertReply::Refused { reason }) => {
                tracing::error!(reason, "certificate renewal refused");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "undecodable certificate reply");
                None
            }
        }
    }
}
