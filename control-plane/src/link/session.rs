//! The node link's MQTT I/O: drives rumqttc's event loop, (re)subscribes on every
//! connect, parses each message's topic and offers it to a lane without waiting (rumqttc's
//! loop must never wait on a handler), reconnects with capped exponential back-off.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};
use tokio_util::sync::CancellationToken;
use wedge_proto::topics::{self, NodeTopic};

use super::inbound::{self, Inbound};
use super::{Context, lanes};

/// The running MQTT session.
pub struct LinkSession {
    pub(super) client: AsyncClient,
    pub(super) eventloop: EventLoop,
}
impl std::fmt::Debug for LinkSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("link::LinkSession")
    }
}

impl LinkSession {
    /// Runs until `shutdown`, reconnecting with capped exponential backoff.
    pub async fn run(mut self, ctx: Context, shutdown: CancellationToken) {
        let (lanes, (control, bulk)) = lanes::Lanes::new();
        let handlers = [
            tokio::spawn(inbound::handle(control, ctx.clone(), 0)),
            tokio::spawn(inbound::handle(bulk, ctx.clone(), 1)),
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
