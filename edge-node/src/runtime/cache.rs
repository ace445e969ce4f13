//! The on-disk cache of compiled modules.
//!
//! Compiling a component takes tens of milliseconds on a fast machine and seconds on a
//! small device; loading a precompiled one takes well under a millisecond. Entries are
//! keyed by the module's digest and by this node's precompile key (`wedge-engine`: wasmtime's
//! major version, the engine settings, the target), so a node does not even try code made
//! for another configuration; wasmtime checks the rest (CPU features) when it loads an
//! entry. An entry that fails to load is deleted and the module compiled or fetched again.
//! (wasmtime's own compatibility hash would name CPU features too, but it needs the
//! compiler, which a node built without one does not have.)
//!
//! Trust: loading precompiled code skips wasmtime's validation, so a cache entry is as
//! trusted as the node binary. Entries are only ever written by this node, into its own
//! data directory; protect that directory like the binary (the systemd unit and container
//! run the node as its own user with the data directory private to it).

use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;
use wedge_proto::Digest;

/// Where a compiled module came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Loaded from the cache.
    Cached,
    /// Compiled now in this process (and written to the cache when there is one).
    Compiled,
    /// Compiled now in a child process (and written to the cache).
    CompiledInChild,
    /// Native code from the control plane (and written to the cache).
    Precompiled,
}

/// The cache directory and this engine's key.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    key: String,
}

impl Cache {
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let key = wedge_engine::key(&wedge_engine::host_triple())
            .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        // The hash part: the triple is the same for every entry of this node.
        let key = key.rsplit('/').next().unwrap_or_default().to_string();
        Ok(Self {
            dir: dir.to_path_buf(),
            key,
        })
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join(format!("{}-{}.cwasm", digest.hex(), self.key))
    }

    /// The cached component for `digest`, if there is a loadable one.
    pub fn load(&self, engine: &Engine, digest: &Digest) -> Option<Component> {
        let path = self.path(digest);
        if !path.exists() {
            return None;
        }
        match deserialize(engine, &path) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(%digest, error = %e, "cached module unusable; recompiling");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Writes the compiled form of `component` (write to a temporary file, then rename, so
    /// a crash never leaves half an entry under the real name).
    pub fn store(&self, digest: &Digest, component: &Component) {
        let result = component
            .serialize()
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                let tmp = self.dir.join(format!(".{}.tmp", digest.hex()));
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, self.path(digest))
            });
        if let Err(e) = result {
            tracing::warn!(%digest, error = %e, "cannot cache compiled module");
        }
    }

    /// Removes entries of modules not in `keep`.
    pub fn retain(&self, keep: &[Digest]) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let keep: Vec<String> = keep.iter().map(Digest::hex).collect();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.iter().any(|k| name.starts_with(k.as_str())) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: wasmtime requires the file to be a component this wasmtime serialized and not
    // modified since. Cache entries are written only by `Cache::store`, into the node's
    // private data directory, under a name that carries this engine's compatibility hash;
    // wasmtime checks the header (version, settings) itself and refuses a mismatch.
    unsafe { Component::deserialize_file(engine, path) }
}
