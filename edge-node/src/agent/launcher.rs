//! Starting one module instance: checks (publisher signature, size, memory floor), the
//! blob from the store, compile (off the async threads, the node reporting meanwhile), the
//! module's key-value store, and the instance with its host context and limits.
//!
//! Fetching a missing blob is the agent's (it owns the fetcher and the uplink): the
//! launcher says [`Launch::NeedsBlob`].
//!
//! Where the code comes from, in order: the node's cache of compiled modules; native code
//! the control plane compiled for this node's precompile key (when the desired state
//! offers it and the node accepts it: not when it requires signatures); the module itself,
//! compiled here. Native code that does not load (another wasmtime, a CPU without a
//! feature it uses, a corrupt artifact) is not tried again for that module: the node
//! fetches the module and compiles it.
//!
//! A node built without a compiler (`wedge_engine::CAN_COMPILE` false) has only the first
//! two: while the control plane has not yet compiled a module for it, the module waits
//! ([`Launch::AwaitsNative`], reported `fetching`) — the control plane sends a new desired
//! state when the code is ready.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use wedge_broker::LocalPublisher;
use wedge_proto::Digest;
use wedge_proto::messages::{ModuleSpec, NativeArtifact};
use wedge_proto::rules::{MIN_CALL_TIMEOUT_MS, MIN_MEMORY_BYTES, MIN_TICK_MS};
use wedge_proto::signing::{self, Covers, Signed};

use super::NodeProfile;
use crate::buffer::Buffer;
use crate::events::EventSink;
use crate::runtime::{HostContext, Instance, InstanceConfig, Queue, Runtime};
use crate::store::Store;

/// What came of launching a module.
#[derive(Debug)]
pub enum Launch {
    Started(Box<Instance>),
    /// This blob (the module's, or its native code) is not in the store yet.
    NeedsBlob {
        digest: Digest,
        size: u64,
    },
    /// This build cannot compile, and the desired state offers no native code for it yet.
    AwaitsNative,
}

/// Where a module's code comes from.
enum Code {
    Ready(crate::runtime::Compiled),
    Needs(Digest, u64),
    AwaitsNative,
}

/// The parts of the node an instance is made from.
#[derive(Debug)]
pub struct Launcher {
    pub store: Store,
    pub buffer: Buffer,
    pub events: EventSink,
    pub runtime: Runtime,
    pub publisher: LocalPublisher,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Notified when an instance's state changes (the agent reports then).
    pub changed: Arc<Notify>,
    /// Modules (by digest) whose native code did not load: they are compiled here.
    pub native_failed: std::sync::Mutex<std::collections::HashSet<Digest>>,
}

impl Launcher {
    /// Starts an instance of `spec` under `profile`'s rules and limits on `queue` (which
    /// may already hold messages); `report` is called every heartbeat interval while the
    /// module compiles.
    pub async fn launch(
        &self,
        profile: &NodeProfile,
        spec: &ModuleSpec,
        queue: Queue,
        report: impl Fn(),
    ) -> Result<Launch, String> {
        check(profile, spec)?;
        let config = instance_config(profile, spec)?;
        let compiled = match self.code(profile, spec, report).await? {
            Code::Ready(compiled) => compiled,
            Code::Needs(digest, size) => return Ok(Launch::NeedsBlob { digest, size }),
            Code::AwaitsNative => return Ok(Launch::AwaitsNative),
        };
        let host = self.host_context(profile, spec, queue.stats())?;
        Instance::start_with_queue(
            self.runtime.clone(),
            &compiled,
            host,
            config,
            queue,
            self.changed.clone(),
        )
        .map(|instance| Launch::Started(Box::new(instance)))
        .map_err(|e| format!("cannot start module thread: {e}"))
    }

    /// The native code the node would load for `spec`, if it is offered and usable.
    pub fn native<'a>(
        &self,
        profile: &NodeProfile,
        spec: &'a ModuleSpec,
    ) -> Option<&'a NativeArtifact> {
        let native = spec.native.as_ref()?;
        (profile.precompile_key.as_ref() == Some(&native.key) && !self.refused_native(&spec.digest))
            .then_some(native)
    }

    /// Whether the native code of `module` did not load here.
    fn refused_native(&self, module: &Digest) -> bool {
        self.native_failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(module)
    }

    /// `spec`'s compiled code from the node's cache (counted), if it holds a loadable entry.
    async fn cached_code(&self, spec: &ModuleSpec) -> Result<Option<Code>, String> {
        let runtime = self.runtime.clone();
        let digest = spec.digest;
        let cached = tokio::task::spawn_blocking(move || runtime.cached(&digest))
            .await
            .map_err(|e| e.to_string())?;
        let Some(compiled) = cached else {
            return Ok(None);
        };
        self.metrics.loads("cache").inc();
        compiled
            .map(|c| Some(Code::Ready(c)))
            .map_err(|e| e.to_string())
    }

    /// Gives up on `spec`'s native code: the module is compiled here from now on.
    pub fn refuse_native(&self, module: Digest) {
        self.native_failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(module);
    }

    /// The code of `spec` for a node that cannot compile: from the cache, or wait.
    async fn without_compiler(&self, spec: &ModuleSpec) -> Result<Code, String> {
        if let Some(code) = self.cached_code(spec).await? {
            return Ok(code);
        }
        if self.refused_native(&spec.digest) {
            return Err(format!(
                "the control plane's native code for it does not load here (see the log), and {}",
                crate::runtime::Error::NoCompiler
            ));
        }
        Ok(Code::AwaitsNative)
    }

    async fn code(
        &self,
        profile: &NodeProfile,
        spec: &ModuleSpec,
        report: impl Fn(),
    ) -> Result<Code, String> {
        let source = |s: &str| self.metrics.loads(s);
        if let Some(native) = self.native(profile, spec) {
            if let Some(code) = self.cached_code(spec).await? {
                return Ok(code);
            }
            let digest = spec.digest;
            let Some(artifact) = self.store.blob(&native.digest).map_err(|e| e.to_string())? else {
                return Ok(Code::Needs(native.digest, native.size));
            };
            let runtime = self.runtime.clone();
            let loaded =
                tokio::task::spawn_blocking(move || runtime.load_native(&digest, &artifact)).await;
            match loaded {
                Ok(Ok((compiled, _))) => {
                    tracing::info!(
                        module = spec.name,
                        key = native.key,
                        "module loaded from native code the control plane compiled"
                    );
                    source("precompiled").inc();
                    return Ok(Code::Ready(compiled));
                }
                Ok(Err(e)) => {
                    tracing::warn!(module = spec.name, error = %e, "the control plane's native code does not load here; compiling the module");
                }
                Err(e) => {
                    tracing::warn!(module = spec.name, error = %e, "loading native code failed; compiling the module")
                }
            }
            self.refuse_native(spec.digest);
        }
        if !wedge_engine::CAN_COMPILE {
            return self.without_compiler(spec).await;
        }
        let Some(blob) = self.store.blob(&spec.digest).map_err(|e| e.to_string())? else {
            return Ok(Code::Needs(spec.digest, spec.size));
        };
        let (compiled, from) = self.compile(profile, spec, blob, report).await?;
        use crate::runtime::cache::Source;
        let counted = match from {
            Source::Cached => "cache",
            Source::Precompiled => "precompiled",
            Source::Compiled | Source::CompiledInChild => "compiled",
        };
        source(counted).inc();
        match from {
            Source::Compiled => drop(self.metrics.compiles("in_process").inc()),
            Source::CompiledInChild => drop(self.metrics.compiles("child").inc()),
            Source::Cached | Source::Precompiled => {}
        }
        Ok(Code::Ready(compiled))
    }

    async fn compile(
        &self,
        profile: &NodeProfile,
        spec: &ModuleSpec,
        blob: Vec<u8>,
        report: impl Fn(),
    ) -> Result<(crate::runtime::Compiled, crate::runtime::cache::Source), String> {
        let runtime = self.runtime.clone();
        let digest = spec.digest;
        let started = Instant::now();
        let mut load = tokio::task::spawn_blocking(move || {
            let loaded = runtime.load(&digest, &blob);
            Runtime::release_compile_memory();
            loaded
        });
        // Compiling can take many seconds on a small device; the node keeps reporting
        // meanwhile, or the control plane would take it for dead.
        let mut heartbeat = tokio::time::interval(profile.heartbeat_interval);
        heartbeat.tick().await; // the first tick is immediate
        let loaded = loop {
            tokio::select! {
                loaded = &mut load => break loaded,
                _ = heartbeat.tick() => report(),
            }
        };
        let (compiled, source) = loaded
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        tracing::info!(module = spec.name, %digest, ?source, took = ?started.elapsed(), "module loaded");
        Ok((compiled, source))
    }

    fn host_context(
        &self,
        profile: &NodeProfile,
        spec: &ModuleSpec,
        stats: Arc<crate::runtime::Stats>,
    ) -> Result<HostContext, String> {
        let defaults = &profile.limits;
        let kv = self
            .store
            .kv(
                &spec.name,
                spec.limits.kv_bytes.unwrap_or(defaults.kv_bytes),
            )
            .map_err(|e| format!("cannot open the module's key-value store: {e}"))?;
        Ok(HostContext {
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
            stats,
            metrics: self.metrics.module(&spec.name),
            events: self.events.clone(),
            tap: None,
        })
    }
}

/// Whether `spec` may run on this node at all: signed as the node requires (the signature
/// covers the module's name, version and digest, which the desired state carries; checked
/// before fetching), and not larger than the node accepts.
fn check(profile: &NodeProfile, spec: &ModuleSpec) -> Result<(), String> {
    let signed = Signed {
        name: &spec.module,
        version: &spec.version,
        digest: &spec.digest,
    };
    signing::check(spec.signature.as_ref(), signed, &profile.trusted_publishers)
        .map_err(|e| e.to_string())?;
    if let Some(sig) = &spec.signature
        && sig.covers == Covers::DigestOnly
        && !profile.trusted_publishers.is_empty()
    {
        tracing::warn!(module = %spec.name, "runs under a legacy digest-only signature: \
            it does not bind the module's name and version; re-sign it (wedgectl modules push --sign-key)");
    }
    if spec.size > profile.max_module_size {
        return Err(format!(
            "module of {} bytes is over this node's max_module_size = {} (raise it with \
             --max-module-size, WEDGE_MAX_MODULE_SIZE or max_module_size in the config file)",
            spec.size, profile.max_module_size
        ));
    }
    Ok(())
}

/// The instance's limits: the deployment's, else the node's defaults.
fn instance_config(profile: &NodeProfile, spec: &ModuleSpec) -> Result<InstanceConfig, String> {
    let defaults = &profile.limits;
    let memory_bytes = spec.limits.memory_bytes.unwrap_or(defaults.memory_bytes);
    if memory_bytes < MIN_MEMORY_BYTES {
        return Err(format!(
            "limits.memory_bytes = {memory_bytes} is below the minimum of {MIN_MEMORY_BYTES}"
        ));
    }
    Ok(InstanceConfig {
        name: spec.name.clone(),
        digest: spec.digest,
        config: spec.config.clone(),
        limits: defaults.instance(memory_bytes),
        call_timeout: Duration::from_millis(
            spec.limits
                .call_timeout_ms
                .unwrap_or(defaults.call_timeout_ms)
                .max(MIN_CALL_TIMEOUT_MS),
        ),
        queue: defaults.queue,
        tick: spec
            .tick_ms
            .map(|ms| Duration::from_millis(ms.max(MIN_TICK_MS))),
    })
}
