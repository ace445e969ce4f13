//! Telemetry at the control plane: exactly-once ingest, reading in ingest order, retention.
//!
//! **Identity.** A node numbers its records `(epoch, seq)` (see the node's `buffer`). The
//! store keeps a *mark* per (node, epoch): every record of that epoch up to the mark is
//! stored. A record is stored only when it is the next one (`seq == mark + 1`); one at or
//! below the mark is a duplicate, one further ahead is out of order and left for the node
//! to send again (it re-sends from the acknowledgement: go-back-N). So each (node, epoch,
//! seq) is stored at most once, and the acknowledgement (the mark) never covers a record
//! that is not stored. Records, mark and the node's ingest counter change in one sled
//! transaction, flushed before the caller acknowledges.
//!
//! **What readers see.** Each stored record gets the next number of its node's *ingest
//! order* (1, 2, 3, …, never reused). The API's `seq`, its `after_seq` paging and
//! `wedgectl telemetry --follow` use that number, so a reader sees every record once and
//! in order even when a node's own numbering starts a new epoch (a restart, a wiped or
//! restored data directory). The node's `(epoch, seq)` is shown beside it.
//!
//! **Marks are bounded per node.** A node draws a new epoch each time it opens its buffer,
//! so a lying node could start one per batch and grow the marks without end. At most
//! [`MAX_EPOCHS_PER_NODE`] marks are kept per node; a new epoch beyond that evicts the one
//! least recently sent to. An honest node sends its oldest undelivered epoch first, so the
//! epoch it is delivering is always among the most recently used; only a node that
//! restarted that many times *and* then went back to an epoch it had left could see records
//! of it stored twice. Each mark keeps the time it was last used for that choice.
//!
//! **Retention** uses the control plane's clock (the time a record was received), never a
//! node's: a node with a skewed clock cannot get its data deleted early. The size budget is
//! shared oldest-first across all nodes, so one chatty node ages out its own history, not
//! everyone else's.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use wedge_proto::messages::{TelemetryBatch, TelemetryRecord};

use super::{Error, Result, Store};

/// Records, keyed by node id, a 0 byte (ids never contain one), the ingest number.
const LOG: &str = "telemetry_log";
/// Marks, keyed by node id, a 0 byte, the epoch; the value is the mark and the receive
/// time of the batch that last used it (8 bytes each, big-endian; older stores hold the
/// mark alone).
const MARKS: &str = "telemetry_epoch_marks";
/// The most epochs whose marks are kept per node.
pub const MAX_EPOCHS_PER_NODE: usize = 64;
/// Each node's last ingest number, keyed by node id.
const COUNTERS: &str = "telemetry_counters";
/// Stores from before epochs: records keyed by node and the node's sequence number, one
/// mark per node. Moved into the trees above when the store opens.
const LEGACY_RECORDS: &str = "telemetry";
const LEGACY_MARKS: &str = "telemetry_marks";

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTelemetry {
    /// The record's place in its node's ingest order (1, 2, …).
    pub seq: u64,
    /// The node's buffer epoch.
    pub epoch: u64,
    /// When the control plane stored it (its clock).
    pub received_ms: u64,
    /// As the node sent it; `record.seq` is the node's sequence number within `epoch`.
    pub record: TelemetryRecord,
}

/// What storing a telemetry batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestOutcome {
    pub epoch: u64,
    /// Every record of the node's epoch up to here is stored: the acknowledgement.
    pub upto: u64,
    pub stored: u64,
    pub duplicates: u64,
    /// Ahead of a gap; not stored, the node sends them again.
    pub out_of_order: u64,
    /// Sequence numbers given up on because the node no longer has them.
    pub lost: u64,
}

fn be_u64(v: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = v.len().min(8);
    b[8 - n..].copy_from_slice(&v[v.len() - n..]);
    u64::from_be_bytes(b)
}

/// (mark, last used) from a mark's value.
fn decode_mark(v: &[u8]) -> (u64, u64) {
    match v.len() {
        16 => (be_u64(&v[..8]), be_u64(&v[8..])),
        _ => (be_u64(v), 0),
    }
}

fn encode_mark(mark: u64, used_ms: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&mark.to_be_bytes());
    b[8..].copy_from_slice(&used_ms.to_be_bytes());
    b
}

fn node_key(node: &str, n: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(node.len() + 9);
    k.extend_from_slice(node.as_bytes());
    k.push(0);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// The node id part of a [`node_key`].
fn node_of(key: &[u8]) -> &[u8] {
    &key[..key.iter().position(|b| *b == 0).unwrap_or(key.len())]
}

/// The first key after every key of `node`.
fn after_node(node: &[u8]) -> Vec<u8> {
    let mut k = node.to_vec();
    k.push(1);
    k
}

/// Evicts `node`'s least recently used marks until a new epoch fits in
/// [`MAX_EPOCHS_PER_NODE`]. Ingest for one node runs in one task at a time (its lane), so
/// the count cannot race with another new epoch of the same node.
fn make_room_for_an_epoch(marks: &sled::Tree, node: &str) -> Result<()> {
    let mut kept: Vec<(u64, sled::IVec)> = Vec::new();
    for item in marks.range(node_key(node, 0)..after_node(node.as_bytes())) {
        let (k, v) = item?;
        kept.push((decode_mark(&v).1, k));
    }
    if kept.len() < MAX_EPOCHS_PER_NODE {
        return Ok(());
    }
    kept.sort();
    let excess = kept.len() + 1 - MAX_EPOCHS_PER_NODE;
    for (_, key) in kept.into_iter().take(excess) {
        marks.remove(key)?;
    }
    tracing::warn!(
        node,
        evicted = excess,
        "a node started more than {MAX_EPOCHS_PER_NODE} buffer epochs: its least recently used marks are dropped"
    );
    Ok(())
}

fn decode_stored(key: &[u8], bytes: &[u8]) -> Result<StoredTelemetry> {
    wedge_proto::decode(bytes).map_err(|e| Error::CorruptRecord {
        tree: LOG,
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

impl Store {
    /// Moves telemetry stored before epochs into the current layout: the node's sequence
    /// number becomes the ingest number, the epoch is 0 (what such nodes send), the receive
    /// time is the record's own time (the best there is). Re-running after a crash midway
    /// writes the same keys again; the old trees go last.
    pub(super) fn migrate_legacy_telemetry(&self) -> Result<()> {
        let names = self.db.tree_names();
        let has = |n: &str| names.iter().any(|t| &t[..] == n.as_bytes());
        if !has(LEGACY_RECORDS) && !has(LEGACY_MARKS) {
            return Ok(());
        }
        let old = self.db.open_tree(LEGACY_RECORDS)?;
        let old_marks = self.db.open_tree(LEGACY_MARKS)?;
        let log = self.db.open_tree(LOG)?;
        let marks = self.db.open_tree(MARKS)?;
        let counters = self.db.open_tree(COUNTERS)?;
        let mut moved = 0u64;
        for item in old.iter() {
            let (k, v) = item?;
            let Ok(record) = wedge_proto::decode::<TelemetryRecord>(&v) else {
                continue;
            };
            let node = node_of(&k).to_vec();
            let stored = StoredTelemetry {
                seq: record.seq,
                epoch: 0,
                received_ms: record.ts_ms.min(wedge_proto::now_ms()),
                record,
            };
            log.insert(&k, wedge_proto::encode(&stored))?;
            let last = counters.get(&node)?.map_or(0, |v| be_u64(&v));
            counters.insert(&node, &last.max(stored.seq).to_be_bytes())?;
            moved += 1;
        }
        for item in old_marks.iter() {
            let (node, mark) = item?;
            let node = String::from_utf8_lossy(&node).into_owned();
            // The old marks were stored big-endian from the first byte.
            let mut b = [0u8; 8];
            let n = mark.len().min(8);
            b[..n].copy_from_slice(&mark[..n]);
            marks.insert(node_key(&node, 0), &b)?;
            let last = counters.get(node.as_bytes())?.map_or(0, |v| be_u64(&v));
            counters.insert(
                node.as_bytes(),
                &last.max(u64::from_be_bytes(b)).to_be_bytes(),
            )?;
        }
        self.db.flush()?;
        self.db.drop_tree(LEGACY_RECORDS)?;
        self.db.drop_tree(LEGACY_MARKS)?;
        self.db.flush()?;
        tracing::info!(records = moved, "telemetry moved to the epoch layout");
        Ok(())
    }

    /// Stores a node's batch durably (received now, at `received_ms` on our clock) and
    /// returns the acknowledgement: the highest sequence number of the batch's epoch up to
    /// which every record is stored.
    pub fn ingest_telemetry(
        &self,
        node: &str,
        batch: &TelemetryBatch,
        received_ms: u64,
    ) -> Result<IngestOutcome> {
        let log = self.db.open_tree(LOG)?;
        let marks = self.db.open_tree(MARKS)?;
        let counters = self.db.open_tree(COUNTERS)?;
        let mark_key = node_key(node, batch.epoch);
        if !marks.contains_key(&mark_key)? {
            make_room_for_an_epoch(&marks, node)?;
        }
        let outcome = (&log, &marks, &counters)
            .transaction(|(log, marks, counters)| {
                let mut out = IngestOutcome {
                    epoch: batch.epoch,
                    upto: 0,
                    stored: 0,
                    duplicates: 0,
                    out_of_order: 0,
                    lost: 0,
                };
                // An epoch seen for the first time starts just below its first number.
                let mut mark = match marks.get(&mark_key)? {
                    Some(v) => decode_mark(&v).0,
                    None => batch.epoch_start.max(1) - 1,
                };
                let mut counter = counters.get(node.as_bytes())?.map_or(0, |v| be_u64(&v));
                // Records below `first_available` were dropped by the node. A batch cannot
                // say that of its own records: the claim stops at its first one.
                let first = batch
                    .records
                    .first()
                    .map_or(batch.first_available, |r| r.seq);
                let skipped_to = batch.first_available.min(first).saturating_sub(1);
                if mark < skipped_to {
                    out.lost = skipped_to - mark;
                    mark = skipped_to;
                }
                for record in &batch.records {
                    if record.seq <= mark {
                        out.duplicates += 1;
                    } else if record.seq == mark + 1 {
                        counter += 1;
                        mark += 1;
                        let stored = StoredTelemetry {
                            seq: counter,
                            epoch: batch.epoch,
                            received_ms,
                            record: record.clone(),
                        };
                        log.insert(node_key(node, counter), wedge_proto::encode(&stored))?;
                        out.stored += 1;
                    } else {
                        out.out_of_order += 1;
                    }
                }
                marks.insert(mark_key.as_slice(), &encode_mark(mark, received_ms))?;
                counters.insert(node.as_bytes(), &counter.to_be_bytes())?;
                out.upto = mark;
                Ok::<_, ConflictableTransactionError<()>>(out)
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => Error::Engine(e),
                TransactionError::Abort(()) => Error::CorruptRecord {
                    tree: LOG,
                    key: node.to_string(),
                    reason: "transaction aborted".into(),
                },
            })?;
        // Durable before we acknowledge: the node deletes what we acknowledge.
        self.db.flush()?;
        Ok(outcome)
    }

    /// The epochs whose marks are kept for `node`, with their marks.
    #[cfg(test)]
    fn telemetry_marks(&self, node: &str) -> Result<Vec<(u64, u64)>> {
        let marks = self.db.open_tree(MARKS)?;
        let mut out = Vec::new();
        for item in marks.range(node_key(node, 0)..after_node(node.as_bytes())) {
            let (k, v) = item?;
            out.push((be_u64(&k[k.len() - 8..]), decode_mark(&v).0));
        }
        Ok(out)
    }

    /// Retention: deletes records received before `cutoff_ms`, then, while the records
    /// take more than `max_bytes`, the oldest received across all nodes. Returns how many
    /// were deleted. A node's records are in ingest order, so in receive order: the age
    /// pass stops at a node's first young record, and the size pass merges the nodes'
    /// oldest records by receive time.
    pub fn prune_telemetry(&self, cutoff_ms: u64, max_bytes: u64) -> Result<u64> {
        let log = self.db.open_tree(LOG)?;
        let mut deleted = 0u64;
        let mut total = 0u64;
        // The oldest remaining record of each node: (received, key, bytes).
        let mut fronts: BinaryHeap<Reverse<(u64, Vec<u8>, u64)>> = BinaryHeap::new();
        let mut from: Vec<u8> = Vec::new();
        while let Some((k, v)) = log.range(from.clone()..).next().transpose()? {
            let received = wedge_proto::decode::<StoredTelemetry>(&v).map(|s| s.received_ms);
            if received.as_ref().is_ok_and(|r| *r >= cutoff_ms) {
                // This node's remaining records are younger: count them, go to the next.
                let next = after_node(node_of(&k));
                for item in log.range(k.to_vec()..next.clone()) {
                    total += item?.1.len() as u64;
                }
                if let Ok(received) = received {
                    fronts.push(Reverse((received, k.to_vec(), v.len() as u64)));
                }
                from = next;
                continue;
            }
            // Old, or unreadable: either way it goes.
            log.remove(&k)?;
            deleted += 1;
            from = k.to_vec();
        }
        while total > max_bytes {
            let Some(Reverse((_, key, size))) = fronts.pop() else {
                break;
            };
            log.remove(&key)?;
            deleted += 1;
            total = total.saturating_sub(size);
            let next = log
                .range(key.clone()..after_node(node_of(&key)))
                .next()
                .transpose()?;
            if let Some((k, v)) = next {
                let received = decode_stored(&k, &v).map_or(0, |s| s.received_ms);
                fronts.push(Reverse((received, k.to_vec(), v.len() as u64)));
            }
        }
        if deleted > 0 {
            self.db.flush()?;
        }
        Ok(deleted)
    }

    /// A node's records after ingest number `after`, in order, optionally of one stream
    /// only, at most `limit`.
    pub fn telemetry(
        &self,
        node: &str,
        stream: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredTelemetry>> {
        let start = node_key(node, after.saturating_add(1));
        let end = node_key(node, u64::MAX);
        let log = self.db.open_tree(LOG)?;
        collect(log.range(start..=end), stream, limit)
    }

    /// The newest `limit` records of `node` (of `stream` if given), in ingest order.
    pub fn telemetry_newest(
        &self,
        node: &str,
        stream: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredTelemetry>> {
        let start = node_key(node, 0);
        let end = node_key(node, u64::MAX);
        let log = self.db.open_tree(LOG)?;
        let mut out = collect(log.range(start..=end).rev(), stream, limit)?;
        out.reverse();
        Ok(out)
    }
}

fn collect(
    items: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    stream: Option<&str>,
    limit: usize,
) -> Result<Vec<StoredTelemetry>> {
    let mut out = Vec::new();
    for item in items {
        let (k, v) = item?;
        let stored = decode_stored(&k, &v)?;
        if stream.is_none_or(|s| s == stored.record.stream) {
            out.push(stored);
            if out.len() >= limit {
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64) -> TelemetryRecord {
        TelemetryRecord {
            seq,
            module: "m".into(),
            stream: if seq.is_multiple_of(2) { "even" } else { "odd" }.into(),
            ts_ms: seq,
            payload: seq.to_string().into_bytes(),
        }
    }

    fn batch(epoch: u64, first_available: u64, seqs: &[u64]) -> TelemetryBatch {
        TelemetryBatch {
            epoch,
            epoch_start: 1,
            first_available,
            records: seqs.iter().copied().map(rec).collect(),
        }
    }

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    fn node_seqs(v: &[StoredTelemetry]) -> Vec<(u64, u64)> {
        v.iter().map(|s| (s.epoch, s.record.seq)).collect()
    }

    #[test]
    fn stores_each_record_once_and_acknowledges_contiguously() {
        let (_dir, store) = open();
        let o = store
            .ingest_telemetry("n1", &batch(7, 1, &[1, 2, 3]), 0)
            .unwrap();
        assert_eq!((o.epoch, o.upto, o.stored, o.duplicates), (7, 3, 3, 0));
        // A gap: 5 arrives before 4; it is not stored ahead of the gap.
        let o = store.ingest_telemetry("n1", &batch(7, 1, &[5]), 0).unwrap();
        assert_eq!((o.upto, o.stored, o.out_of_order), (3, 0, 1));
        // The node sends again from the acknowledgement: 4 and 5 in order.
        let o = store
            .ingest_telemetry("n1", &batch(7, 1, &[3, 4, 5]), 0)
            .unwrap();
        assert_eq!((o.upto, o.stored, o.duplicates), (5, 2, 1));
        // The node dropped 6..=9: the acknowledgement moves past them.
        let o = store
            .ingest_telemetry("n1", &batch(7, 10, &[10]), 0)
            .unwrap();
        assert_eq!((o.upto, o.lost), (10, 4));
        // Another node's numbering is its own.
        assert_eq!(
            store
                .ingest_telemetry("n2", &batch(7, 1, &[1]), 0)
                .unwrap()
                .upto,
            1
        );

        let all = store.telemetry("n1", None, 0, 100).unwrap();
        assert_eq!(
            all.iter().map(|s| s.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 6]
        );
        assert_eq!(
            all.iter().map(|s| s.record.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 10]
        );
        let odd = store.telemetry("n1", Some("odd"), 1, 100).unwrap();
        assert_eq!(odd.iter().map(|s| s.record.seq).collect::<Vec<_>>(), [3, 5]);
        assert_eq!(store.telemetry("n1", None, 0, 2).unwrap().len(), 2);
        assert!(store.telemetry("n3", None, 0, 10).unwrap().is_empty());
        let newest = store.telemetry_newest("n1", None, 2).unwrap();
        assert_eq!(newest.iter().map(|s| s.seq).collect::<Vec<_>>(), [5, 6]);
    }

    #[test]
    fn a_new_epoch_is_never_mistaken_for_duplicates() {
        let (_dir, store) = open();
        // 500 delivered in one epoch; then the node restarts (or is wiped, or restored
        // from a backup) and numbers from 1 again in a new epoch.
        let first: Vec<u64> = (1..=500).collect();
        assert_eq!(
            store
                .ingest_telemetry("n", &batch(1, 1, &first), 10)
                .unwrap()
                .upto,
            500
        );
        let o = store
            .ingest_telemetry("n", &batch(2, 1, &first), 20)
            .unwrap();
        assert_eq!((o.epoch, o.upto, o.stored, o.duplicates), (2, 500, 500, 0));
        // The old epoch's re-sent records are still recognised.
        let o = store
            .ingest_telemetry("n", &batch(1, 1, &[499, 500]), 30)
            .unwrap();
        assert_eq!((o.stored, o.duplicates), (0, 2));
        // Readers page by ingest order across epochs, and the old epoch stays readable.
        let all = store.telemetry("n", None, 0, 10_000).unwrap();
        assert_eq!(all.len(), 1000);
        assert!(all.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        assert_eq!(node_seqs(&all[499..501]), [(1, 500), (2, 1)]);
        assert_eq!(
            store.telemetry("n", None, 999, 10).unwrap()[0].received_ms,
            20
        );
    }

    #[test]
    fn a_node_starting_epoch_after_epoch_keeps_a_bounded_number_of_marks() {
        let (_dir, store) = open();
        // An honest node delivers in epoch 1 while a lying one opens a new epoch per batch.
        store
            .ingest_telemetry("good", &batch(1, 1, &[1, 2]), 1)
            .unwrap();
        let mut now = 10;
        for epoch in 100..400u64 {
            now += 1;
            let o = store
                .ingest_telemetry("liar", &batch(epoch, 1, &[1, 2, 3]), now)
                .unwrap();
            assert_eq!((o.stored, o.upto), (3, 3), "epoch {epoch}");
            let kept = store.telemetry_marks("liar").unwrap();
            assert!(kept.len() <= MAX_EPOCHS_PER_NODE, "{} marks", kept.len());
            // The epoch just used is always kept, with its mark.
            assert!(kept.contains(&(epoch, 3)));
        }
        // The kept marks are the most recently used ones.
        let kept: Vec<u64> = store
            .telemetry_marks("liar")
            .unwrap()
            .into_iter()
            .map(|(e, _)| e)
            .collect();
        assert_eq!(
            kept,
            (400 - MAX_EPOCHS_PER_NODE as u64..400).collect::<Vec<_>>()
        );
        // A recently used epoch still recognises its re-sent records.
        let o = store
            .ingest_telemetry("liar", &batch(399, 1, &[2, 3]), now + 1)
            .unwrap();
        assert_eq!((o.stored, o.duplicates), (0, 2));
        // Another node's marks are untouched, and it goes on exactly once.
        assert_eq!(store.telemetry_marks("good").unwrap(), [(1, 2)]);
        let o = store
            .ingest_telemetry("good", &batch(1, 1, &[2, 3]), now + 2)
            .unwrap();
        assert_eq!((o.stored, o.duplicates, o.upto), (1, 1, 3));
    }

    #[test]
    fn marks_written_before_they_carried_a_time_still_read() {
        let (_dir, store) = open();
        let marks = store.db.open_tree(MARKS).unwrap();
        marks.insert(node_key("n", 5), &7u64.to_be_bytes()).unwrap();
        let o = store
            .ingest_telemetry("n", &batch(5, 1, &[7, 8]), 1)
            .unwrap();
        assert_eq!((o.stored, o.duplicates, o.upto), (1, 1, 8));
    }

    #[test]
    fn an_epoch_starting_mid_numbering_counts_nothing_as_lost() {
        let (_dir, store) = open();
        let b = TelemetryBatch {
            epoch: 9,
            epoch_start: 501,
            first_available: 501,
            records: vec![rec(501), rec(502)],
        };
        let o = store.ingest_telemetry("n", &b, 0).unwrap();
        assert_eq!((o.upto, o.stored, o.lost), (502, 2, 0));
        // A batch cannot claim its own records were dropped.
        let b = TelemetryBatch {
            epoch: 9,
            epoch_start: 501,
            first_available: u64::MAX,
            records: vec![rec(503)],
        };
        let o = store.ingest_telemetry("n", &b, 0).unwrap();
        assert_eq!((o.upto, o.stored, o.lost), (503, 1, 0));
    }

    #[test]
    fn retention_uses_receive_time_and_shares_the_budget_oldest_first() {
        let (_dir, store) = open();
        let big = |epoch, seqs: std::ops::RangeInclusive<u64>| TelemetryBatch {
            epoch,
            epoch_start: 1,
            first_available: 1,
            records: seqs
                .map(|seq| TelemetryRecord {
                    // Node clocks in 1970: retention by them would delete everything.
                    ts_ms: if epoch == 1 { 0 } else { 1 },
                    stream: "s".into(),
                    payload: vec![0; 100],
                    ..rec(seq)
                })
                .collect(),
        };
        // "a" sent 10 records at times 100..=109 (one per batch), "b" 10 at 105..=114.
        for i in 0..10u64 {
            store
                .ingest_telemetry("a", &big(1, i + 1..=i + 1), 100 + i)
                .unwrap();
            store
                .ingest_telemetry("b", &big(2, i + 1..=i + 1), 105 + i)
                .unwrap();
        }
        // Age by our clock: before 103 goes, whatever the node's timestamps say.
        assert_eq!(store.prune_telemetry(103, u64::MAX).unwrap(), 3);
        let a = store.telemetry("a", None, 0, 100).unwrap();
        assert_eq!(a[0].received_ms, 103);
        // Size: the oldest received across both nodes go first, not one of each in turn.
        let one = store.telemetry("b", None, 0, 1).unwrap();
        let size = wedge_proto::encode(&one[0]).len() as u64;
        store.prune_telemetry(0, 10 * size).unwrap();
        let a: Vec<u64> = store
            .telemetry("a", None, 0, 100)
            .unwrap()
            .iter()
            .map(|s| s.received_ms)
            .collect();
        let b: Vec<u64> = store
            .telemetry("b", None, 0, 100)
            .unwrap()
            .iter()
            .map(|s| s.received_ms)
            .collect();
        assert_eq!(a, [108, 109]);
        assert_eq!(b, [107, 108, 109, 110, 111, 112, 113, 114]);
        // Pruned records are still known: re-sent, they are duplicates.
        let o = store.ingest_telemetry("a", &big(1, 1..=11), 200).unwrap();
        assert_eq!((o.upto, o.stored, o.duplicates), (11, 1, 10));
    }

    #[test]
    fn telemetry_from_before_epochs_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let old = db.open_tree(LEGACY_RECORDS).unwrap();
            for seq in [1u64, 2] {
                old.insert(node_key("n", seq), wedge_proto::encode(&rec(seq)))
                    .unwrap();
            }
            db.open_tree(LEGACY_MARKS)
                .unwrap()
                .insert("n", &2u64.to_be_bytes())
                .unwrap();
            db.flush().unwrap();
        }
        let store = super::super::tests::reopen(dir.path());
        let all = store.telemetry("n", None, 0, 10).unwrap();
        assert_eq!(node_seqs(&all), [(0, 1), (0, 2)]);
        // An old node (epoch 0) re-sending is recognised; its next record is stored next.
        let o = store
            .ingest_telemetry("n", &batch(0, 0, &[2, 3]), 5)
            .unwrap();
        assert_eq!((o.upto, o.stored, o.duplicates), (3, 1, 1));
        assert_eq!(store.telemetry("n", None, 2, 10).unwrap()[0].seq, 3);
    }
}
