//! Durable state of the control plane, in sled.
//!
//! One tree per kind of record; records are JSON (readable with any sled tool, and the
//! API speaks JSON anyway), blobs are raw bytes keyed by digest. Callers see typed methods
//! and [`Error`], never sled types, so the engine can be replaced.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use wedge_shared::Digest;
use wedge_shared::messages::{ModuleSpec, ModuleStatus};

use crate::rollout::plan::Rollout;
use crate::rollout::strategy::Strategy;

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage engine: {0}")]
    Engine(#[from] sled::Error),
    #[error("corrupt record {key} in {tree}: {source}")]
    Corrupt {
        tree: &'static str,
        key: String,
        source: serde_json::Error,
    },
    #[error("corrupt record {key} in {tree}: {reason}")]
    CorruptRecord {
        tree: &'static str,
        key: String,
        reason: String,
    },
}

/// What storing a telemetry batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Every record of the node up to here is stored: the acknowledgement.
    pub upto: u64,
    pub stored: u64,
    pub duplicates: u64,
    /// Sequence numbers given up on because the node no longer has them.
    pub lost: u64,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An uploaded module.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleRecord {
    pub name: String,
    pub version: String,
    pub digest: Digest,
    pub size: u64,
    pub uploaded_at_ms: u64,
    /// The publisher's signature, verified at upload.
    #[serde(default)]
    pub signature: Option<wedge_shared::signing::ModuleSignature>,
}

/// Which nodes a deployment targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// These node ids.
    Nodes(Vec<String>),
    /// Every node whose labels include all of these.
    Labels(BTreeMap<String, String>),
}

impl Target {
    /// Whether a node with this id and these labels is targeted.
    pub fn selects(&self, node_id: &str, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Self::Nodes(ids) => ids.iter().any(|id| id == node_id),
            Self::Labels(want) => want.iter().all(|(k, v)| labels.get(k) == Some(v)),
        }
    }
}

/// A module deployed, under a name, to a set of nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub name: String,
    /// Increases each time a deployment with this name is posted.
    pub revision: u64,
    pub module: ModuleRecord,
    pub target: Target,
    pub subscriptions: Vec<String>,
    /// The module's configuration as JSON text.
    pub config: String,
    #[serde(default)]
    pub publish_prefixes: Vec<String>,
    #[serde(default)]
    pub tick_ms: Option<u64>,
    #[serde(default)]
    pub limits: wedge_shared::messages::Limits,
    #[serde(default)]
    pub strategy: Strategy,
    pub created_at_ms: u64,
}

/// Whether a node is reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    Online,
    Offline,
}

/// What the control plane knows about a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    pub liveness: Liveness,
    /// Why it is offline, when it is.
    pub reason: Option<String>,
    pub since_ms: u64,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub labels: BTreeMap<String, String>,
    pub arch: String,
    pub version: String,
    pub desired_generation: u64,
    pub applied_generation: u64,
    pub modules: Vec<ModuleStatus>,
    #[serde(default)]
    pub buffer: wedge_shared::messages::BufferStatus,
    #[serde(default)]
    pub resources: wedge_shared::messages::Resources,
    /// What is wrong with the node while it is online (empty: healthy).
    #[serde(default)]
    pub problems: Vec<String>,
    /// When `problems` last went from empty to not or back.
    #[serde(default)]
    pub problems_since_ms: u64,
}

/// The desired state last computed for a node.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DesiredRecord {
    pub generation: u64,
    pub modules: Vec<ModuleSpec>,
}

const MODULES: &str = "modules";
const BLOBS: &str = "blobs";
const DEPLOYMENTS: &str = "deployments";
const NODES: &str = "nodes";
const DESIRED: &str = "desired";
const REVISIONS: &str = "revisions";
const ROLLOUTS: &str = "rollouts";
const TELEMETRY: &str = "telemetry";
const TELEMETRY_MARKS: &str = "telemetry_marks";

fn mark_of(v: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = v.len().min(8);
    b[..n].copy_from_slice(&v[..n]);
    u64::from_be_bytes(b)
}

/// Key of a node's record: the node id, a 0 byte (ids never contain one), the sequence
/// number big-endian, so a node's records sort by sequence.
fn telemetry_key(node: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(node.len() + 9);
    k.extend_from_slice(node.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The control plane's store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

/// Key of a deployment revision: name, a 0 byte, the revision zero-padded (sorts by
/// revision).
fn revision_key(name: &str, revision: u64) -> String {
    format!("{name}\0{revision:020}")
}

fn module_key(name: &str, version: &str) -> String {
    format!("{name}@{version}")
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let db = sled::Config::new()
            .path(dir)
            // sled's default cache is 1 GB; the control plane's hot set is small.
            .cache_capacity(64 * 1024 * 1024)
            .open()?;
        Ok(Self { db })
    }

    fn get<T: DeserializeOwned>(&self, tree: &'static str, key: &str) -> Result<Option<T>> {
        let Some(bytes) = self.db.open_tree(tree)?.get(key)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::Corrupt {
                tree,
                key: key.to_string(),
                source,
            })
    }

    fn put<T: Serialize>(&self, tree: &'static str, key: &str, value: &T) -> Result<()> {
        // Serializing our own record types to JSON cannot fail (string keys only).
        let bytes = serde_json::to_vec(value).expect("records serialize to JSON");
        self.db.open_tree(tree)?.insert(key, bytes)?;
        Ok(())
    }

    fn all<T: DeserializeOwned>(&self, tree: &'static str) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for item in self.db.open_tree(tree)?.iter() {
            let (key, bytes) = item?;
            out.push(
                serde_json::from_slice(&bytes).map_err(|source| Error::Corrupt {
                    tree,
                    key: String::from_utf8_lossy(&key).into_owned(),
                    source,
                })?,
            );
        }
        Ok(out)
    }

    /// Stores a module and its blob. The blob is written first: a record never points at
    /// a missing blob.
    pub fn put_module(&self, record: &ModuleRecord, blob: &[u8]) -> Result<()> {
        self.db
            .open_tree(BLOBS)?
            .insert(record.digest.hex(), blob)?;
        self.put(MODULES, &module_key(&record.name, &record.version), record)?;
        self.db.flush()?;
        Ok(())
    }

    pub fn module(&self, name: &str, version: &str) -> Result<Option<ModuleRecord>> {
        self.get(MODULES, &module_key(name, version))
    }

    /// A module record with this digest (the first by name, if several share it).
    pub fn module_by_digest(&self, digest: &Digest) -> Result<Option<ModuleRecord>> {
        Ok(self.modules()?.into_iter().find(|m| m.digest == *digest))
    }

    pub fn modules(&self) -> Result<Vec<ModuleRecord>> {
        self.all(MODULES)
    }

    pub fn blob(&self, digest: &Digest) -> Result<Option<Vec<u8>>> {
        Ok(self
            .db
            .open_tree(BLOBS)?
            .get(digest.hex())?
            .map(|b| b.to_vec()))
    }

    /// Stores a deployment revision: as the deployment's latest and in its history.
    pub fn put_deployment(&self, record: &DeploymentRecord) -> Result<()> {
        self.put(
            REVISIONS,
            &revision_key(&record.name, record.revision),
            record,
        )?;
        self.put(DEPLOYMENTS, &record.name, record)?;
        self.db.flush()?;
        Ok(())
    }

    /// One revision of a deployment.
    pub fn revision(&self, name: &str, revision: u64) -> Result<Option<DeploymentRecord>> {
        if let Some(r) = self.get(REVISIONS, &revision_key(name, revision))? {
            return Ok(Some(r));
        }
        // Deployments stored before revisions were kept: the latest is all there is.
        Ok(self
            .deployment(name)?
            .filter(|d: &DeploymentRecord| d.revision == revision))
    }

    pub fn put_rollout(&self, name: &str, rollout: &Rollout) -> Result<()> {
        self.put(ROLLOUTS, name, rollout)
    }

    pub fn rollout(&self, name: &str) -> Result<Option<Rollout>> {
        self.get(ROLLOUTS, name)
    }

    pub fn deployment(&self, name: &str) -> Result<Option<DeploymentRecord>> {
        self.get(DEPLOYMENTS, name)
    }

    pub fn deployments(&self) -> Result<Vec<DeploymentRecord>> {
        self.all(DEPLOYMENTS)
    }

    pub fn put_node(&self, record: &NodeRecord) -> Result<()> {
        self.put(NODES, &record.id, record)
    }

    pub fn nodes(&self) -> Result<Vec<NodeRecord>> {
        self.all(NODES)
    }

    /// Stores desired states, then flushes once (a rollout step can change thousands).
    pub fn put_desired_many<'a>(
        &self,
        records: impl IntoIterator<Item = (&'a str, &'a DesiredRecord)>,
    ) -> Result<()> {
        for (node, record) in records {
            self.put(DESIRED, node, record)?;
        }
        self.db.flush()?;
        Ok(())
    }

    pub fn desired(&self, node: &str) -> Result<Option<DesiredRecord>> {
        self.get(DESIRED, node)
    }

    /// Stores a node's batch of telemetry durably and returns the highest sequence number
    /// up to which every record of the node is stored (the acknowledgement).
    ///
    /// Records already stored are left alone (de-duplication by (node, seq)); a record
    /// re-sent with other content is ignored too: the first write wins. Sequence numbers
    /// below `first_available` that were never stored were dropped by the node and are
    /// skipped, so the acknowledgement can move past them.
    pub fn ingest_telemetry(
        &self,
        node: &str,
        batch: &wedge_shared::messages::TelemetryBatch,
    ) -> Result<IngestOutcome> {
        let tree = self.db.open_tree(TELEMETRY)?;
        let marks = self.db.open_tree(TELEMETRY_MARKS)?;
        let mut stored = 0u64;
        let mut duplicates = 0u64;
        let mut mark = marks.get(node)?.map_or(0, |v| mark_of(&v));
        for record in &batch.records {
            // At or below the mark: stored before (and perhaps pruned by retention since).
            if record.seq <= mark {
                duplicates += 1;
                continue;
            }
            let key = telemetry_key(node, record.seq);
            let value = wedge_shared::encode(record);
            match tree.compare_and_swap(key, None as Option<&[u8]>, Some(value))? {
                Ok(()) => stored += 1,
                Err(_) => duplicates += 1,
            }
        }
        let skipped_to = batch.first_available.saturating_sub(1);
        let mut lost = 0;
        if mark < skipped_to {
            lost = skipped_to - mark;
            mark = skipped_to;
        }
        while tree.contains_key(telemetry_key(node, mark + 1))? {
            mark += 1;
        }
        marks.insert(node, &mark.to_be_bytes())?;
        // Durable before we acknowledge: the node deletes what we acknowledge.
        self.db.flush()?;
        Ok(IngestOutcome {
            upto: mark,
            stored,
            duplicates,
            lost,
        })
    }

    /// Retention: deletes records emitted before `cutoff_ms`, then, while the records
    /// take more than `max_bytes`, the oldest record of each node in turn. Returns how many
    /// were deleted. Each node's records are in sequence (so time) order, which lets the
    /// age pass stop at a node's first young record and jump to the next node.
    pub fn prune_telemetry(&self, cutoff_ms: u64, max_bytes: u64) -> Result<u64> {
        let tree = self.db.open_tree(TELEMETRY)?;
        let mut deleted = 0u64;
        let mut total = 0u64;
        let mut nodes: Vec<Vec<u8>> = Vec::new();
        let mut from: Vec<u8> = Vec::new();
        loop {
            let Some((k, v)) = tree.range(from.clone()..).next().transpose()? else {
                break;
            };
            let node_len = k.iter().position(|b| *b == 0).unwrap_or(k.len());
            let node = k[..node_len].to_vec();
            let record: Option<wedge_shared::messages::TelemetryRecord> =
                wedge_shared::decode(&v).ok();
            if record.is_none_or(|r| r.ts_ms < cutoff_ms) {
                tree.remove(&k)?;
                deleted += 1;
                from = k.to_vec();
                continue;
            }
            // This node's remaining records are younger: count them, go to the next node.
            let mut next = node.clone();
            next.push(1);
            let mut prefix = node.clone();
            prefix.push(0);
            for item in tree.range(prefix.clone()..next.clone()) {
                total += item?.1.len() as u64;
            }
            nodes.push(prefix);
            from = next;
        }
        'size: while total > max_bytes && !nodes.is_empty() {
            let mut removed_any = false;
            for prefix in &nodes {
                if total <= max_bytes {
                    break 'size;
                }
                if let Some((k, v)) = tree.scan_prefix(prefix).next().transpose()? {
                    tree.remove(&k)?;
                    total = total.saturating_sub(v.len() as u64);
                    deleted += 1;
                    removed_any = true;
                }
            }
            if !removed_any {
                break;
            }
        }
        if deleted > 0 {
            self.db.flush()?;
        }
        Ok(deleted)
    }

    /// A node's records with sequence numbers above `after`, in order, optionally of one
    /// stream only, at most `limit`.
    pub fn telemetry(
        &self,
        node: &str,
        stream: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<wedge_shared::messages::TelemetryRecord>> {
        let start = telemetry_key(node, after.saturating_add(1));
        let end = telemetry_key(node, u64::MAX);
        let tree = self.db.open_tree(TELEMETRY)?;
        Self::collect_telemetry(tree.range(start..=end), stream, limit)
    }

    /// The newest `limit` records of `node` (of `stream` if given), in sequence order.
    pub fn telemetry_newest(
        &self,
        node: &str,
        stream: Option<&str>,
        limit: usize,
    ) -> Result<Vec<wedge_shared::messages::TelemetryRecord>> {
        let start = telemetry_key(node, 0);
        let end = telemetry_key(node, u64::MAX);
        let tree = self.db.open_tree(TELEMETRY)?;
        let mut out = Self::collect_telemetry(tree.range(start..=end).rev(), stream, limit)?;
        out.reverse();
        Ok(out)
    }

    fn collect_telemetry(
        items: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
        stream: Option<&str>,
        limit: usize,
    ) -> Result<Vec<wedge_shared::messages::TelemetryRecord>> {
        let mut out = Vec::new();
        for item in items {
            let (k, v) = item?;
            let record: wedge_shared::messages::TelemetryRecord = wedge_shared::decode(&v)
                .map_err(|e| Error::CorruptRecord {
                    tree: TELEMETRY,
                    key: String::from_utf8_lossy(&k).into_owned(),
                    reason: e.to_string(),
                })?;
            if stream.is_none_or(|s| s == record.stream) {
                out.push(record);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Writes everything buffered to disk.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(name: &str, bytes: &[u8]) -> ModuleRecord {
        ModuleRecord {
            name: name.into(),
            version: "1".into(),
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
            uploaded_at_ms: 1,
            signature: None,
        }
    }

    #[test]
    fn modules_and_blobs_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let m = module("a", b"blob-a");
        {
            let store = Store::open(dir.path()).unwrap();
            store.put_module(&m, b"blob-a").unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.module("a", "1").unwrap(), Some(m.clone()));
        assert_eq!(store.module_by_digest(&m.digest).unwrap(), Some(m.clone()));
        assert_eq!(store.blob(&m.digest).unwrap().unwrap(), b"blob-a");
        assert_eq!(store.modules().unwrap().len(), 1);
        assert_eq!(store.module("a", "2").unwrap(), None);
    }

    #[test]
    fn telemetry_dedupes_and_acknowledges_contiguously() {
        use wedge_shared::messages::{TelemetryBatch, TelemetryRecord};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let rec = |seq: u64| TelemetryRecord {
            seq,
            module: "m".into(),
            stream: if seq.is_multiple_of(2) { "even" } else { "odd" }.into(),
            ts_ms: seq,
            payload: seq.to_string().into_bytes(),
        };
        let batch = |first_available, seqs: &[u64]| TelemetryBatch {
            first_available,
            records: seqs.iter().copied().map(rec).collect(),
        };
        let o = store.ingest_telemetry("n1", &batch(1, &[1, 2, 3])).unwrap();
        assert_eq!((o.upto, o.stored, o.duplicates), (3, 3, 0));
        // A gap: 5 arrives before 4.
        let o = store.ingest_telemetry("n1", &batch(1, &[5])).unwrap();
        assert_eq!(o.upto, 3);
        // The re-sent batch fills the gap; 5 is a duplicate.
        let o = store.ingest_telemetry("n1", &batch(1, &[4, 5])).unwrap();
        assert_eq!((o.upto, o.stored, o.duplicates), (5, 1, 1));
        // The node dropped 6..=9: the acknowledgement moves past them.
        let o = store.ingest_telemetry("n1", &batch(10, &[10])).unwrap();
        assert_eq!((o.upto, o.lost), (10, 4));
        // Another node's sequence is its own.
        assert_eq!(
            store.ingest_telemetry("n2", &batch(1, &[1])).unwrap().upto,
            1
        );

        let all = store.telemetry("n1", None, 0, 100).unwrap();
        assert_eq!(
            all.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 10]
        );
        let odd = store.telemetry("n1", Some("odd"), 1, 100).unwrap();
        assert_eq!(odd.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 5]);
        assert_eq!(store.telemetry("n1", None, 0, 2).unwrap().len(), 2);
        assert!(store.telemetry("n3", None, 0, 10).unwrap().is_empty());
        let newest: Vec<u64> = store
            .telemetry_newest("n1", None, 2)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        let all_seqs: Vec<u64> = all.iter().map(|r| r.seq).collect();
        assert_eq!(newest, all_seqs[all_seqs.len() - 2..]);
    }

    #[test]
    fn retention_by_age_then_size_keeps_acknowledgements() {
        use wedge_shared::messages::{TelemetryBatch, TelemetryRecord};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let batch = |seqs: std::ops::RangeInclusive<u64>| TelemetryBatch {
            first_available: 1,
            records: seqs
                .map(|seq| TelemetryRecord {
                    seq,
                    module: "m".into(),
                    stream: "s".into(),
                    ts_ms: seq * 10,
                    payload: vec![0; 100],
                })
                .collect(),
        };
        store.ingest_telemetry("a", &batch(1..=10)).unwrap();
        store.ingest_telemetry("b", &batch(1..=10)).unwrap();
        // Age: ts 10..=40 go on both nodes.
        assert_eq!(store.prune_telemetry(50, u64::MAX).unwrap(), 8);
        assert_eq!(store.telemetry("a", None, 0, 100).unwrap()[0].seq, 5);
        // Size: down to about four records per node, oldest first.
        let one = wedge_shared::encode(&batch(10..=10).records[0]).len() as u64;
        store.prune_telemetry(0, 8 * one).unwrap();
        let a: Vec<u64> = store
            .telemetry("a", None, 0, 100)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(a, [7, 8, 9, 10]);
        // A re-sent old record is not stored again after pruning.
        let o = store.ingest_telemetry("a", &batch(1..=11)).unwrap();
        assert_eq!((o.upto, o.stored, o.duplicates), (11, 1, 10));
        assert_eq!(store.telemetry("a", None, 0, 100).unwrap().len(), 5);
    }

    #[test]
    fn target_selection() {
        let labels = BTreeMap::from([("site".to_string(), "a".to_string())]);
        assert!(Target::Nodes(vec!["n1".into()]).selects("n1", &labels));
        assert!(!Target::Nodes(vec!["n1".into()]).selects("n2", &labels));
        assert!(Target::Labels(labels.clone()).selects("x", &labels));
        assert!(Target::Labels(BTreeMap::new()).selects("x", &BTreeMap::new()));
        let other = BTreeMap::from([("site".to_string(), "b".to_string())]);
        assert!(!Target::Labels(other).selects("x", &labels));
    }
}
