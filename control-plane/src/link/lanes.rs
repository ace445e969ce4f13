//! Inbound messages wait in two lanes, each with a bound per node, so that no node can
//! starve the fleet:
//!
//! - The **control** lane carries what keeps the fleet's picture true and cheap to handle:
//!   heartbeats, last wills and certificate requests. It is never behind anyone's
//!   telemetry or blob transfer, so a busy ingest does not make nodes look offline.
//! - The **bulk** lane carries telemetry batches, blob requests and events, each of which
//!   may cost a disk write or megabytes of replies.
//!
//! In each lane one node may have only so many messages waiting (`PER_NODE`); past that its
//! messages are dropped and counted like a full queue, and it retries (telemetry until
//! acknowledged, blob requests on a timeout, heartbeats every interval). A node that floods
//! therefore fills its own share, never the queue. Per-node counts exist only while a node
//! has messages waiting, so they are bounded by the queues.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use wedge_proto::topics::NodeTopic;

use super::inbound::Inbound;

/// Messages waiting in one lane, all nodes together.
const QUEUE: usize = 4096;
/// Messages one node may have waiting: in the control lane, in the bulk lane.
const PER_NODE: [usize; 2] = [16, 64];

#[derive(Debug, Clone, Copy)]
enum Lane {
    Control = 0,
    Bulk = 1,
}

fn lane(kind: NodeTopic) -> Lane {
    match kind {
        NodeTopic::Status | NodeTopic::CertRequest => Lane::Control,
        _ => Lane::Bulk,
    }
}

type Waiting = Arc<Mutex<HashMap<String, [usize; 2]>>>;

/// A message taken from a lane; its node's count goes down when it is dropped (handled).
pub(super) struct Queued {
    pub msg: Inbound,
    waiting: Waiting,
    lane: Lane,
}

impl Drop for Queued {
    fn drop(&mut self) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(counts) = waiting.get_mut(&self.msg.node) {
            counts[self.lane as usize] = counts[self.lane as usize].saturating_sub(1);
            if counts == &[0, 0] {
                waiting.remove(&self.msg.node);
            }
        }
    }
}

/// The sending side, used by the session's event loop (never waits).
pub(super) struct Lanes {
    senders: [mpsc::Sender<Queued>; 2],
    waiting: Waiting,
}

/// The receiving sides: control, bulk.
pub(super) type Receivers = (mpsc::Receiver<Queued>, mpsc::Receiver<Queued>);

impl Lanes {
    pub fn new() -> (Self, Receivers) {
        let (control_tx, control_rx) = mpsc::channel(QUEUE);
        let (bulk_tx, bulk_rx) = mpsc::channel(QUEUE);
        let lanes = Self {
            senders: [control_tx, bulk_tx],
            waiting: Arc::default(),
        };
        (lanes, (control_rx, bulk_rx))
    }

    /// Queues `msg`; false when its node's share or the lane is full (the message is
    /// dropped: its sender retries).
    pub fn offer(&self, msg: Inbound) -> bool {
        let lane = lane(msg.kind);
        {
            let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            let counts = waiting.entry(msg.node.clone()).or_default();
            if counts[lane as usize] >= PER_NODE[lane as usize] {
                return false;
            }
            counts[lane as usize] += 1;
        }
        // On failure the `Queued` comes back and is dropped, which gives the slot back.
        self.senders[lane as usize]
            .try_send(Queued {
                msg,
                waiting: self.waiting.clone(),
                lane,
            })
            .is_ok()
    }

    #[cfg(test)]
    fn waiting_nodes(&self) -> usize {
        self.waiting.lock().map(|w| w.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn msg(node: &str, kind: NodeTopic) -> Inbound {
        Inbound {
            node: node.into(),
            kind,
            payload: vec![1],
            retained: false,
            enroll: false,
        }
    }

    #[test]
    fn a_flooding_node_fills_only_its_own_share_and_heartbeats_have_their_own_lane() {
        let (lanes, (mut control, mut bulk)) = Lanes::new();
        let mut accepted = 0;
        for _ in 0..1000 {
            if lanes.offer(msg("flood", NodeTopic::Telemetry)) {
                accepted += 1;
            }
        }
        assert_eq!(accepted, PER_NODE[1]);
        // Everyone else still gets in, in both lanes.
        assert!(lanes.offer(msg("honest", NodeTopic::Telemetry)));
        assert!(lanes.offer(msg("flood", NodeTopic::Status)));
        assert!(lanes.offer(msg("honest", NodeTopic::Status)));
        assert_eq!(control.try_recv().unwrap().msg.node, "flood");
        assert_eq!(control.try_recv().unwrap().msg.node, "honest");
        // Handling a message gives its slot back; counts vanish when nothing waits.
        drop(bulk.try_recv().unwrap());
        assert!(lanes.offer(msg("flood", NodeTopic::Telemetry)));
        while let Ok(q) = bulk.try_recv() {
            drop(q);
        }
        assert_eq!(lanes.waiting_nodes(), 0);
    }
}
