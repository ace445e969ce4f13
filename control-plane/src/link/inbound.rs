//! The node link's handlers: each takes messages from its lane, decodes them, and hands
//! them to the domain rooms (fleet, rollout, store, identity); answers go out through the
//! outbox. A message that fails to decode is counted and dropped: its sender repeats it
//! (heartbeats, telemetry until acknowledged) or retries (blob requests).

use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use wedge_proto::messages::{
    BLOB_CHUNK_SIZE, BlobChunk, BlobReply, BlobRequest, CertRequest, NodeEvent, StatusMessage,
    TelemetryAck, TelemetryBatch,
};
use wedge_proto::topics::NodeTopic;
use wedge_proto::{DecodeError, decode};

use super::{Context, lanes, liveness};
use crate::time::now_ms;

/// Most chunks sent in answer to one request, whatever the node asks for.
const MAX_CHUNKS_PER_REQUEST: u32 = 16;

/// One message from a node, as the session parsed its topic.
pub(super) struct Inbound {
    pub(super) node: String,
    pub(super) kind: NodeTopic,
    pub(super) payload: Vec<u8>,
    pub(super) retained: bool,
    /// A certificate request on the enrollment topic rather than the node's own.
    pub(super) enroll: bool,
}

/// Blob chunks the control plane sends one node per second, and in a burst (64 KiB each:
/// 10 MiB/s, 25 MiB at once). A node's fetch asks for the next window (8 chunks) only when
/// the last one arrived, so an honest fetch of a 12 MB module never meets the limit; a node
/// that floods requests gets no more than this, and its requests past it are dropped (an
/// honest fetch would retry after its stall timeout).
const BLOB_CHUNKS_PER_SEC: u32 = 160;
const BLOB_CHUNK_BURST: u32 = 400;

type BlobLimiter = governor::DefaultKeyedRateLimiter<String>;

/// Handles lane `lane`'s messages until the session drops the lane.
pub(super) async fn handle(mut rx: mpsc::Receiver<lanes::Queued>, ctx: Context, lane: usize) {
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
    ctx.outbox
        .cert_reply(&msg.node, msg.enroll, &reply)
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
            ctx.precompiler
                .node_key(&msg.node, hb.precompile_key.as_deref());
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
    ctx.outbox
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
    let wanted = ctx.store.desired(&msg.node)?.is_some_and(|d| {
        d.modules.iter().any(|m| {
            m.digest == req.digest || m.native.as_ref().is_some_and(|n| n.digest == req.digest)
        })
    });
    let blob = if wanted {
        match ctx.store.blob(&req.digest)? {
            Some(blob) => Some(blob),
            None => ctx.store.native_blob(&req.digest)?,
        }
    } else {
        tracing::debug!(node = msg.node, digest = %req.digest, "blob not in the node's desired state");
        None
    };
    let Some(blob) = blob else {
        ctx.outbox
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
        ctx.outbox
            .blob(&msg.node, &reply)
            .await
            .map_err(anyhow::Error::msg)?;
        offset = end as u64;
    }
    Ok(())
}
