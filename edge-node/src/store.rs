//! The node's local store (sled): the last desired state and module blobs by digest.
//!
//! This is what makes the node autonomous: it boots from here and runs without the control
//! plane. Blobs are verified before they are written, so a stored blob is always whole.

use std::path::Path;

use wedge_proto::Digest;
use wedge_proto::messages::DesiredState;

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage engine: {0}")]
    Engine(#[from] sled::Error),
    #[error("stored desired state is unreadable: {0}")]
    Corrupt(#[from] wedge_proto::DecodeError),
}

const DESIRED_KEY: &str = "desired";
const KV_PREFIX: &str = "kv/";

/// The node's store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    blobs: sled::Tree,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("node::Store")
    }
}

impl Store {
    /// Opens the store with sled's background flush every 10 ms.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        Self::open_with_flush(dir, 10)
    }

    /// Opens the store; everything written is on disk within `flush_ms` milliseconds
    /// (group commit: one fsync covers every write of the interval).
    pub fn open_with_flush(dir: &Path, flush_ms: u64) -> Result<Self, Error> {
        let db = sled::Config::new()
            .path(dir)
            // sled's default cache is 1 GB; small devices cannot spare that.
            .cache_capacity(16 * 1024 * 1024)
            .flush_every_ms(Some(flush_ms.max(1)))
            .open()?;
        let blobs = db.open_tree("blobs")?;
        Ok(Self { db, blobs })
    }

    /// The last desired state received, if any.
    pub fn desired(&self) -> Result<Option<DesiredState>, Error> {
        match self.db.get(DESIRED_KEY)? {
            Some(bytes) => Ok(Some(wedge_proto::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Saves the desired state durably before the node acts on it.
    pub fn put_desired(&self, state: &DesiredState) -> Result<(), Error> {
        self.db.insert(DESIRED_KEY, wedge_proto::encode(state))?;
        self.db.flush()?;
        Ok(())
    }

    pub fn has_blob(&self, digest: &Digest) -> Result<bool, Error> {
        Ok(self.blobs.contains_key(digest.as_bytes())?)
    }

    pub fn blob(&self, digest: &Digest) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.blobs.get(digest.as_bytes())?.map(|b| b.to_vec()))
    }

    /// Stores a blob the caller has verified against `digest`.
    pub fn put_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<(), Error> {
        self.blobs.insert(digest.as_bytes(), bytes)?;
        self.blobs.flush()?;
        Ok(())
    }

    /// The telemetry buffer, bounded by `quota` bytes, doing `policy` when full.
    pub fn buffer(
        &self,
        quota: u64,
        policy: crate::buffer::FullPolicy,
    ) -> Result<crate::buffer::Buffer, crate::buffer::Error> {
        crate::buffer::Buffer::open(
            self.db.open_tree("telemetry")?,
            self.db.open_tree("telemetry_meta")?,
            quota,
            policy,
        )
    }

    /// The key-value store of module instance `module`, bounded by `quota` bytes of keys
    /// and values.
    pub fn kv(&self, module: &str, quota: u64) -> Result<Kv, Error> {
        let tree = self.db.open_tree(format!("{KV_PREFIX}{module}"))?;
        let mut used = 0u64;
        for item in tree.iter() {
            let (k, v) = item?;
            used += (k.len() + v.len()) as u64;
        }
        Ok(Kv {
            tree,
            quota,
            used: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(used)),
        })
    }

    /// Deletes the key-value stores of modules not in `keep`.
    pub fn retain_kv(&self, keep: &[String]) -> Result<(), Error> {
        for name in self.db.tree_names() {
            let Some(module) = name.strip_prefix(KV_PREFIX.as_bytes()) else {
                continue;
            };
            if !keep.iter().any(|k| k.as_bytes() == module) {
                self.db.drop_tree(&name)?;
            }
        }
        Ok(())
    }

    /// Drops blobs no module in `keep` uses.
    pub fn retain_blobs(&self, keep: &[Digest]) -> Result<usize, Error> {
        let mut removed = 0;
        for key in self.blobs.iter().keys() {
            let key = key?;
            if !keep.iter().any(|d| d.as_bytes()[..] == key[..]) {
                self.blobs.remove(&key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opens the store in `dir` again after an earlier handle was dropped. sled releases its
    /// file lock asynchronously (its flusher thread holds the database a moment longer), so
    /// a reopen in the same process waits for the lock, with a deadline.
    fn reopen(dir: &Path) -> Store {
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
    fn desired_and_blobs_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let d = Digest::of(b"blob");
        let state = DesiredState {
            generation: 3,
            modules: vec![],
        };
        {
            let s = Store::open(dir.path()).unwrap();
            assert_eq!(s.desired().unwrap(), None);
            s.put_desired(&state).unwrap();
            s.put_blob(&d, b"blob").unwrap();
        }
        let s = reopen(dir.path());
        assert_eq!(s.desired().unwrap(), Some(state));
        assert!(s.has_blob(&d).unwrap());
        assert_eq!(s.blob(&d).unwrap().unwrap(), b"blob");
        assert_eq!(s.retain_blobs(&[]).unwrap(), 1);
        assert!(!s.has_blob(&d).unwrap());
    }

    #[test]
    fn kv_quota_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let kv = s.kv("m", 20).unwrap();
            kv.set("a", b"0123456789").unwrap();
            assert_eq!(kv.used(), 11);
            assert!(matches!(
                kv.set("b", b"0123456789"),
                Err(KvError::Quota { .. })
            ));
            // Overwriting counts the difference only.
            kv.set("a", b"0123456789abcdef").unwrap();
            assert!(matches!(
                kv.set("k".repeat(300).as_str(), b""),
                Err(KvError::KeyTooLong(_))
            ));
        }
        let s = reopen(dir.path());
        let kv = s.kv("m", 20).unwrap();
        assert_eq!(kv.used(), 17);
        assert_eq!(kv.get("a").unwrap().unwrap(), b"0123456789abcdef");
        kv.delete("a").unwrap();
        assert_eq!(kv.used(), 0);
        s.retain_kv(&[]).unwrap();
        assert!(s.kv("m", 20).unwrap().get("a").unwrap().is_none());
    }
}

/// Why a key-value write was refused.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("key of {0} bytes is longer than 256")]
    KeyTooLong(usize),
    #[error("quota of {quota} bytes would be exceeded ({used} used, {wanted} more wanted)")]
    Quota { quota: u64, used: u64, wanted: u64 },
    #[error("storage: {0}")]
    Store(#[from] sled::Error),
}

/// One module's key-value store with a byte quota. Cheap to clone.
#[derive(Clone)]
pub struct Kv {
    tree: sled::Tree,
    quota: u64,
    used: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Kv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kv").field("quota", &self.quota).finish()
    }
}

impl Kv {
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        use std::sync::atomic::Ordering;
        if key.len() > 256 {
            return Err(KvError::KeyTooLong(key.len()));
        }
        let old = self
            .tree
            .get(key)?
            .map_or(0, |v| (key.len() + v.len()) as u64);
        let new = (key.len() + value.len()) as u64;
        let used = self.used.load(Ordering::Relaxed);
        // Only the module's own thread writes its store, so load-then-store does not race.
        let next = used - old.min(used) + new;
        if next > self.quota {
            return Err(KvError::Quota {
                quota: self.quota,
                used,
                wanted: new.saturating_sub(old),
            });
        }
        self.tree.insert(key, value)?;
        self.used.store(next, Ordering::Relaxed);
        Ok(())
    }

    pub fn delete(&self, key: &str) -> Result<(), KvError> {
        use std::sync::atomic::Ordering;
        if let Some(v) = self.tree.remove(key)? {
            let freed = (key.len() + v.len()) as u64;
            let used = self.used.load(Ordering::Relaxed);
            self.used
                .store(used.saturating_sub(freed), Ordering::Relaxed);
        }
        Ok(())
    }

    /// Bytes of keys and values stored.
    pub fn used(&self) -> u64 {
        self.used.load(std::sync::atomic::Ordering::Relaxed)
    }
}
