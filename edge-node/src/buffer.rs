//! The telemetry buffer: records modules emit, kept on disk until they are delivered.
//!
//! Each record gets the next per-node sequence number when it is appended; the sequence
//! survives restarts (it continues after the highest stored key). The buffer is bounded by
//! a byte quota: when full, the oldest records are dropped and counted.
//!
//! This is the simple first version: durable append, bounds and reads. Delivery to the
//! control plane with end-to-end acknowledgement builds on it.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use wedge_shared::messages::TelemetryRecord;
use wedge_shared::topics::validate_id;

/// Largest payload of one record.
pub const MAX_RECORD_PAYLOAD: usize = 64 * 1024;

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
}

impl State {
    fn forget(&mut self, size: usize) {
        self.records = self.records.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(size as u64);
    }
}

/// The buffer. Cheap to clone; safe to use from module threads.
#[derive(Clone)]
pub struct Buffer {
    tree: sled::Tree,
    quota: u64,
    policy: FullPolicy,
    state: Arc<Mutex<State>>,
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
    pub(crate) fn open(tree: sled::Tree, quota: u64, policy: FullPolicy) -> Result<Self, Error> {
        let next_seq = match tree.last()? {
            Some((k, _)) => seq_of(&k) + 1,
            None => 1,
        };
        let (mut records, mut bytes) = (0, 0);
        for item in tree.iter() {
            let (_, v) = item?;
            records += 1;
            bytes += v.len() as u64;
        }
        Ok(Self {
            tree,
            quota,
            policy,
            state: Arc::new(Mutex::new(State {
                next_seq,
                records,
                bytes,
            })),
            dropped: Arc::new(AtomicU64::new(0)),
            appended: Arc::new(tokio::sync::Notify::new()),
        })
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
        if validate_id(stream).is_err() && stream != wedge_shared::messages::LOG_STREAM {
            return Err(Error::BadStream(stream.to_string()));
        }
        // One lock orders sequence numbers with their writes.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let seq = state.next_seq;
        let record = TelemetryRecord {
            seq,
            module: module.to_string(),
            stream: stream.to_string(),
            ts_ms,
            payload: payload.to_vec(),
        };
        let bytes = wedge_shared::encode(&record);
        let size = bytes.len() as u64;
        if self.policy == FullPolicy::RejectNew && state.bytes + size > self.quota {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Full { quota: self.quota });
        }
        while state.bytes + size > self.quota {
            let Some((k, v)) = self.tree.pop_min()? else {
                break;
            };
            let _ = k;
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

    /// Drops records emitted before `cutoff_ms` (a time-to-live), counting them as dropped.
    pub fn expire(&self, cutoff_ms: u64) -> Result<u64, Error> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut removed = 0;
        while let Some((k, v)) = self.tree.first()? {
            let record: TelemetryRecord = wedge_shared::decode(&v).map_err(|e| Error::Corrupt {
                seq: seq_of(&k),
                reason: e.to_string(),
            })?;
            if record.ts_ms >= cutoff_ms {
                break;
            }
            self.tree.remove(&k)?;
            state.forget(v.len());
            removed += 1;
        }
        self.dropped.fetch_add(removed, Ordering::Relaxed);
        Ok(removed)
    }

    /// Deletes every record up to and including `upto` (they are delivered).
    pub fn delete_upto(&self, upto: u64) -> Result<u64, Error> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut removed = 0;
        while let Some((k, v)) = self.tree.first()? {
            if seq_of(&k) > upto {
                break;
            }
            self.tree.remove(&k)?;
            state.forget(v.len());
            removed += 1;
        }
        Ok(removed)
    }

    /// The lowest sequence number still held (the next one to be assigned when empty).
    pub fn first_available(&self) -> Result<u64, Error> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Ok(match self.tree.first()? {
            Some((k, _)) => seq_of(&k),
            None => state.next_seq,
        })
    }

    /// Records after `after`, at most `max_records` and about `max_bytes` of encoding
    /// (at least one record when there is one).
    pub fn batch(
        &self,
        after: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<TelemetryRecord>, Error> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for item in self.tree.range((after + 1).to_be_bytes()..) {
            let (k, v) = item?;
            if !out.is_empty() && (out.len() >= max_records || bytes + v.len() > max_bytes) {
                break;
            }
            bytes += v.len();
            out.push(wedge_shared::decode(&v).map_err(|e| Error::Corrupt {
                seq: seq_of(&k),
                reason: e.to_string(),
            })?);
        }
        Ok(out)
    }

    /// The buffer's state for the node's heartbeat.
    pub fn status(&self, now_ms: u64) -> wedge_shared::messages::BufferStatus {
        let (pending, bytes) = self.pending();
        let oldest_age_ms = self
            .tree
            .first()
            .ok()
            .flatten()
            .and_then(|(_, v)| wedge_shared::decode::<TelemetryRecord>(&v).ok())
            .map_or(0, |r| now_ms.saturating_sub(r.ts_ms));
        wedge_shared::messages::BufferStatus {
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
            out.push(wedge_shared::decode(&v).map_err(|e| Error::Corrupt {
                seq: seq_of(&k),
                reason: e.to_string(),
            })?);
        }
        Ok(out)
    }

    /// (records, bytes) waiting.
    pub fn pending(&self) -> (u64, u64) {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (state.records, state.bytes)
    }

    /// Records dropped to stay within the quota since the node started.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
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

    fn open(dir: &std::path::Path, quota: u64) -> Buffer {
        let db = sled::Config::new().path(dir).open().unwrap();
        Buffer::open(
            db.open_tree("telemetry").unwrap(),
            quota,
            FullPolicy::DropOldest,
        )
        .unwrap()
    }

    #[test]
    fn sequences_continue_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = open(dir.path(), 1 << 20);
            assert_eq!(b.append("m", "s", 1, b"a").unwrap(), 1);
            assert_eq!(b.append("m", "s", 2, b"b").unwrap(), 2);
        }
        let b = open(dir.path(), 1 << 20);
        assert_eq!(b.append("m", "s", 3, b"c").unwrap(), 3);
        let all = b.read(0, 10).unwrap();
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(b.read(2, 10).unwrap()[0].payload, b"c");
        assert_eq!(b.pending().0, 3);
    }

    #[test]
    fn batches_and_deletes_what_is_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let b = open(dir.path(), 1 << 20);
        assert_eq!(b.first_available().unwrap(), 1);
        for i in 0..10u8 {
            b.append("m", "s", u64::from(i), &[i; 100]).unwrap();
        }
        let batch = b.batch(0, 4, 1 << 20).unwrap();
        assert_eq!(
            batch.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        let small = b.batch(4, 100, 250).unwrap();
        assert_eq!(small.len(), 1, "byte cap, but never an empty batch");
        assert_eq!(b.delete_upto(4).unwrap(), 4);
        assert_eq!(b.first_available().unwrap(), 5);
        assert_eq!(b.pending().0, 6);
        assert_eq!(b.status(1_000).oldest_age_ms, 1_000 - 4);
        b.delete_upto(100).unwrap();
        assert_eq!(b.first_available().unwrap(), 11);
        assert_eq!(b.pending(), (0, 0));
    }

    #[test]
    fn reject_new_policy_and_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let b = Buffer::open(db.open_tree("t").unwrap(), 400, FullPolicy::RejectNew).unwrap();
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
    }

    #[test]
    fn full_buffer_drops_oldest_and_refuses_poison() {
        let dir = tempfile::tempdir().unwrap();
        let b = open(dir.path(), 400);
        for i in 0..20u8 {
            b.append("m", "s", 0, &[i; 40]).unwrap();
        }
        assert!(b.dropped() > 0);
        let (n, bytes) = b.pending();
        assert!(bytes <= 400 && n < 20);
        assert_eq!(b.read(0, 100).unwrap().last().unwrap().seq, 20);
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
