//! Native code for the nodes, compiled here so devices do not have to.
//!
//! Compiling a JavaScript or Python component takes a small device tens of seconds and
//! half a gigabyte; loading native code takes milliseconds. Each node names the native
//! code it can load in its heartbeat (`precompile_key`, see `wedge-engine`: target triple
//! and engine compatibility); the control plane compiles every module for every key it
//! has seen — a module when it is uploaded, all deployed modules when a new key shows up —
//! stores the artifact as a content-addressed blob, and offers it in the desired state of
//! each node with that key ([`Precompiler::offer`]). Nodes fetch it like a module blob and
//! fall back to compiling when it does not load. When an artifact is stored, the nodes with
//! its key are due a new desired state ([`Precompiler::nodes_with_new_code`]): a module
//! deployed before its code was ready gets it then (a node built without a compiler waits
//! for it; one with a compiler keeps what it compiled and uses the artifact next start).
//!
//! One compile at a time, on the blocking pool: a JavaScript component peaks near 500 MB
//! while it compiles. Keys are checked before anything is compiled: a key is accepted only
//! when this build computes the same key for its triple (the same wasmtime and settings),
//! and at most [`MAX_KEYS`] distinct keys are kept, so a node that lies about its key costs
//! at most one compile per module for a target it does not have, never unbounded work.
//!
//! Nodes that require signed modules send no key (native code is not what the publisher
//! signed) and never get native code.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wedge_proto::Digest;
use wedge_proto::messages::{ModuleSpec, NativeArtifact};

use crate::store::Store;

/// Distinct precompile keys kept (targets × wasmtime versions in one fleet: a handful).
pub const MAX_KEYS: usize = 16;
/// Compile jobs waiting; more are dropped (asked again at the next upload or new key).
const QUEUE: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Job {
    module: Digest,
    key: String,
}

/// Keys seen, which node has which, and the compile queue.
#[derive(Debug)]
pub struct Precompiler {
    store: Store,
    /// Each node's key, as its last heartbeat said.
    node_keys: Mutex<BTreeMap<String, String>>,
    /// Keys checked: `true` for those this build compiles for.
    checked: Mutex<BTreeMap<String, bool>>,
    /// Jobs queued or running, and jobs that failed (not tried again until a restart).
    pending: Mutex<HashSet<Job>>,
    failed: Mutex<HashSet<Job>>,
    tx: mpsc::Sender<Job>,
    /// Keys with artifacts stored since [`Self::nodes_with_new_code`] last looked.
    new_code: Mutex<BTreeSet<String>>,
    stored: tokio::sync::Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Precompiler {
    /// The precompiler and its worker (to spawn).
    pub fn new(
        store: Store,
        shutdown: CancellationToken,
    ) -> (Arc<Self>, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let me = Arc::new(Self {
            store,
            node_keys: Mutex::default(),
            checked: Mutex::default(),
            pending: Mutex::default(),
            failed: Mutex::default(),
            tx,
            new_code: Mutex::default(),
            stored: tokio::sync::Notify::new(),
        });
        let worker = me.clone().work(rx, shutdown);
        (me, worker)
    }

    /// A heartbeat from `node` said it loads native code with `key` (or none).
    pub fn node_key(&self, node: &str, key: Option<&str>) {
        let Some(key) = key else {
            lock(&self.node_keys).remove(node);
            return;
        };
        if lock(&self.node_keys).get(node).map(String::as_str) == Some(key) {
            return;
        }
        if !self.accepted(key) {
            lock(&self.node_keys).remove(node);
            return;
        }
        lock(&self.node_keys).insert(node.to_string(), key.to_string());
        // Every deployed module, for this key (the ones already compiled are skipped).
        match self.store.deployments() {
            Ok(deployments) => {
                let modules: BTreeSet<Digest> =
                    deployments.iter().map(|d| d.module.digest).collect();
                for module in modules {
                    self.want(module, key);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list deployments to precompile"),
        }
    }

    /// Whether this build compiles for `key`; checked once per key, at most [`MAX_KEYS`].
    fn accepted(&self, key: &str) -> bool {
        let mut checked = lock(&self.checked);
        if let Some(ok) = checked.get(key) {
            return *ok;
        }
        if checked.len() >= MAX_KEYS {
            return false;
        }
        let ok = wedge_engine::key_triple(key)
            .and_then(|triple| wedge_engine::key(triple).ok())
            .is_some_and(|ours| ours == key);
        if ok {
            tracing::info!(
                key,
                "nodes with a new precompile key: compiling modules for them"
            );
        } else {
            tracing::info!(
                key,
                "a node's precompile key is not one this control plane compiles for; it compiles its modules itself"
            );
        }
        checked.insert(key.to_string(), ok);
        ok
    }

    /// Waits until native code was stored, then names the nodes it is for (whose desired
    /// states should be computed again to offer it).
    pub async fn nodes_with_new_code(&self) -> Vec<String> {
        loop {
            self.stored.notified().await;
            let keys = std::mem::take(&mut *lock(&self.new_code));
            let nodes: Vec<String> = lock(&self.node_keys)
                .iter()
                .filter(|(_, key)| keys.contains(*key))
                .map(|(node, _)| node.clone())
                .collect();
            if !nodes.is_empty() {
                return nodes;
            }
        }
    }

    /// A module was uploaded: compile it for every key in use.
    pub fn uploaded(&self, module: Digest) {
        let keys: BTreeSet<String> = lock(&self.node_keys).values().cloned().collect();
        for key in keys {
            self.want(module, &key);
        }
    }

    fn want(&self, module: Digest, key: &str) {
        let job = Job {
            module,
            key: key.to_string(),
        };
        if lock(&self.failed).contains(&job)
            || matches!(self.store.native(&module, key), Ok(Some(_)))
        {
            return;
        }
        if !lock(&self.pending).insert(job.clone()) {
            return;
        }
        if self.tx.try_send(job.clone()).is_err() {
            lock(&self.pending).remove(&job);
            tracing::warn!(%module, key, "precompile queue full; the nodes compile this module themselves");
        }
    }

    /// Adds the native code this node can load to its modules (left out where there is
    /// none yet: the node compiles those).
    pub fn offer(&self, node: &str, modules: &mut [ModuleSpec]) {
        let Some(key) = lock(&self.node_keys).get(node).cloned() else {
            return;
        };
        for spec in modules {
            match self.store.native(&spec.digest, &key) {
                Ok(native) => spec.native = native,
                Err(e) => tracing::warn!(error = %e, "cannot read native code"),
            }
        }
    }

    async fn work(self: Arc<Self>, mut rx: mpsc::Receiver<Job>, shutdown: CancellationToken) {
        loop {
            let job = tokio::select! {
                _ = shutdown.cancelled() => return,
                job = rx.recv() => match job {
                    Some(job) => job,
                    None => return,
                },
            };
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                outcome = self.compile(&job) => outcome,
            };
            lock(&self.pending).remove(&job);
            if let Err(error) = outcome {
                tracing::warn!(module = %job.module, key = job.key, error, "cannot precompile; nodes with this key compile the module themselves");
                lock(&self.failed).insert(job);
            }
        }
    }

    /// Compiles and stores one artifact. Only the compile runs on the blocking pool, and it
    /// holds nothing but the bytes: a compile still running at shutdown must not keep the
    /// store open past the control plane's end.
    async fn compile(&self, job: &Job) -> Result<(), String> {
        if self
            .store
            .native(&job.module, &job.key)
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Ok(());
        }
        let Some(component) = self.store.blob(&job.module).map_err(|e| e.to_string())? else {
            return Err("the module's blob is missing".into());
        };
        let started = std::time::Instant::now();
        let key = job.key.clone();
        let artifact = tokio::task::spawn_blocking(move || {
            wedge_engine::precompile(&key, &component).map_err(|e| format!("{e:#}"))
        })
        .await
        .map_err(|e| e.to_string())??;
        let native = NativeArtifact {
            key: job.key.clone(),
            digest: Digest::of(&artifact),
            size: artifact.len() as u64,
        };
        // Inline like the other writes of the link's handlers (one insert and a flush).
        self.store
            .put_native(&job.module, &native, &artifact)
            .map_err(|e| e.to_string())?;
        tracing::info!(module = %job.module, key = job.key, size = native.size,
            took = ?started.elapsed(), "module precompiled");
        lock(&self.new_code).insert(job.key.clone());
        // A stored permit: a wake-up while the reader is busy is not lost.
        self.stored.notify_one();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;
    use crate::model::ModuleRecord;

    /// Code stored after a module was uploaded (and perhaps deployed) is announced for the
    /// nodes with its key, so their desired states offer it; nodes with another key are
    /// not named, and a key this build does not make is never compiled for.
    #[tokio::test]
    async fn stored_code_names_the_nodes_it_is_for() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let bytes = wedge_modules::bytes("threshold-alert").unwrap();
        let digest = Digest::of(&bytes);
        let record = ModuleRecord {
            name: "threshold-alert".into(),
            version: "1".into(),
            digest,
            size: bytes.len() as u64,
            uploaded_at_ms: 0,
            signature: None,
        };
        store.put_module(&record, &bytes).unwrap();
        let shutdown = CancellationToken::new();
        let (pre, worker) = Precompiler::new(store.clone(), shutdown.clone());
        let worker = tokio::spawn(worker);

        let ours = wedge_engine::key(&wedge_engine::host_triple()).unwrap();
        let aarch64 = wedge_engine::key("aarch64-unknown-linux-musl").unwrap();
        pre.node_key("n-host", Some(&ours));
        pre.node_key("n-host-2", Some(&ours));
        pre.node_key("n-arm", Some(&aarch64));
        pre.node_key("n-liar", Some("x86_64-unknown-linux-gnu/0000000000000000"));
        pre.uploaded(digest);

        let mut named = BTreeSet::new();
        while named.len() < 3 {
            let nodes = tokio::time::timeout(Duration::from_secs(120), pre.nodes_with_new_code())
                .await
                .expect("code was stored and announced");
            named.extend(nodes);
        }
        assert_eq!(
            named,
            BTreeSet::from(["n-arm".into(), "n-host".into(), "n-host-2".into()])
        );
        let mut specs = vec![ModuleSpec {
            name: "alert".into(),
            module: record.name.clone(),
            version: record.version.clone(),
            digest,
            size: record.size,
            subscriptions: vec!["sensors/#".into()],
            config: "{}".into(),
            publish_prefixes: Vec::new(),
            tick_ms: None,
            limits: Default::default(),
            signature: None,
            native: None,
        }];
        pre.offer("n-arm", &mut specs);
        assert_eq!(specs[0].native.as_ref().unwrap().key, aarch64);
        specs[0].native = None;
        pre.offer("n-liar", &mut specs);
        assert!(
            specs[0].native.is_none(),
            "no code for a key we do not make"
        );
        shutdown.cancel();
        worker.await.unwrap();
    }
}
