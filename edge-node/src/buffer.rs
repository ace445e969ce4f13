//! The telemetry buffer: records modules emit, kept on disk until they are delivered.
//!
//! **Identity of a record.** Each record is numbered `(epoch, seq)`. `seq` is the buffer's
//! position: it increases by one per record and never goes back within a store, because
//! the highest number issued (the high-water mark) is kept in the `meta` tree, not derived
//! from the records still held (an empty buffer is the normal state once everything is
//! delivered). The *epoch* is a random number drawn each time the store is opened and kept
//! beside the position where it starts. The control plane de-duplicates by
//! `(node, epoch, seq)`, so nothing a node sends after a restart, a wiped data directory or
//! a restore from an old backup can be mistaken for something it stored before: those are
//! the cases where a number could be issued twice (an old backup's high-water mark is old),
//! and each of them opens the store again, so a new epoch. The same holds after a crash
//! that lost writes sled had not yet flushed: those records were never sent (below).
//!
//! **Only durable records leave.** Appends are written by sled and flushed by its 10 ms
//! group commit; [`Buffer::sync`] flushes on demand and advances the *durable* mark to the
//! last position it covered. [`Buffer::batch`] returns records up to that mark only, so a
//! record the control plane acknowledged can never vanish in a power loss and be replaced
//! by another under the same number.
//!
//! **Bounded.** A byte quota: when full, the oldest records are dropped (or the new one is
//! refused) and counted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use wedge_proto::messages::{TelemetryBatch, TelemetryRecord};

/// Largest payload of one record.
pub const MAX_RECORD_PAYLOAD: usize = 64 * 1024;

/// The epoch of records buffered before epochs existed (the control plane keeps their
/// mark under the same number).
pub const LEGACY_EPOCH: u64 = 0;

const HWM_KEY: &[u8] = b"hwm";
const EPOCH_PREFIX: &[u8] = b"epoch/";

/// What a full buffer does with a new record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FullPolicy {
    /// Drop the oldest records to make room (the newest data is usually worth most).
    #[default]
    DropOldest,
    /// Refuse the new record: `emit` fails and the module decides.
    RejectNew,
}

/// Why a record was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the telemetry buffer is full ({quota} bytes)")]
    Full { quota: u64 },
    #[error("record of {size} bytes exceeds the limit of {MAX_RECORD_PAYLOAD}")]
    TooLarge { size: usize },
    #[error("stream name {0:?}: letters, digits, '.', '_' and '-' only, 1 to 128 of them")]
    BadStream(String),
    #[error("telemetry store: {0}")]
    Store(#[from] sled::Error),
    #[error("stored record {seq} is unreadable: {reason}")]
    Corrupt { seq: u64, reason: String },
}

#[derive(Debug)]
struct State {
    next_seq: u64,
    /// Records held and their encoded bytes, kept here because counting a sled tree walks
    /// every key and the heartbeat asks on every beat.
    records: u64,
    bytes: u64,
    /// Epochs by the position where each starts (the last one is this run's).
    epochs: BTreeMap<u64, u64>,
}

impl State {
    fn forget(&mut self, size: usize) {
        self.records = self.records.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(size as u64);
    }

    /// (start, epoch) of the epoch holding position `seq`.
    fn epoch_of(&self, seq: u64) -> (u64, u64) {
        self.epochs
            .range(..=seq)
            .next_back()
            .map_or((1, LEGACY_EPOCH), |(s, e)| (*s, *e))
    }

    /// The last position of the epoch starting at `start`.
    fn epoch_end(&self, start: u64) -> u64 {
        self.epochs
            .range(start + 1..)
            .next()
            .map_or(self.next_seq - 1, |(s, _)| s - 1)
    }
}

/// The buffer. Cheap to clone; safe to use from module threads.
#[derive(Clone)]
pub struct Buffer {
    tree: sled::Tree,
    meta: sled::Tree,
    quota: u64,
    policy: FullPolicy,
    state: Arc<Mutex<State>>,
    /// Every position up to here is on disk.
    durable: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    appended: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("quota", &self.quota)
            .finish()
    }
}

impl Buffer {
    /// Opens the buffer in `tree` with its bookkeeping in `meta`, and starts a new epoch.
    pub(crate) fn open(
        tree: sled::Tree,
        meta: sled::Tree,
        quota: u64,
        policy: FullPolicy,
    ) -> Result<Self, Error> {
        let stored_hwm = meta.get(HWM_KEY)?.map_or(0, |v| seq_of(&v));
        let last = tree.last()?.map_or(0, |(k, _)| seq_of(&k));
        let hwm = stored_hwm.max(last);
        let first_held = tree.first()?.map(|(k, _)| seq_of(&k));
        let mut epochs = BTreeMap::new();
        for item in meta.scan_prefix(EPOCH_PREFIX) {
            let (k, v) = item?;
            epochs.insert(seq_of(&k), seq_of(&v));
        }
        // Records from before epochs were kept: the control plane knows them as epoch 0.
        if let Some(first) = first_held
            && epochs.range(..=first).next_back().is_none()
        {
            epochs.insert(first, LEGACY_EPOCH);
            meta.insert(epoch_key(first), &LEGACY_EPOCH.to_be_bytes())?;
        }
        // Forget epochs that no longer hold records.
        let keep_from = first_held
            .and_then(|f| epochs.range(..=f).next_back().map(|(s, _)| *s))
            .unwrap_or(u64::MAX);
        for start in epochs
            .keys()
            .copied()
            .filter(|s| *s < keep_from)
            .collect::<Vec<_>>()
        {
            epochs.remove(&start);
            meta.remove(epoch_key(start))?;
        }
        // This run's epoch: random and never 0 (the legacy epoch).
        let epoch = rand::random::<u64>().max(1);
        let start = hwm + 1;
        epochs.insert(start, epoch);
        meta.insert(epoch_key(start), &epoch.to_be_bytes())?;
        meta.insert(HWM_KEY, &hwm.to_be_bytes())?;
        meta.flush()?;
        let (mut records, mut bytes) = (0, 0);
        for item in tree.iter() {
            let (_, v) = item?;
            records += 1;
            bytes += v.len() as u64;
        }
        Ok(Self {
            tree,
            meta,
            quota,
            policy,
            state: Arc::new(Mutex::new(State {
                next_seq: start,
                records,
                bytes,
                epochs,
            })),
            // What the tree held at open was read back from disk.
            durable: Arc::new(AtomicU64::new(hwm)),
            dropped: Arc::new(AtomicU64::new(0)),
            appended: Arc::new(tokio::sync::Notify::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Poisoning only follows a panic elsewhere; the counters are still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This run's epoch.
    pub fn epoch(&self) -> u64 {
        let state = self.lock();
        state.epoch_of(state.next_seq).1
    }

    /// Records the high-water mark before records are deleted, so an emptied buffer still
    /// knows where numbering goes on after a restart.
    fn persist_hwm(&self, state: &State) -> Result<(), Error> {
        self.meta
            .insert(HWM_KEY, &(state.next_seq - 1).to_be_bytes())?;
        Ok(())
    }

    /// Appends a record; returns its sequence number.
    pub fn append(
        &self,
        module: &str,
        stream: &str,
        ts_ms: u64,
        payload: &[u8],
    ) -> Result<u64, Error> {
        if payload.len() > MAX_RECORD_PAYLOAD {
            return Err(Error::TooLarge {
                size: payload.len(),
            });
        }
        // The node's own `$log` stream is the one name outside the id alphabet (modules
        // cannot emit on it: the host refuses `$` streams before they get here).
        if !wedge_proto::rules::is_stored_stream(stream) {
            return Err(Error::BadStream(stream.to_string()));
        }
        // One lock orders sequence numbers with their writes.
        let mut state = self.lock();
        let seq = state.next_seq;
        let record = TelemetryRecord {
            seq,
            module: module.to_string(),
            stream: stream.to_string(),
            ts_ms,
            payload: payload.to_vec(),
        };
        let bytes = wedge_proto::encode(&record);
        let size = bytes.len() as u64;
        if self.policy == FullPolicy::RejectNew && state.bytes + size > self.quota {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Full { quota: self.quota });
        }
        if state.bytes + size > self.quota {
            self.persist_hwm(&state)?;
        }
        while state.bytes + size > self.quota {
            let Some((_, v)) = self.tree.pop_min()? else {
                break;
            };
            state.forget(v.len());
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.tree.insert(seq.to_be_bytes(), bytes)?;
        state.next_seq += 1;
        state.records += 1;
        state.bytes += size;
        drop(state);
        self.appended.notify_one();
        Ok(seq)
    }

    /// Resolves after the next append (or at once if one happened since the last wait).
    pub async fn appended(&self) {
        self.appended.notified().await;
    }

    /// The last position issued.
    pub fn last_issued(&self) -> u64 {
        self.lock().next_seq - 1
    }

    /// Every position up to here is on disk (and may be sent).
    pub fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Flushes what was appended so far and advances the durable mark over it.
    pub async fn sync(&self) -> Result<u64, Error> {
        let upto = self.last_issued();
        if self.durable() >= upto {
            return Ok(upto);
        }
        self.tree.flush_async().await?;
        self.durable.fetch_max(upto, Ordering::AcqRel);
        Ok(upto)
    }

    /// Drops records emitted before `cutoff_ms` (a time-to-live), counting them as dropped.
    pub fn expire(&self, cutoff_ms: u64) -> Result<u64, Error> {
        let mut state = self.lock();
        let mut removed = 0;
        while let Some((k, v)) = self.tree.first()? {
            let record: TelemetryRecord = wedge_proto::decode(&v).map_err(|e| Error::Corrupt {
                seq: seq_of(&k),
                reason: e.to_string(),
            })?;
            if record.ts_ms >= cutoff_ms {
                break;
            }
            if removed == 0 {
                self.persist_hwm(&state)?;
            }
            self.tree.remove(&k)?;
            state.forget(v.len());
            removed += 1;
        }
        self.dropped.fetch_add(removed, Ordering::Relaxed);
        Ok(removed)
    }

    /// The control plane stored every record of `epoch` up to `upto`. When that epoch is
    /// the oldest one held, deletes those records and returns the position up to which
    /// everything is delivered; otherwise (an acknowledgement for a later epoch while an
    /// earlier one still waits, or a stale one) changes nothing.
    pub fn acknowledge(&self, epoch: u64, upto: u64) -> Result<Option<u64>, Error> {
        let mut state = self.lock();
        let Some((k, _)) = self.tree.first()? else {
            return Ok(None);
        };
        let first = seq_of(&k);
        let (start, held_epoch) = state.epoch_of(first);
        if held_epoch != epoch {
            return Ok(None);
        }
        // Never past the epoch's end nor past what may have been sent.
        let upto = upto.min(state.epoch_end(start)).min(self.durable());
        if upto < first {
            return Ok(None);
        }
        self.persist_hwm(&state)?;
        while let Some((k, v)) = self.tree.first()? {
            if seq_of(&k) > upto {
                break;
            }
            self.tree.remove(&k)?;
            state.forget(v.len());
        }
        Ok(Some(upto))
    }

    /// The lowest sequence number still held (the next one to be assigned when empty).
    pub fn first_available(&self) -> Result<u64, Error> {
        let state = self.lock();
        Ok(match self.tree.first()? {
            Some((k, _)) => seq_of(&k),
            None => state.next_seq,
        })
    }

    /// Durable records after position `after`, all of one epoch, at most `max_records`
    /// and about `max_bytes` of encoding (at least one record when there is one).
    pub fn batch(
        &self,
        after: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Option<TelemetryBatch>, Error> {
        let durable = self.durable();
        if after >= durable {
            return Ok(None);
        }
        let first_held = self.first_available()?;
        let (epoch_start, epoch, epoch_end) = {
            let state = self.lock();
            let Some((k, _)) = self
                .tree
                .range((after + 1).to_be_bytes()..)
                .next()
                .transpose()?
            else {
                return Ok(None);
            };
            let (start, epoch) = state.epoch_of(seq_of(&k));
            (start, epoch, state.epoch_end(start).min(durable))
        };
        let mut records = Vec::new();
        let mut bytes = 0;
        for item in self
            .tree
            .range((after + 1).to_be_bytes()..=epoch_end.to_be_bytes())
        {
            let (k, v) = item?;
            if !records.is_empty() && (records.len() >= max_records || bytes + v.len() > max_bytes)
            {
                break;
            }
            bytes += v.len();
            records.push(wedge_proto::decode(&v).map_err(|e| Error::Corrupt {
                seq: seq_of(&k),
                reason: e.to_string(),
            })?);
        }
        if records.is_empty() {
            return Ok(None);
        }
        Ok(Some(TelemetryBatch {
            epoch,
            epoch_start,
            first_available: first_held.max(epoch_start),
            records,
        }))
    }

    /// The buffer's state for the node's heartbeat.
    pub fn status(&self, now_ms: u64) -> wedge_proto::messages::BufferStatus {
        let (pending, bytes) = self.pending();
        let oldest_age_ms = self
            .tree
            .first()
            .ok()
            .flatten()
            .and_then(|(_, v)| wedge_proto::decode::<TelemetryRecord>(&v).ok())
            .map_or(0, |r| now_ms.saturating_sub(r.ts_ms));
        wedge_proto::messages::BufferStatus {
            pending,
            bytes,
            oldest_age_ms,
            dropped: self.dropped(),
            quota_bytes: self.quota,
        }
    }

    /// Up to `limit` records with a sequence number above `after`, in order.
    pub fn read(&self, after: u64, limit: usize) -> Result<Vec<TelemetryRecord>, Error> {
        let mut out = Vec::new();
        for item in self.tree.range((after + 1).to_be_bytes()..).take(limit) {
            let (k, v) = item?;
            out.push(wedge_proto::decode(&v).map_err(|e| Error::Corrupt {
                seq: seq_of(&k),
                reason: e.to_string(),
            })?);
        }
        Ok(out)
    }

    /// (records, bytes) waiting.
    pub fn pending(&self) -> (u64, u64) {
        let state = self.lock();
        (state.records, state.bytes)
    }

    /// Records dropped to stay within the quota since the node started.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn epoch_key(start: u64) -> Vec<u8> {
    let mut k = EPOCH_PREFIX.to_vec();
    k.extend_from_slice(&start.to_be_bytes());
    k
}

fn seq_of(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[8 - n..].copy_from_slice(&key[key.len() - n..]);
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_db(db: &sled::Db, quota: u64, policy: FullPolicy) -> Buffer {
        Buffer::open(
            db.open_tree("telemetry").unwrap(),
            db.open_tree("telemetry_meta").unwrap(),
            quota,
            policy,
        )
        .unwrap()
    }

    /// A buffer over `db`, opened as a node does at start. Tests "restart" by opening it
    /// again on the same database: sled releases its file lock asynchronously after a drop,
    /// so reopening the directory in the same process races with its flusher thread.
    fn open(db: &sled::Db, quota: u64) -> Buffer {
        open_db(db, quota, FullPolicy::DropOldest)
    }

    fn temp_db(dir: &tempfile::TempDir) -> sled::Db {
        sled::Config::new().path(dir.path()).open().unwrap()
    }

    fn sync(b: &Buffer) -> u64 {
        block_on(b.sync()).unwrap()
    }

    /// Runs a future to completion on a throwaway runtime (the buffer's API is sync
    /// except for `sync`).
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn seqs(batch: &TelemetryBatch) -> Vec<u64> {
        batch.records.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn sequences_continue_after_reopen_even_when_everything_was_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let db = temp_db(&dir);
        let first_epoch;
        {
            let b = open(&db, 1 << 20);
            first_epoch = b.epoch();
            assert_eq!(b.append("m", "s", 1, b"a").unwrap(), 1);
            assert_eq!(b.append("m", "s", 2, b"b").unwrap(), 2);
            sync(&b);
            // Delivered and deleted: the buffer is empty, the normal state.
            assert_eq!(b.acknowledge(first_epoch, 2).unwrap(), Some(2));
            assert_eq!(b.pending(), (0, 0));
        }
        let b = open(&db, 1 << 20);
        assert_ne!(b.epoch(), first_epoch, "every open starts a new epoch");
        assert_ne!(b.epoch(), LEGACY_EPOCH);
        assert_eq!(b.append("m", "s", 3, b"c").unwrap(), 3, "never 1 again");
        sync(&b);
        let batch = b.batch(0, 10, 1 << 20).unwrap().unwrap();
        assert_eq!((batch.epoch, batch.epoch_start), (b.epoch(), 3));
        assert_eq!(seqs(&batch), [3]);
    }

    #[test]
    fn only_durable_records_are_batched() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new()
            .path(dir.path())
            // No background flush: only `sync` makes records durable here.
            .flush_every_ms(None)
            .open()
            .unwrap();
        let b = open_db(&db, 1 << 20, FullPolicy::DropOldest);
        b.append("m", "s", 1, b"a").unwrap();
        assert_eq!(b.batch(0, 10, 1 << 20).unwrap(), None, "not flushed yet");
        assert_eq!(sync(&b), 1);
        b.append("m", "s", 2, b"b").unwrap();
        let batch = b.batch(0, 10, 1 << 20).unwrap().unwrap();
        assert_eq!(seqs(&batch), [1], "2 is not on disk yet");
        // An acknowledgement cannot reach past what may have been sent.
        assert_eq!(b.acknowledge(b.epoch(), 2).unwrap(), Some(1));
        assert_eq!(b.pending().0, 1);
    }

    #[test]
    fn batches_stay_within_one_epoch_and_acks_free_the_oldest_epoch_first() {
        let dir = tempfile::tempdir().unwrap();
        let db = temp_db(&dir);
        let old_epoch;
        {
            let b = open(&db, 1 << 20);
            old_epoch = b.epoch();
            for i in 0..3u8 {
                b.append("m", "s", 0, &[i]).unwrap();
            }
            sync(&b);
        }
        let b = open(&db, 1 << 20);
        let new_epoch = b.epoch();
        for i in 0..2u8 {
            b.append("m", "s", 0, &[i]).unwrap();
        }
        sync(&b);
        let first = b.batch(0, 100, 1 << 20).unwrap().unwrap();
        assert_eq!(
            (first.epoch, first.epoch_start, first.first_available),
            (old_epoch, 1, 1)
        );
        assert_eq!(seqs(&first), [1, 2, 3]);
        let second = b.batch(3, 100, 1 << 20).unwrap().unwrap();
        assert_eq!(
            (second.epoch, second.epoch_start, second.first_available),
            (new_epoch, 4, 4)
        );
        assert_eq!(seqs(&second), [4, 5]);
        // The new epoch's ack while the old one waits changes nothing.
        assert_eq!(b.acknowledge(new_epoch, 5).unwrap(), None);
        // An old epoch's ack cannot delete the next epoch's records.
        assert_eq!(b.acknowledge(old_epoch, 99).unwrap(), Some(3));
        assert_eq!(b.first_available().unwrap(), 4);
        assert_eq!(b.acknowledge(old_epoch, 99).unwrap(), None, "stale");
        assert_eq!(b.acknowledge(new_epoch, 4).unwrap(), Some(4));
        assert_eq!(b.pending().0, 1);
        // Reopened: the emptied old epoch is forgotten, the held record keeps its epoch.
        drop(b);
        let b = open(&db, 1 << 20);
        let batch = b.batch(0, 100, 1 << 20).unwrap().unwrap();
        assert_eq!(
            (batch.epoch, batch.epoch_start, batch.first_available),
            (new_epoch, 4, 5)
        );
    }

    #[test]
    fn records_from_before_epochs_are_the_legacy_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        {
            // What an older node left: records keyed by position, no bookkeeping.
            let tree = db.open_tree("telemetry").unwrap();
            for seq in [7u64, 8] {
                let r = TelemetryRecord {
                    seq,
                    module: "m".into(),
                    stream: "s".into(),
                    ts_ms: 0,
                    payload: vec![],
                };
                tree.insert(seq.to_be_bytes(), wedge_proto::encode(&r))
                    .unwrap();
            }
        }
        let b = open_db(&db, 1 << 20, FullPolicy::DropOldest);
        let batch = b.batch(0, 100, 1 << 20).unwrap().unwrap();
        assert_eq!((batch.epoch, batch.first_available), (LEGACY_EPOCH, 7));
        assert_eq!(b.append("m", "s", 0, b"x").unwrap(), 9);
    }

    #[test]
    fn reject_new_policy_and_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let b = open_db(&db, 400, FullPolicy::RejectNew);
        let mut accepted = 0;
        for i in 0..20u64 {
            if b.append("m", "s", i, &[0; 40]).is_ok() {
                accepted += 1;
            }
        }
        assert!(accepted > 0 && accepted < 20);
        assert_eq!(b.dropped(), 20 - accepted);
        assert!(matches!(
            b.append("m", "s", 0, &[0; 40]),
            Err(Error::Full { .. })
        ));
        // The oldest records survive under reject-new.
        assert_eq!(b.read(0, 1).unwrap()[0].seq, 1);
        let before = b.dropped();
        assert_eq!(b.expire(2).unwrap(), 2, "records with ts 0 and 1 expire");
        assert_eq!(b.dropped(), before + 2);
        assert_eq!(b.read(0, 1).unwrap()[0].ts_ms, 2);
        // Everything expires; numbering still goes on after a reopen.
        let last = b.last_issued();
        b.expire(u64::MAX).unwrap();
        drop(b);
        let b = open_db(&db, 400, FullPolicy::RejectNew);
        assert_eq!(b.append("m", "s", 0, b"x").unwrap(), last + 1);
    }

    #[test]
    fn full_buffer_drops_oldest_and_refuses_poison() {
        let dir = tempfile::tempdir().unwrap();
        let db = temp_db(&dir);
        let b = open(&db, 400);
        for i in 0..20u8 {
            b.append("m", "s", 0, &[i; 40]).unwrap();
        }
        assert!(b.dropped() > 0);
        let (n, bytes) = b.pending();
        assert!(bytes <= 400 && n < 20);
        assert_eq!(b.read(0, 100).unwrap().last().unwrap().seq, 20);
        sync(&b);
        let batch = b.batch(0, 100, 1 << 20).unwrap().unwrap();
        assert_eq!(
            batch.first_available,
            20 - n + 1,
            "dropped records are reported"
        );
        assert!(matches!(
            b.append("m", "s", 0, &vec![0; MAX_RECORD_PAYLOAD + 1]),
            Err(Error::TooLarge { .. })
        ));
        assert!(matches!(
            b.append("m", "bad stream", 0, b"x"),
            Err(Error::BadStream(_))
        ));
    }
}
