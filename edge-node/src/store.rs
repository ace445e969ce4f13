//! The node's local store (sled): the last desired state and module blobs by digest.
//!
//! This is what makes the node autonomous: it boots from here and runs without the control
//! plane. Blobs are verified before they are written, so a stored blob is always whole.

use std::path::Path;

use wedge_shared::Digest;
use wedge_shared::messages::DesiredState;

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage engine: {0}")]
    Engine(#[from] sled::Error),
    #[error("stored desired state is unreadable: {0}")]
    Corrupt(#[from] wedge_shared::DecodeError),
}

const DESIRED_KEY: &str = "desired";

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
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let db = sled::Config::new()
            .path(dir)
            // sled's default cache is 1 GB; small devices cannot spare that.
            .cache_capacity(16 * 1024 * 1024)
            .open()?;
        let blobs = db.open_tree("blobs")?;
        Ok(Self { db, blobs })
    }

    /// The last desired state received, if any.
    pub fn desired(&self) -> Result<Option<DesiredState>, Error> {
        match self.db.get(DESIRED_KEY)? {
            Some(bytes) => Ok(Some(wedge_shared::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Saves the desired state durably before the node acts on it.
    pub fn put_desired(&self, state: &DesiredState) -> Result<(), Error> {
        self.db.insert(DESIRED_KEY, wedge_shared::encode(state))?;
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
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.desired().unwrap(), Some(state));
        assert!(s.has_blob(&d).unwrap());
        assert_eq!(s.blob(&d).unwrap().unwrap(), b"blob");
        assert_eq!(s.retain_blobs(&[]).unwrap(), 1);
        assert!(!s.has_blob(&d).unwrap());
    }
}
