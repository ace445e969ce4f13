//! The control plane's MQTT session: heartbeats, wills and blob requests in; desired
//! states and blob chunks out.
//!
//! The control plane is an ordinary MQTT client (rumqttc) of the broker, embedded or
//! external, so both setups run the same code. rumqttc's event loop must never wait on
//! our handlers (a handler waiting to publish while the loop waits on the handler is a
//! deadlock), so incoming messages go to two handler tasks with `try_send` over bounded
//! queues, one for heartbeats and certificate requests and one for telemetry, blobs and
//! events, each with a per-node share ([`lanes`]); a full queue or share drops the message
//! and counts it. Every inbound message is either repeated by its sender (heartbeats,
//! telemetry until acknowledged) or retried on a timeout (blob requests).

mod lanes;
mod liveness;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wedge_shared::messages::{
    BLOB_CHUNK_SIZE, BlobChunk, BlobReply, BlobRequest, CertRequest, DesiredState, NodeEvent,
    StatusMessage, TelemetryAck, TelemetryBatch,
};
use wedge_shared::topics::{self, NodeTopic};
use wedge_shared::{DecodeError, decode, encode};

use crate::fleet::Fleet;
use crate::reconcile::Reconciler;
use crate::rollout::Rollouts;
use crate::store::Store;
use crate::time::now_ms;

/// Most chunks sent in answer to one request, whatever the node asks for.
const MAX_CHUNKS_PER_REQUEST: u32 = 16;

/// Counters of the session.
#[derive(Debug, Default)]
pub struct Counters {
    /// Live heartbeats processed.
    pub heartbeats: AtomicU64,
    pub decode_errors: AtomicU64,
    pub dropped_inbound: AtomicU64,
    pub impersonation: AtomicU64,
    pub telemetry_stored: AtomicU64,
    pub telemetry_duplicates: AtomicU64,
    pub telemetry_lost: AtomicU64,
    /// Acknowledgements sent for telemetry batches.
    pub telemetry_acks: AtomicU64,
    /// Whether our session is connected to the broker (readiness).
    pub connected: AtomicBool,
    /// Times our session connected to the broker: 1 in a healthy run; more means it was
    /// cut off (a broker restart, or a client taking its id).
    pub connects: AtomicU64,
    /// Whether the inbound handlers run and move (readiness).
    pub liveness: liveness::Liveness,
}

/// Publishes on behalf of the control plane. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Publisher {
    client: AsyncClient,
}

impl Publisher {
    /// Publishes to one of `node`'s downward topics, at least once.
    async fn send(
        &self,
        kind: NodeTopic,
        node: &str,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), String> {
        self.client
            .publish(kind.for_node(node), QoS::AtLeastOnce, retain, payload)
            .await
            .map_err(|e| e.to_string())
    }

    /// Publishes a node's desired state, retained.
    pub async fn desired(&self, node: &str, state: &DesiredState) -> Result<(), String> {
        self.send(NodeTopic::Desired, node, true, encode(state))
            .await
    }

    async fn telemetry_ack(&self, node: &str, ack: &TelemetryAck) -> Result<(), String> {
        self.send(NodeTopic::TelemetryAck, node, false, encode(ack))
            .await
    }

    async fn blob(&self, node: &str, reply: &BlobReply) -> Result<(), String> {
        self.send(NodeTopic::BlobData, node, false, encode(reply))
            .await
    }
}

/// Creates the client; [`Session::run`] drives it.
pub fn connect(
    broker: (&str, u16),
    client_id: &str,
    max_payload: usize,
    tls: Option<Arc<rustls::ClientConfig>>,
    credentials: Option<(String, String)>,
) -> (Publisher, Session) {
    let mut opts = MqttOptions::new(client_id, broker.0, broker.1);
    if let Some((user, password)) = credentials {
        opts.set_credentials(user, password);
    }
    if let Some(tls) = tls {
        opts.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls),
        ));
    }
    opts.set_keep_alive(Duration::from_secs(10));
    opts.set_clean_session(true);
    // rumqttc's default limit is 10 KiB and an oversize packet kills its event loop.
    opts.set_max_packet_size(max_payload + 1024, max_payload + 1024);
    opts.set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    let mut net = eventloop.network_options();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    (
        Publisher {
            client: client.clone(),
        },
        Session { client, eventloop },
    )
}

struct Inbound {
    node: String,
    kind: NodeTopic,
    payload: Vec<u8>,
    retained: bool,
    /// A certificate request on the enrollment topic rather than the node's own.
    enroll: bool,
}

/// The running MQTT session.
pub struct Session {
    client: AsyncClient,
    eventloop: EventLoop,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mqtt::Session")
    }
}

/// What the session's handler needs.
#[derive(Debug, Clone)]
pub struct Context {
    pub store: Store,
    pub fleet: Arc<Fleet>,
    pub reconciler: Arc<Reconciler>,
    pub rollouts: Arc<Rollouts>,
    pub publisher: Publisher,
    pub counters: Arc<Counters>,
    pub identity: Option<Arc<crate::identity::Identity>>,
}

impl Session {
    /// Runs until `shutdown`, reconnecting with capped exponential backoff.
    pub async fn run(mut self, ctx: Context, shutdown: CancellationToken) {
        let (lanes, (control, bulk)) = lanes::Lanes::new();
        let handlers = [
            tokio::spawn(handle_inbound(control, ctx.clone(), 0)),
            tokio::spawn(handle_inbound(bulk, ctx.clone(), 1)),
        ];
        let mut backoff = Duration::from_millis(100);
        let mut drops = DropLog::default();
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => break,
                event = self.eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_millis(100);
                    ctx.counters.connected.store(true, Ordering::Relaxed);
                    ctx.counters.connects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!("connected to the broker");
                    let client = self.client.clone();
                    // Subscribing from this task could wait on the queue this loop drains.
                    tokio::spawn(async move {
                        for filter in [
                            NodeTopic::Status,
                            NodeTopic::BlobRequest,
                            NodeTopic::Events,
                            NodeTopic::Telemetry,
                            NodeTopic::CertRequest,
                        ] {
                            if let Err(e) =
                                client.subscribe(filter.all_nodes(), QoS::AtLeastOnce).await
                            {
                                tracing::warn!(error = %e, "subscribe failed");
                            }
                        }
                        let enroll = format!("{}/+/req", topics::ENROLL_PREFIX);
                        if let Err(e) = client.subscribe(enroll, QoS::AtLeastOnce).await {
                            tracing::warn!(error = %e, "subscribe failed");
                        }
                    });
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let topic = p.topic.clone();
                    let (node, kind, enroll) = match topics::parse(&topic) {
                        Some((node, kind)) => (node, kind, false),
                        None => match topics::parse_enroll_request(&topic) {
                            Some(node) => (node, NodeTopic::CertRequest, true),
                            None => continue,
                        },
                    };
                    let inbound = Inbound {
                        node: node.to_string(),
                        kind,
                        payload: p.payload.to_vec(),
                        retained: p.retain,
                        enroll,
                    };
                    if !lanes.offer(inbound) {
                        ctx.counters.dropped_inbound.fetch_add(1, Ordering::Relaxed);
                        drops.dropped(&topic);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    ctx.counters.connected.store(false, Ordering::Relaxed);
                    tracing::warn!(error = %e, retry_in = ?backoff, "broker connection lost");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        drop(lanes);
        let _ = self.client.try_disconnect();
        // Let the DISCONNECT go out; the loop ends when the connection closes.
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while self.eventloop.poll().await.is_ok() {}
        })
        .await;
        for handler in handlers {
            let _ = handler.await;
        }
    }
}

/// Logs inbound drops at most once a second: under overload a line per message would
/// add to the overload.
#[derive(Default)]
struct DropLog {
    since_last: u64,
    last: Option<std::time::Instant>,
}

impl DropLog {
    fn dropped(&mut self, topic: &str) {
        self.since_last += 1;
        if self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            tracing::warn!(
                dropped = self.since_last,
                last_topic = topic,
                "inbound queue full, messages dropped (senders retry)"
            );
            self.since_last = 0;
            self.last = Some(std::time::Instant::now());
        }
    }
}

/// Blob chunks the control plane sends one node per second, and in a burst (64 KiB each:
/// 10 MiB/s, 25 MiB at once). A node's fetch asks for the next window (8 chunks) only when
/// the last one arrived, so an honest fetch of a 12 MB module never meets the limit; a node
/// that floods requests gets no more than this, and its requests past it are dropped (an
/// honest fetch would retry after its stall timeout).
const BLOB_CHUNKS_PER_SEC: u32 = 160;
const BLOB_CHUNK_BURST: u32 = 400;

type BlobLimiter = governor::DefaultKeyedRateLimiter<String>;

async fn handle_inbound(mut rx: mpsc::Receiver<lanes::Queued>, ctx: Context, lane: usize) {
    let alive = liveness::Alive::new(ctx.counters.clone(), lane);
    use governor::{Quota, RateLimiter};
    use std::num::NonZeroU32;
    let quota = Quota::per_second(NonZeroU32::new(BLOB_CHUNKS_PER_SEC).unwrap_or(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(BLOB_CHUNK_BURST).unwrap_or(NonZeroU32::MIN));
    let blob_chunks: BlobLimiter = RateLimiter::keyed(quota);
    let mut handled = 0u64;
    while let Some(queued) = rx.recv().await {
        let msg = &queued.msg;
        alive.busy(now_ms());
        handled += 1;
        if handled.is_multiple_of(4096) {
            // Forget nodes that have not asked lately: the limiter's state stays bounded.
            blob_chunks.retain_recent();
        }
        let result = match msg.kind {
            NodeTopic::Status => on_status(&ctx, msg).await,
            NodeTopic::BlobRequest => on_blob_request(&ctx, msg, &blob_chunks).await,
            NodeTopic::Telemetry => on_telemetry(&ctx, msg).await,
            NodeTopic::Events => {
                if let Ok(event) = decode_counted::<NodeEvent>(&ctx, msg) {
                    ctx.fleet.node_event(&msg.node, event, now_ms());
                }
                Ok(())
            }
            NodeTopic::CertRequest => on_cert_request(&ctx, msg).await,
            // Our own outbound topics.
            NodeTopic::Desired
            | NodeTopic::BlobData
            | NodeTopic::TelemetryAck
            | NodeTopic::CertReply => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(node = msg.node, error = %e, "inbound message not handled");
        }
        alive.idle();
    }
}

fn decode_counted<T: serde::de::DeserializeOwned>(
    ctx: &Context,
    msg: &Inbound,
) -> Result<T, DecodeError> {
    decode(&msg.payload).inspect_err(|e| {
        ctx.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(node = msg.node, kind = ?msg.kind, error = %e, "undecodable message");
    })
}

/// Enrollment or renewal: the gate already made sure the request comes from that node's
/// connection (or an enrollment connection for that node id).
async fn on_cert_request(ctx: &Context, msg: &Inbound) -> anyhow::Result<()> {
    let Some(identity) = &ctx.identity else {
        return Ok(());
    };
    let Ok(request) = decode_counted::<CertRequest>(ctx, msg) else {
        return Ok(());
    };
    let reply = identity.answer(&msg.node, msg.enroll, &request, now_ms());
    let topic = if msg.enroll {
        topics::enroll_reply(&msg.node)
    } else {
        NodeTopic::CertReply.for_node(&msg.node)
    };
    ctx.publisher
        .client
        .publish(topic, QoS::AtLeastOnce, false, encode(&reply))
        .await
        .map_err(|e| anyhow::anyhow!("cannot send the certificate reply: {e}"))
}

async fn on_status(ctx: &Context, msg: &Inbound) -> anyhow::Result<()> {
    let Ok(status) = decode_counted::<StatusMessage>(ctx, msg) else {
        return Ok(());
    };
    let claimed = match &status {
        StatusMessage::Heartbeat(hb) => &hb.node_id,
        StatusMessage::Offline(o) => &o.node_id,
    };
    if *claimed != msg.node {
        ctx.counters.impersonation.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            topic_node = msg.node,
            claimed,
            "status for another node refused"
        );
        return Ok(());
    }
    match status {
        StatusMessage::Heartbeat(hb) => {
            let desired_generation = hb.desired_generation;
            if !msg.retained {
                ctx.counters.heartbeats.fetch_add(1, Ordering::Relaxed);
            }
            let seen = ctx.fleet.heartbeat(hb, !msg.retained, now_ms())?;
            if seen.new {
                tracing::info!(node = msg.node, "node joined");
            }
            if seen.labels_changed {
                // New nodes count as changed: rollouts decide what they get.
                ctx.rollouts.nudge();
            }
            if !msg.retained {
                ctx.reconciler
                    .resend_if_behind(&msg.node, desired_generation)
                    .await?;
            }
        }
        StatusMessage::Offline(o) => {
            let reason = if o.graceful {
                "shut down"
            } else {
                "connection lost (last will)"
            };
            ctx.fleet.offline(&msg.node, reason, now_ms())?;
        }
    }
    Ok(())
}

/// Stores a batch durably, then acknowledges everything stored contiguously. A batch from a
/// node we have never heard a heartbeat from is stored too: its data is not lost for being
/// early.
async fn on_telemetry(ctx: &Context, msg: &Inbound) -> anyhow::Result<()> {
    let Ok(batch) = decode_counted::<TelemetryBatch>(ctx, msg) else {
        return Ok(());
    };
    let store = ctx.store.clone();
    let node = msg.node.clone();
    let outcome =
        tokio::task::spawn_blocking(move || store.ingest_telemetry(&node, &batch, now_ms()))
            .await??;
    ctx.counters
        .telemetry_stored
        .fetch_add(outcome.stored, Ordering::Relaxed);
    ctx.counters
        .telemetry_duplicates
        .fetch_add(outcome.duplicates, Ordering::Relaxed);
    if outcome.lost > 0 {
        ctx.counters
            .telemetry_lost
            .fetch_add(outcome.lost, Ordering::Relaxed);
        tracing::warn!(
            node = msg.node,
            lost = outcome.lost,
            "node dropped telemetry before delivering it"
        );
    }
    ctx.publisher
        .telemetry_ack(
            &msg.node,
            &TelemetryAck {
                epoch: outcome.epoch,
                upto: outcome.upto,
            },
        )
        .await
        .map_err(anyhow::Error::msg)?;
    ctx.counters.telemetry_acks.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

async fn on_blob_request(
    ctx: &Context,
    msg: &Inbound,
    limiter: &BlobLimiter,
) -> anyhow::Result<()> {
    let Ok(req) = decode_counted::<BlobRequest>(ctx, msg) else {
        return Ok(());
    };
    let chunks = req.max_chunks.clamp(1, MAX_CHUNKS_PER_REQUEST);
    let allowed = std::num::NonZeroU32::new(chunks)
        .is_some_and(|n| matches!(limiter.check_key_n(&msg.node, n), Ok(Ok(()))));
    if !allowed {
        ctx.counters.dropped_inbound.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            node = msg.node,
            "blob request over the node's rate, dropped"
        );
        return Ok(());
    }
    // A node gets only the modules its own desired state names: another deployment's code
    // (perhaps a competitor's, perhaps carrying secrets in its data) is "not found" to it,
    // whether or not it exists.
    let wanted = ctx
        .store
        .desired(&msg.node)?
        .is_some_and(|d| d.modules.iter().any(|m| m.digest == req.digest));
    let blob = if wanted {
        ctx.store.blob(&req.digest)?
    } else {
        tracing::debug!(node = msg.node, digest = %req.digest, "blob not in the node's desired state");
        None
    };
    let Some(blob) = blob else {
        ctx.publisher
            .blob(&msg.node, &BlobReply::NotFound { digest: req.digest })
            .await
            .map_err(anyhow::Error::msg)?;
        return Ok(());
    };
    let total = blob.len() as u64;
    let mut offset = req.offset.min(total);
    for _ in 0..chunks {
        if offset >= total {
            break;
        }
        // `offset < total <= usize::MAX` on every platform that loaded the blob.
        let start = offset as usize;
        let end = (start + BLOB_CHUNK_SIZE).min(blob.len());
        let reply = BlobReply::Chunk(BlobChunk {
            digest: req.digest,
            offset,
            total,
            data: blob[start..end].to_vec(),
        });
        ctx.publisher
            .blob(&msg.node, &reply)
            .await
            .map_err(anyhow::Error::msg)?;
        offset = end as u64;
    }
    Ok(())
}
