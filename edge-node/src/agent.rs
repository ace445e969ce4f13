//! The agent: makes what runs match the desired state, and says so.
//!
//! It owns the module instances. On a desired state it saves it (so the node boots into it
//! without the control plane), starts what is new or changed, stops what is gone and
//! fetches missing blobs. It reports a heartbeat on every connect, on every module state
//! change and every heartbeat interval.
//!
//! A changed module is swapped by starting the new instance and pointing the route at it
//! before the old one is stopped, so local messages keep flowing during a deploy.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use wedge_broker::LocalPublisher;
use wedge_shared::Digest;
use wedge_shared::messages::{
    BlobReply, DesiredState, Heartbeat, ModuleSpec, ModuleState, ModuleStatus,
};

use crate::buffer::Buffer;
use crate::config::{MIN_MEMORY_BYTES, ModuleLimits};
use crate::events::EventSink;
use crate::router::{Route, RouteTable};
use crate::runtime::{HostContext, Instance, InstanceConfig, Runtime};
use crate::store::Store;
use crate::uplink::fetch::{Fetcher, Progress};
use crate::uplink::{Inbound, UplinkClient};

/// What the agent needs to know about its node.
#[derive(Debug, Clone)]
pub struct NodeProfile {
    pub node_id: String,
    pub labels: BTreeMap<String, String>,
    pub heartbeat_interval: Duration,
    /// Where the node keeps its data (its disk is reported).
    pub data_dir: std::path::PathBuf,
    pub max_module_size: u64,
    pub limits: ModuleLimits,
    /// Publisher keys whose signatures this node requires (empty: none required).
    pub trusted_publishers: Vec<[u8; 32]>,
}

/// What a SIGHUP may change while the agent runs.
#[derive(Debug, Clone)]
pub struct Tunables {
    pub heartbeat_interval: Duration,
    /// Defaults for module instances started from now on.
    pub limits: ModuleLimits,
}

impl Tunables {
    /// What a SIGHUP can change in a running node, from its configuration.
    pub fn of(config: &crate::config::Config) -> Self {
        Self {
            heartbeat_interval: config.heartbeat_interval(),
            limits: config.limits.clone(),
        }
    }
}

/// The reconciling agent.
#[derive(Debug)]
pub struct Agent {
    profile: NodeProfile,
    store: Store,
    buffer: Buffer,
    events: EventSink,
    runtime: Runtime,
    publisher: LocalPublisher,
    routes: RouteTable,
    uplink: UplinkClient,
    metrics: Arc<crate::metrics::Metrics>,
    tunables: tokio::sync::watch::Receiver<crate::config::Config>,
    changed: Arc<Notify>,
    instances: BTreeMap<String, (ModuleSpec, Instance)>,
    /// Modules that are wanted but not running an instance: fetching or unusable.
    waiting: BTreeMap<String, ModuleStatus>,
    desired: Option<DesiredState>,
    applied_generation: u64,
    fetcher: Fetcher,
}

/// The parts of the node the agent drives.
#[derive(Debug)]
pub struct Wiring {
    pub store: Store,
    pub buffer: Buffer,
    pub events: EventSink,
    pub runtime: Runtime,
    pub publisher: LocalPublisher,
    pub routes: RouteTable,
    pub uplink: UplinkClient,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The node's configuration as SIGHUP reloads it (the agent takes its [`Tunables`]).
    pub tunables: tokio::sync::watch::Receiver<crate::config::Config>,
}

impl Agent {
    pub fn new(profile: NodeProfile, wiring: Wiring) -> Self {
        let Wiring {
            store,
            buffer,
            events,
            runtime,
            publisher,
            routes,
            uplink,
            metrics,
            tunables,
        } = wiring;
        Self {
            profile,
            store,
            buffer,
            events,
            runtime,
            publisher,
            routes,
            uplink,
            metrics,
            tunables,
            changed: Arc::new(Notify::new()),
            instances: BTreeMap::new(),
            waiting: BTreeMap::new(),
            desired: None,
            applied_generation: 0,
            fetcher: Fetcher::default(),
        }
    }

    /// Runs the last desired state saved in the store, before any uplink exists.
    pub async fn boot(&mut self) {
        match self.store.desired() {
            Ok(Some(state)) => {
                tracing::info!(
                    generation = state.generation,
                    modules = state.modules.len(),
                    "running the saved desired state"
                );
                self.desired = Some(state);
                self.converge().await;
            }
            Ok(None) => tracing::info!("no saved desired state; waiting for the control plane"),
            Err(e) => tracing::error!(error = %e, "cannot read the saved desired state"),
        }
    }

    /// Runs until `shutdown`, then stops every module.
    pub async fn run(mut self, mut inbound: mpsc::Receiver<Inbound>, shutdown: CancellationToken) {
        let mut heartbeat = tokio::time::interval(self.profile.heartbeat_interval);
        let mut fetch_check = tokio::time::interval(Duration::from_secs(1));
        let changed = self.changed.clone();
        let mut tunables = self.tunables.clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Ok(()) = tunables.changed() => {
                    let t = Tunables::of(&tunables.borrow_and_update());
                    if t.heartbeat_interval != self.profile.heartbeat_interval {
                        heartbeat = tokio::time::interval(t.heartbeat_interval);
                    }
                    self.profile.heartbeat_interval = t.heartbeat_interval;
                    self.profile.limits = t.limits;
                }
                msg = inbound.recv() => match msg {
                    Some(msg) => self.on_inbound(msg).await,
                    None => break,
                },
                _ = heartbeat.tick() => self.report(),
                _ = changed.notified() => self.report(),
                _ = fetch_check.tick() => {
                    for req in self.fetcher.stalled(Instant::now()) {
                        self.uplink.blob_request(&req);
                    }
                }
            }
        }
        self.stop_all().await;
    }

    async fn on_inbound(&mut self, msg: Inbound) {
        match msg {
            Inbound::Connected => {
                for req in self.fetcher.resume_all(Instant::now()) {
                    self.uplink.blob_request(&req);
                }
                self.report();
            }
            Inbound::Desired(state) => self.on_desired(state).await,
            Inbound::Blob(BlobReply::Chunk(chunk)) => {
                match self.fetcher.on_chunk(chunk, Instant::now()) {
                    Progress::Ignored | Progress::Appended => {}
                    Progress::More(req) => {
                        self.uplink.blob_request(&req);
                    }
                    Progress::Complete(digest, bytes) => {
                        tracing::info!(%digest, size = bytes.len(), "module blob fetched and verified");
                        if let Err(e) = self.store.put_blob(&digest, &bytes) {
                            tracing::error!(%digest, error = %e, "cannot store module blob");
                            self.mark_waiting_digest(
                                &digest,
                                ModuleState::Failed,
                                Some(format!("cannot store blob: {e}")),
                            );
                            return;
                        }
                        self.converge().await;
                    }
                    Progress::Corrupt(digest, reason) => {
                        tracing::warn!(%digest, reason, "blob rejected; fetching again");
                        self.mark_waiting_digest(&digest, ModuleState::Fetching, Some(reason));
                    }
                }
            }
            Inbound::Blob(BlobReply::NotFound { digest }) => {
                tracing::warn!(%digest, "the control plane has no such blob");
                self.fetcher.not_found(&digest, Instant::now());
                self.mark_waiting_digest(
                    &digest,
                    ModuleState::Fetching,
                    Some("the control plane has no blob with this digest".into()),
                );
            }
        }
    }

    async fn on_desired(&mut self, state: DesiredState) {
        if self.desired.as_ref() == Some(&state) {
            self.report();
            return;
        }
        tracing::info!(
            generation = state.generation,
            modules = state.modules.len(),
            "new desired state"
        );
        if let Err(e) = self.store.put_desired(&state) {
            // Still act on it: running it now beats not running it; only a reboot
            // without the control plane would miss it.
            tracing::error!(error = %e, "cannot save the desired state");
        }
        self.desired = Some(state);
        self.converge().await;
    }

    fn mark_waiting_digest(&mut self, digest: &Digest, state: ModuleState, error: Option<String>) {
        for status in self.waiting.values_mut().filter(|s| s.digest == *digest) {
            status.state = state;
            status.last_error.clone_from(&error);
        }
        self.report();
    }

    /// Brings the instances in line with the desired state.
    async fn converge(&mut self) {
        let Some(desired) = self.desired.clone() else {
            return;
        };
        let wanted: Vec<Digest> = desired.modules.iter().map(|m| m.digest).collect();
        self.fetcher.retain(&wanted);

        let mut next: BTreeMap<String, (ModuleSpec, Instance)> = BTreeMap::new();
        let mut retired = Vec::new();
        self.waiting.clear();
        for spec in &desired.modules {
            let current = self.instances.remove(&spec.name);
            if let Some((running, inst)) = current {
                if running == *spec {
                    next.insert(spec.name.clone(), (running, inst));
                    continue;
                }
                retired.push(inst);
            }
            match self.start(spec).await {
                Ok(Some(inst)) => {
                    next.insert(spec.name.clone(), (spec.clone(), inst));
                }
                Ok(None) => {} // fetching
                Err(error) => {
                    tracing::error!(module = spec.name, error, "module cannot start");
                    self.waiting.insert(
                        spec.name.clone(),
                        ModuleStatus {
                            name: spec.name.clone(),
                            digest: spec.digest,
                            state: ModuleState::Failed,
                            last_error: Some(error),
                            restarts: 0,
                            stats: Default::default(),
                        },
                    );
                }
            }
        }
        retired.extend(
            std::mem::take(&mut self.instances)
                .into_values()
                .map(|(_, inst)| inst),
        );
        self.instances = next;
        self.update_routes(&desired);
        self.stop(retired).await;

        if !self
            .waiting
            .values()
            .any(|s| s.state == ModuleState::Fetching)
        {
            self.applied_generation = desired.generation;
            if let Err(e) = self.store.retain_blobs(&wanted) {
                tracing::warn!(error = %e, "cannot remove unused blobs");
            }
            self.runtime.retain_cached(&wanted);
            let names: Vec<String> = desired.modules.iter().map(|m| m.name.clone()).collect();
            if let Err(e) = self.store.retain_kv(&names) {
                tracing::warn!(error = %e, "cannot remove the stores of removed modules");
            }
        }
        self.report();
    }

    /// Starts an instance of `spec`, or starts fetching its blob (`Ok(None)`).
    async fn start(&mut self, spec: &ModuleSpec) -> Result<Option<Instance>, String> {
        // Before fetching: the signature covers the module's name, version and digest, which
        // the desired state carries.
        let signed = wedge_shared::signing::Signed {
            name: &spec.module,
            version: &spec.version,
            digest: &spec.digest,
        };
        wedge_shared::signing::check(
            spec.signature.as_ref(),
            signed,
            &self.profile.trusted_publishers,
        )
        .map_err(|e| e.to_string())?;
        if let Some(sig) = &spec.signature
            && sig.covers == wedge_shared::signing::Covers::DigestOnly
            && !self.profile.trusted_publishers.is_empty()
        {
            tracing::warn!(module = %spec.name, "runs under a legacy digest-only signature: \
                it does not bind the module's name and version; re-sign it (wedgectl modules push --sign-key)");
        }
        if spec.size > self.profile.max_module_size {
            return Err(format!(
                "module of {} bytes exceeds this node's limit of {}",
                spec.size, self.profile.max_module_size
            ));
        }
        let blob = self.store.blob(&spec.digest).map_err(|e| e.to_string())?;
        let Some(blob) = blob else {
            if let Some(req) = self.fetcher.want(spec.digest, spec.size, Instant::now()) {
                self.uplink.blob_request(&req);
            }
            self.waiting.insert(
                spec.name.clone(),
                ModuleStatus {
                    name: spec.name.clone(),
                    digest: spec.digest,
                    state: ModuleState::Fetching,
                    last_error: None,
                    restarts: 0,
                    stats: Default::default(),
                },
            );
            return Ok(None);
        };
        let defaults = &self.profile.limits;
        let memory_bytes = spec.limits.memory_bytes.unwrap_or(defaults.memory_bytes);
        if memory_bytes < MIN_MEMORY_BYTES {
            return Err(format!(
                "memory limit of {memory_bytes} bytes is below the minimum of {MIN_MEMORY_BYTES}"
            ));
        }
        let runtime = self.runtime.clone();
        let digest = spec.digest;
        let started = Instant::now();
        let mut load = tokio::task::spawn_blocking(move || runtime.load(&digest, &blob));
        // Compiling can take many seconds on a small device; the node keeps reporting
        // meanwhile, or the control plane would take it for dead.
        let mut heartbeat = tokio::time::interval(self.profile.heartbeat_interval);
        heartbeat.tick().await; // the first tick is immediate
        let loaded = loop {
            tokio::select! {
                loaded = &mut load => break loaded,
                _ = heartbeat.tick() => self.report(),
            }
        };
        let (compiled, source) = loaded
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        tracing::info!(module = spec.name, %digest, ?source, took = ?started.elapsed(), "module loaded");
        let kv = self
            .store
            .kv(
                &spec.name,
                spec.limits.kv_bytes.unwrap_or(defaults.kv_bytes),
            )
            .map_err(|e| format!("cannot open the module's key-value store: {e}"))?;
        let host = HostContext {
            module: spec.name.as_str().into(),
            publisher: self.publisher.clone(),
            buffer: self.buffer.clone(),
            kv,
            publish_prefixes: spec.publish_prefixes.clone(),
            publish_per_sec: spec
                .limits
                .publish_per_sec
                .unwrap_or(defaults.publish_per_sec)
                .max(1),
            stats: Default::default(),
            metrics: self.metrics.module(&spec.name),
            events: self.events.clone(),
        };
        let config = InstanceConfig {
            name: spec.name.clone(),
            digest: spec.digest,
            config: spec.config.clone(),
            memory_bytes: usize::try_from(memory_bytes).unwrap_or(usize::MAX),
            call_timeout: Duration::from_millis(
                spec.limits
                    .call_timeout_ms
                    .unwrap_or(defaults.call_timeout_ms)
                    .max(10),
            ),
            queue: defaults.queue,
            tick: spec.tick_ms.map(|ms| Duration::from_millis(ms.max(10))),
        };
        Instance::start(
            self.runtime.clone(),
            &compiled,
            host,
            config,
            self.changed.clone(),
        )
        .map(Some)
        .map_err(|e| format!("cannot start module thread: {e}"))
    }

    fn update_routes(&self, desired: &DesiredState) {
        let routes = desired
            .modules
            .iter()
            .filter_map(|spec| {
                self.instances.get(&spec.name).map(|(_, inst)| Route {
                    module: spec.name.clone(),
                    filters: spec.subscriptions.clone(),
                    inbox: inst.inbox(),
                })
            })
            .collect();
        self.routes.replace(routes);
    }

    async fn stop(&self, instances: Vec<Instance>) {
        if instances.is_empty() {
            return;
        }
        let handles: Vec<_> = instances.into_iter().filter_map(Instance::stop).collect();
        let _ = tokio::task::spawn_blocking(move || {
            for h in handles {
                let _ = h.join();
            }
        })
        .await;
    }

    async fn stop_all(&mut self) {
        self.routes.replace(Vec::new());
        let all = std::mem::take(&mut self.instances)
            .into_values()
            .map(|(_, inst)| inst)
            .collect();
        self.stop(all).await;
    }

    /// Module statuses, sorted by name.
    pub fn modules(&self) -> Vec<ModuleStatus> {
        let mut all: Vec<ModuleStatus> = self
            .instances
            .values()
            .map(|(_, inst)| inst.status())
            .chain(self.waiting.values().cloned())
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    fn report(&self) {
        let now_ms = wedge_shared::now_ms();
        let hb = Heartbeat {
            node_id: self.profile.node_id.clone(),
            sent_at_ms: now_ms,
            arch: std::env::consts::ARCH.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            labels: self.profile.labels.clone(),
            desired_generation: self.desired.as_ref().map_or(0, |d| d.generation),
            applied_generation: self.applied_generation,
            modules: self.modules(),
            buffer: self.buffer.status(now_ms),
            resources: crate::resources::sample(&self.profile.data_dir),
        };
        self.uplink.heartbeat(&hb);
    }
}
