//! The agent: makes what runs match the desired state, and says so.
//!
//! It owns the module instances. On a desired state it saves it (so the node boots into it
//! without the control plane), starts what is new or changed, stops what is gone and
//! fetches missing blobs. It reports a heartbeat on every connect, on every module state
//! change and every heartbeat interval.
//!
//! A changed module is swapped by starting the new instance and pointing the route at it
//! before the old one is stopped, so local messages keep flowing during a deploy.
//!
//! Diff and effects, like a Kubernetes controller: [`diff`] turns (desired, running) into
//! actions, a pure function tested alone; the [`launcher`] starts an instance (checks,
//! blob, compile, limits); [`status`] builds what the node reports. This file is the shell
//! that receives desired states and blobs, performs the actions and reports.

mod diff;
mod launcher;
mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use wedge_broker::LocalPublisher;
use wedge_proto::Digest;
use wedge_proto::messages::{BlobReply, DesiredState, ModuleSpec, ModuleState, ModuleStatus};

use crate::buffer::Buffer;
use crate::config::ModuleLimits;
use crate::events::EventSink;
use crate::router::{Route, RouteTable};
use crate::runtime::instance::Inbox;
use crate::runtime::{Instance, Queue, Runtime};
use crate::store::Store;
use crate::uplink::fetch::{Fetcher, Progress};
use crate::uplink::{Inbound, UplinkClient};
use launcher::{Launch, Launcher};

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
    /// The key of native code this node loads from the control plane (`wedge-engine`);
    /// `None`: it compiles every module itself.
    pub precompile_key: Option<String>,
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
    launcher: Launcher,
    routes: RouteTable,
    uplink: UplinkClient,
    tunables: tokio::sync::watch::Receiver<crate::config::Config>,
    instances: BTreeMap<String, (ModuleSpec, Instance)>,
    /// Modules that are wanted but not running an instance: fetching, compiling or
    /// unusable.
    waiting: BTreeMap<String, ModuleStatus>,
    /// The queues of modules being compiled: routed to, so their messages wait.
    compiling: BTreeMap<String, Inbox>,
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
            launcher: Launcher {
                store,
                buffer,
                events,
                runtime,
                publisher,
                metrics,
                changed: Arc::new(Notify::new()),
                native_failed: Default::default(),
            },
            routes,
            uplink,
            tunables,
            instances: BTreeMap::new(),
            waiting: BTreeMap::new(),
            compiling: BTreeMap::new(),
            desired: None,
            applied_generation: 0,
            fetcher: Fetcher::default(),
        }
    }

    /// Runs the last desired state saved in the store, before any uplink exists.
    pub async fn boot(&mut self) {
        match self.launcher.store.desired() {
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
        let changed = self.launcher.changed.clone();
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
                        if let Err(e) = self.launcher.store.put_blob(&digest, &bytes) {
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
                if let Some(module) = self.module_of_native(&digest) {
                    // The control plane no longer has the native code it offered: compile.
                    tracing::warn!(%digest, "the control plane has no such native code; compiling the module");
                    self.launcher.refuse_native(module);
                    self.converge().await;
                    return;
                }
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
        if let Err(e) = self.launcher.store.put_desired(&state) {
            // Still act on it: running it now beats not running it; only a reboot
            // without the control plane would miss it.
            tracing::error!(error = %e, "cannot save the desired state");
        }
        self.desired = Some(state);
        self.converge().await;
    }

    /// The module whose native code has digest `blob`, if any.
    fn module_of_native(&self, blob: &Digest) -> Option<Digest> {
        self.desired
            .as_ref()?
            .modules
            .iter()
            .find(|m| m.native.as_ref().is_some_and(|n| n.digest == *blob))
            .map(|m| m.digest)
    }

    fn mark_waiting_digest(&mut self, digest: &Digest, state: ModuleState, error: Option<String>) {
        let digest = self.module_of_native(digest).unwrap_or(*digest);
        status::mark_digest(&mut self.waiting, &digest, state, error);
        self.report();
    }

    /// Brings the instances in line with the desired state.
    async fn converge(&mut self) {
        let Some(desired) = self.desired.clone() else {
            return;
        };
        // The modules, and the native code the node would load for them.
        let wanted: Vec<Digest> = desired
            .modules
            .iter()
            .flat_map(|m| {
                let native = self.launcher.native(&self.profile, m).map(|n| n.digest);
                std::iter::once(m.digest).chain(native)
            })
            .collect();
        self.fetcher.retain(&wanted);

        let running = self
            .instances
            .iter()
            .map(|(name, (spec, _))| (name.clone(), spec.clone()))
            .collect();
        let actions = diff::diff(&desired.modules, &running);
        let mut retired = Vec::new();
        for name in &actions.retire {
            if let Some((_, inst)) = self.instances.remove(name) {
                retired.push(inst);
            }
        }
        self.waiting.clear();
        // A replaced version keeps its messages until its successor runs.
        let replaced: BTreeMap<String, Inbox> = retired
            .iter()
            .map(|inst| (inst.config().name.clone(), inst.inbox()))
            .collect();
        for spec in &actions.start {
            self.start(spec, &desired, &replaced).await;
        }
        self.update_routes(&desired, &BTreeMap::new());
        self.stop(retired).await;

        if !self
            .waiting
            .values()
            .any(|s| s.state == ModuleState::Fetching)
        {
            self.applied(&desired, &wanted);
        }
        self.report();
    }

    /// Starts `spec`: running, fetching its blob, or failed (reported with the error).
    /// While it compiles it is reported `compiling` and routed to its queue (unless the
    /// version it replaces still runs), so a module's first messages wait for it.
    async fn start(
        &mut self,
        spec: &ModuleSpec,
        desired: &DesiredState,
        replaced: &BTreeMap<String, Inbox>,
    ) {
        let queue = Queue::new(
            self.profile.limits.queue,
            Default::default(),
            self.launcher.metrics.module(&spec.name).dropped,
        );
        self.compiling.insert(spec.name.clone(), queue.inbox());
        let compiling = status::waiting(spec, ModuleState::Compiling, None);
        self.waiting.insert(spec.name.clone(), compiling);
        self.update_routes(desired, replaced);
        let launched = self
            .launcher
            .launch(&self.profile, spec, queue, || self.report())
            .await;
        self.compiling.remove(&spec.name);
        self.waiting.remove(&spec.name);
        match launched {
            Ok(Launch::Started(inst)) => {
                self.instances
                    .insert(spec.name.clone(), (spec.clone(), *inst));
            }
            Ok(Launch::NeedsBlob { digest, size }) => {
                if let Some(req) = self.fetcher.want(digest, size, Instant::now()) {
                    self.uplink.blob_request(&req);
                }
                let fetching = status::waiting(spec, ModuleState::Fetching, None);
                self.waiting.insert(spec.name.clone(), fetching);
            }
            Ok(Launch::AwaitsNative) => {
                let why = "waiting for the control plane to compile it for this node \
                           (this build of wedge-node has no compiler)";
                tracing::info!(module = spec.name, "{why}");
                let waiting = status::waiting(spec, ModuleState::Fetching, Some(why.into()));
                self.waiting.insert(spec.name.clone(), waiting);
            }
            Err(error) => {
                tracing::error!(module = spec.name, error, "module cannot start");
                let failed = status::waiting(spec, ModuleState::Failed, Some(error));
                self.waiting.insert(spec.name.clone(), failed);
            }
        }
    }

    /// The desired state is applied (nothing left to fetch): what it no longer uses goes.
    fn applied(&mut self, desired: &DesiredState, wanted: &[Digest]) {
        self.applied_generation = desired.generation;
        if let Err(e) = self.launcher.store.retain_blobs(wanted) {
            tracing::warn!(error = %e, "cannot remove unused blobs");
        }
        self.launcher.runtime.retain_cached(wanted);
        let names: Vec<String> = desired.modules.iter().map(|m| m.name.clone()).collect();
        if let Err(e) = self.launcher.store.retain_kv(&names) {
            tracing::warn!(error = %e, "cannot remove the stores of removed modules");
        }
    }

    /// Routes each desired module's messages to its running instance, else to the version
    /// it replaces (still running), else to its queue while it compiles.
    fn update_routes(&self, desired: &DesiredState, replaced: &BTreeMap<String, Inbox>) {
        let routes = desired
            .modules
            .iter()
            .filter_map(|spec| {
                let inbox = match self.instances.get(&spec.name) {
                    Some((_, inst)) => inst.inbox(),
                    None => replaced
                        .get(&spec.name)
                        .or_else(|| self.compiling.get(&spec.name))?
                        .clone(),
                };
                Some(Route {
                    module: spec.name.clone(),
                    filters: spec.subscriptions.clone(),
                    inbox,
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
        status::modules(
            self.instances.values().map(|(_, inst)| inst.status()),
            &self.waiting,
        )
    }

    fn report(&self) {
        let now_ms = wedge_proto::now_ms();
        let report = status::Report {
            now_ms,
            desired_generation: self.desired.as_ref().map_or(0, |d| d.generation),
            applied_generation: self.applied_generation,
            modules: self.modules(),
            buffer: self.launcher.buffer.status(now_ms),
            resources: crate::resources::sample(&self.profile.data_dir),
        };
        self.uplink
            .heartbeat(&status::heartbeat(&self.profile, report));
    }
}
