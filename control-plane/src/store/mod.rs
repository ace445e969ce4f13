//! Durable state of the control plane, in sled.
//!
//! One tree per kind of record; records are JSON (readable with any sled tool, and the
//! API speaks JSON anyway), blobs are raw bytes keyed by digest. Callers see typed methods
//! and [`Error`], never sled types, so the engine can be replaced. Telemetry (the bulk
//! of the data, CBOR as it arrives) has its own room: [`telemetry`].

use std::path::Path;

use serde::{Serialize, de::DeserializeOwned};
use wedge_proto::Digest;
use wedge_proto::messages::NativeArtifact;

mod telemetry;

pub use telemetry::{IngestOutcome, StoredTelemetry};

use crate::model::{DeploymentRecord, DesiredRecord, ModuleRecord, NodeRecord, Rollout};

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
    #[error("file: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt record {key} in {tree}: {reason}")]
    CorruptRecord {
        tree: &'static str,
        key: String,
        reason: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

const MODULES: &str = "modules";
const BLOBS: &str = "blobs";
const DEPLOYMENTS: &str = "deployments";
const NODES: &str = "nodes";
const DESIRED: &str = "desired";
const REVISIONS: &str = "revisions";
const ROLLOUTS: &str = "rollouts";
/// Native code compiled for nodes: `<module digest hex>/<precompile key>` → the artifact
/// (its blob is in `blobs` under its own digest).
const NATIVES: &str = "natives";

/// The control plane's store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    /// Native code compiled for nodes, one file per artifact named by its digest. Files,
    /// not sled values: an artifact is tens of megabytes for a JavaScript module, and values
    /// that large in sled, while other stores of the process ran transactions (sled's
    /// concurrency control is process-wide), hung a test process that runs several
    /// control planes at the end of one of them.
    natives_dir: std::path::PathBuf,
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
        let natives_dir = dir.join("wedge-natives");
        std::fs::create_dir_all(&natives_dir).map_err(Error::Io)?;
        let store = Self { db, natives_dir };
        store.migrate_legacy_telemetry()?;
        Ok(store)
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

    /// Stores native code compiled from `module`: the artifact's file first (written
    /// whole, synced, then renamed into place), then the record.
    pub fn put_native(
        &self,
        module: &Digest,
        native: &NativeArtifact,
        artifact: &[u8],
    ) -> Result<()> {
        use std::io::Write as _;
        let path = self.natives_dir.join(native.digest.hex());
        let partial = path.with_extension("partial");
        let mut file = std::fs::File::create(&partial)?;
        file.write_all(artifact)?;
        file.sync_all()?;
        std::fs::rename(&partial, &path)?;
        self.put(NATIVES, &format!("{}/{}", module.hex(), native.key), native)?;
        self.db.flush()?;
        Ok(())
    }

    /// The artifact of native code with this digest, if stored.
    pub fn native_blob(&self, digest: &Digest) -> Result<Option<Vec<u8>>> {
        match std::fs::read(self.natives_dir.join(digest.hex())) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The native code compiled from `module` for `key`, if any.
    pub fn native(&self, module: &Digest, key: &str) -> Result<Option<NativeArtifact>> {
        self.get(NATIVES, &format!("{}/{key}", module.hex()))
    }

    /// All native code compiled from `module`.
    pub fn natives(&self, module: &Digest) -> Result<Vec<NativeArtifact>> {
        let tree = self.db.open_tree(NATIVES)?;
        let mut out = Vec::new();
        for entry in tree.scan_prefix(format!("{}/", module.hex())) {
            let (key, value) = entry?;
            out.push(
                serde_json::from_slice(&value).map_err(|source| Error::Corrupt {
                    tree: NATIVES,
                    key: String::from_utf8_lossy(&key).into_owned(),
                    source,
                })?,
            );
        }
        Ok(out)
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

    /// Writes everything buffered to disk.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
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

    /// Opens the store in `dir` again after an earlier handle was dropped. sled releases its
    /// file lock asynchronously (its flusher thread holds the database a moment longer), so
    /// a reopen in the same process waits for the lock, with a deadline.
    pub(crate) fn reopen(dir: &Path) -> Store {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Store::open(dir) {
                Ok(store) => return store,
                Err(e) if std::time::Instant::now() < deadline => {
                    assert!(e.to_string().contains("lock"), "{e}");
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("cannot reopen the store: {e}"),
            }
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
        let store = reopen(dir.path());
        assert_eq!(store.module("a", "1").unwrap(), Some(m.clone()));
        assert_eq!(store.module_by_digest(&m.digest).unwrap(), Some(m.clone()));
        assert_eq!(store.blob(&m.digest).unwrap().unwrap(), b"blob-a");
        assert_eq!(store.modules().unwrap().len(), 1);
        assert_eq!(store.module("a", "2").unwrap(), None);
    }
}
