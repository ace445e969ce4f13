//! A model test of telemetry delivery end to end, with the real parts and no network: the
//! node's buffer (sled in a temp dir), the pure uploader, the control plane's store (sled
//! in a temp dir) and, between them, a lossy, reordering link. Random sequences of appends,
//! flushes, sends, deliveries (late, repeated or lost), acknowledgements (lost too),
//! reconnects and node restarts; after every step:
//!
//! - nothing is stored twice (each record's identity, its payload, appears once upstream);
//! - nothing is lost: every record appended is still in the node's buffer or stored;
//! - only durable records were ever sent.
//!
//! and at the end, once the link works again, everything is stored exactly once.

// A test harness: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use proptest::prelude::*;
use wedge_control_plane::store::Store as CpStore;
use wedge_edge_node::buffer::{Buffer, FullPolicy};
use wedge_edge_node::store::Store as NodeStore;
use wedge_edge_node::uplink::upload::{BATCH_BYTES, Uploader};
use wedge_proto::messages::{TelemetryAck, TelemetryBatch};

#[derive(Debug, Clone)]
enum Op {
    /// A module emits this many records.
    Append(u8),
    /// The group commit.
    Sync,
    /// The uploader sends what it may.
    Send,
    /// The link delivers the message at this position (modulo the queue), possibly again
    /// later (`keep`), or loses it.
    Deliver {
        at: usize,
        keep: bool,
    },
    Lose(usize),
    /// An acknowledgement reaches the node, or is lost.
    Ack(usize),
    LoseAck(usize),
    /// The session drops and comes back: in-flight state is forgotten.
    Reconnect,
    /// The node process restarts (a new epoch); messages in flight may still arrive.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1..20u8).prop_map(Op::Append),
        2 => Just(Op::Sync),
        3 => Just(Op::Send),
        4 => (any::<usize>(), any::<bool>()).prop_map(|(at, keep)| Op::Deliver { at, keep }),
        1 => any::<usize>().prop_map(Op::Lose),
        3 => any::<usize>().prop_map(Op::Ack),
        1 => any::<usize>().prop_map(Op::LoseAck),
        1 => Just(Op::Reconnect),
        1 => Just(Op::Restart),
    ]
}

struct World {
    _node_dir: tempfile::TempDir,
    _cp_dir: tempfile::TempDir,
    /// The node's store and its buffer (opened again on a restart).
    node: Option<(NodeStore, Buffer)>,
    uploader: Uploader,
    cp: CpStore,
    link: Vec<TelemetryBatch>,
    acks: Vec<TelemetryAck>,
    appended: BTreeSet<u64>,
    next_id: u64,
    rt: tokio::runtime::Runtime,
    now: u64,
}

impl World {
    fn new() -> Self {
        let node_dir = tempfile::tempdir().unwrap();
        let cp_dir = tempfile::tempdir().unwrap();
        Self {
            uploader: Uploader::new(0),
            node: Some(open_node(node_dir.path())),
            _node_dir: node_dir,
            cp: CpStore::open(cp_dir.path()).unwrap(),
            _cp_dir: cp_dir,
            link: Vec::new(),
            acks: Vec::new(),
            appended: BTreeSet::new(),
            next_id: 0,
            rt: tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap(),
            now: 0,
        }
    }

    fn apply(&mut self, op: &Op) {
        self.now += 1;
        match *op {
            Op::Append(n) => {
                for _ in 0..n {
                    self.next_id += 1;
                    let id = self.next_id;
                    self.buffer()
                        .append("m", "s", id, id.to_string().as_bytes())
                        .unwrap();
                    self.appended.insert(id);
                }
            }
            Op::Sync => {
                self.rt.block_on(self.buffer().sync()).unwrap();
            }
            Op::Send => {
                while self.uploader.can_send() {
                    let Some(batch) = self
                        .buffer()
                        .batch(self.uploader.next_after(), 7, BATCH_BYTES)
                        .unwrap()
                    else {
                        break;
                    };
                    let last = batch.records.last().map_or(0, |r| r.seq);
                    assert!(
                        last <= self.buffer().durable(),
                        "record {last} sent before it was durable ({})",
                        self.buffer().durable()
                    );
                    self.link.push(batch);
                    self.uploader.sent(last, std::time::Instant::now());
                }
            }
            Op::Deliver { at, keep } => {
                if self.link.is_empty() {
                    return;
                }
                let i = at % self.link.len();
                let batch = if keep {
                    self.link[i].clone()
                } else {
                    self.link.remove(i)
                };
                let out = self.cp.ingest_telemetry("n", &batch, self.now).unwrap();
                self.acks.push(TelemetryAck {
                    epoch: out.epoch,
                    upto: out.upto,
                });
            }
            Op::Lose(at) => {
                if !self.link.is_empty() {
                    let i = at % self.link.len();
                    self.link.remove(i);
                }
            }
            Op::Ack(at) => {
                if self.acks.is_empty() {
                    return;
                }
                let ack = self.acks.remove(at % self.acks.len());
                if let Some(upto) = self.buffer().acknowledge(ack.epoch, ack.upto).unwrap() {
                    self.uploader.on_ack(upto);
                }
            }
            Op::LoseAck(at) => {
                if !self.acks.is_empty() {
                    let i = at % self.acks.len();
                    self.acks.remove(i);
                }
            }
            Op::Reconnect => self.uploader.rewind(),
            Op::Restart => {
                // The buffer is dropped and opened again from what the store holds, as a
                // restarted node does. (The store itself stays open: sled releases its file
                // lock asynchronously after a drop, so reopening the directory in the same
                // process races with its flusher thread.)
                let (store, buffer) = self.node.take().expect("the node is open");
                drop(buffer);
                let buffer = store.buffer(64 << 20, FullPolicy::DropOldest).unwrap();
                self.node = Some((store, buffer));
                let start = self.buffer().first_available().unwrap().saturating_sub(1);
                self.uploader = Uploader::new(start);
            }
        }
    }

    fn buffer(&self) -> &Buffer {
        &self.node.as_ref().expect("the node is open").1
    }

    /// Payload ids stored upstream, in ingest order.
    fn stored(&self) -> Vec<u64> {
        self.cp
            .telemetry("n", None, 0, usize::MAX)
            .unwrap()
            .iter()
            .map(|s| String::from_utf8_lossy(&s.record.payload).parse().unwrap())
            .collect()
    }

    fn held(&self) -> BTreeSet<u64> {
        self.buffer()
            .read(0, usize::MAX)
            .unwrap()
            .iter()
            .map(|r| r.ts_ms)
            .collect()
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let stored = self.stored();
        let distinct: BTreeSet<u64> = stored.iter().copied().collect();
        prop_assert_eq!(distinct.len(), stored.len(), "stored twice: {:?}", stored);
        prop_assert!(distinct.is_subset(&self.appended));
        let held = self.held();
        let missing: Vec<u64> = self
            .appended
            .iter()
            .filter(|id| !distinct.contains(id) && !held.contains(id))
            .copied()
            .collect();
        prop_assert!(missing.is_empty(), "lost: {:?}", missing);
        Ok(())
    }

    /// The link works again: send, deliver and acknowledge until the buffer is empty.
    fn drain(&mut self) {
        self.apply(&Op::Reconnect);
        self.link.clear();
        self.acks.clear();
        for _ in 0..10_000 {
            self.apply(&Op::Sync);
            self.apply(&Op::Send);
            if self.link.is_empty() {
                if self.buffer().pending().0 == 0 {
                    return;
                }
                // Everything in flight was answered but not all acknowledged: overdue.
                self.apply(&Op::Reconnect);
                continue;
            }
            while !self.link.is_empty() {
                self.apply(&Op::Deliver { at: 0, keep: false });
            }
            while !self.acks.is_empty() {
                self.apply(&Op::Ack(0));
            }
        }
        panic!("the buffer never drained");
    }
}

fn open_node(dir: &std::path::Path) -> (NodeStore, Buffer) {
    let node = NodeStore::open(dir).unwrap();
    let buffer = node.buffer(64 << 20, FullPolicy::DropOldest).unwrap();
    (node, buffer)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_record_is_stored_exactly_once(ops in proptest::collection::vec(op(), 1..80)) {
        let mut w = World::new();
        for op in &ops {
            w.apply(op);
            w.check()?;
        }
        w.drain();
        w.check()?;
        let stored: BTreeSet<u64> = w.stored().into_iter().collect();
        prop_assert_eq!(&stored, &w.appended, "after the drain everything is stored");
        prop_assert_eq!(w.buffer().pending().0, 0);
    }
}
