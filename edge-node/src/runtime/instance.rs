//! One module instance on its own thread, supervised.
//!
//! Why a thread per instance: a module call is synchronous CPU work bounded only by its
//! deadline; on its own thread it can never stall the async runtime that runs the uplink
//! and the other modules. Messages reach it over a bounded queue; when it is full the
//! router either waits for room (messages their publisher was told were delivered) or
//! drops and counts them (QoS 0); nothing is buffered without bound (see `router`).
//!
//! Life of an instance: instantiate → `init(config)` → `on-message` for each message and
//! `on-tick` every tick period. A trap anywhere (including a deadline overrun or a failed
//! memory grow) discards the instance; after a backoff (200 ms doubling to 30 s, reset after
//! 10 s of healthy running) a fresh one is started from the same compiled component.
//!
//! Stopping (a new version replaced it, or the node shuts down) first lets the instance
//! handle what is already in its queue, for at most [`DRAIN_BUDGET`]: the router already
//! sends new messages to the replacement, so a deploy loses nothing in flight.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use wasmtime::Store;
use wedge_proto::Digest;
use wedge_proto::messages::{EventKind, ModuleState, ModuleStatus};

use super::bindings;
use super::host::{HostContext, HostState, Stats};
use super::{Compiled, EPOCH_TICK, Runtime};

const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// How often an idle instance thread checks whether it should stop.
const POLL: Duration = Duration::from_millis(100);
/// Most messages handled in a row before ticks and stop requests are looked at again.
const BATCH: u64 = 256;
/// Longest a stopping instance spends on the messages still queued for it.
pub const DRAIN_BUDGET: Duration = Duration::from_secs(2);

/// A local message for a module. Shared, not copied, when several modules take it.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: Arc<str>,
    pub payload: bytes::Bytes,
}

/// How to run one instance.
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    pub name: String,
    pub digest: Digest,
    /// JSON text for `init`.
    pub config: String,
    pub limits: super::InstanceLimits,
    pub call_timeout: Duration,
    pub queue: usize,
    /// Period of `on-tick`, if any.
    pub tick: Option<Duration>,
}

/// Where the router sends an instance's messages.
#[derive(Debug, Clone)]
pub struct Inbox {
    tx: flume::Sender<Message>,
    stats: Arc<Stats>,
    /// The module's `wedge_module_dropped_total`.
    dropped: prometheus_client::metrics::counter::Counter,
}

/// An instance's queue, made before the instance so that messages arriving while its
/// module compiles wait in it (bounded by `queue`) instead of finding no route.
#[derive(Debug)]
pub struct Queue {
    inbox: Inbox,
    pub(crate) rx: flume::Receiver<Message>,
}

impl Queue {
    /// A queue of `len` messages whose drops count in `stats` and `dropped`.
    pub fn new(
        len: usize,
        stats: Arc<Stats>,
        dropped: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        let (tx, rx) = flume::bounded(len);
        Self {
            inbox: Inbox { tx, stats, dropped },
            rx,
        }
    }

    pub fn inbox(&self) -> Inbox {
        self.inbox.clone()
    }

    /// The counters its drops (and, once it runs, its instance) count in.
    pub fn stats(&self) -> Arc<Stats> {
        self.inbox.stats.clone()
    }
}

impl Inbox {
    /// Queues a message, waiting while the queue is full; `false` when the instance is
    /// gone. For `wedge-node module run`, which reads its input as fast as the module
    /// takes it.
    pub fn send(&self, message: Message) -> bool {
        self.tx.send(message).is_ok()
    }

    /// Queues a message without blocking; a full queue drops it and counts the drop.
    pub fn offer(&self, message: Message) {
        if self.try_offer(message).is_some() {
            self.count_drop();
        }
    }

    /// Queues a message if there is room; hands it back when the queue is full. A message
    /// for an instance that is gone is dropped and counted.
    pub fn try_offer(&self, message: Message) -> Option<Message> {
        match self.tx.try_send(message) {
            Ok(()) => None,
            Err(flume::TrySendError::Full(message)) => Some(message),
            Err(flume::TrySendError::Disconnected(_)) => {
                self.count_drop();
                None
            }
        }
    }

    /// Queues a message, waiting for room; `false` when the instance is gone.
    pub async fn wait_send(&self, message: Message) -> bool {
        self.tx.send_async(message).await.is_ok()
    }

    /// Counts a message this module will not see.
    pub fn count_drop(&self) {
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        self.dropped.inc();
    }

    /// Messages waiting, and room in all.
    pub fn fill(&self) -> (usize, usize) {
        (self.tx.len(), self.tx.capacity().unwrap_or(usize::MAX))
    }

    /// Whether the instance is gone (nothing will take from the queue again).
    pub fn closed(&self) -> bool {
        self.tx.is_disconnected()
    }

    /// Whether both lead to the same queue.
    pub fn same(&self, other: &Inbox) -> bool {
        self.tx.same_channel(&other.tx)
    }
}

/// A running (or restarting) module instance.
#[derive(Debug)]
pub struct Instance {
    config: InstanceConfig,
    inbox: Inbox,
    status: Arc<Mutex<ModuleStatus>>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Instance {
    /// Starts the instance's thread. `changed` is notified whenever its state changes.
    pub fn start(
        runtime: Runtime,
        module: &Compiled,
        host: HostContext,
        config: InstanceConfig,
        changed: Arc<Notify>,
    ) -> std::io::Result<Self> {
        let queue = Queue::new(
            config.queue,
            host.stats.clone(),
            host.metrics.dropped.clone(),
        );
        Self::start_with_queue(runtime, module, host, config, queue, changed)
    }

    /// Starts the instance on `queue`, which may already hold messages.
    pub fn start_with_queue(
        runtime: Runtime,
        module: &Compiled,
        host: HostContext,
        config: InstanceConfig,
        queue: Queue,
        changed: Arc<Notify>,
    ) -> std::io::Result<Self> {
        let Queue { inbox, rx } = queue;
        let status = Arc::new(Mutex::new(ModuleStatus {
            name: config.name.clone(),
            digest: config.digest,
            state: ModuleState::Starting,
            last_error: None,
            restarts: 0,
            stats: Default::default(),
        }));
        let stats = host.stats.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let supervisor = Supervisor {
            runtime,
            module: module.clone(),
            host,
            config: config.clone(),
            rx,
            status: status.clone(),
            stop: stop.clone(),
            changed,
        };
        let thread = std::thread::Builder::new()
            .name(format!("module-{}", config.name))
            .spawn(move || supervisor.run())?;
        Ok(Self {
            config,
            inbox,
            status,
            stats,
            stop,
            thread: Some(thread),
        })
    }

    pub fn config(&self) -> &InstanceConfig {
        &self.config
    }

    pub fn inbox(&self) -> Inbox {
        self.inbox.clone()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn status(&self) -> ModuleStatus {
        let mut status = lock(&self.status).clone();
        status.stats = self.stats.snapshot();
        status
    }

    /// Asks the thread to stop after its current call and returns its handle to join.
    pub fn stop(mut self) -> Option<JoinHandle<()>> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
        self.thread.take()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn lock(m: &Mutex<ModuleStatus>) -> std::sync::MutexGuard<'_, ModuleStatus> {
    // A poisoned status is still a valid status.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Supervisor {
    runtime: Runtime,
    module: Compiled,
    host: HostContext,
    config: InstanceConfig,
    rx: flume::Receiver<Message>,
    status: Arc<Mutex<ModuleStatus>>,
    stop: Arc<AtomicBool>,
    changed: Arc<Notify>,
}

/// Why an instance ended.
enum End {
    Stopped,
    Failed(String),
}

impl Supervisor {
    fn run(self) {
        let mut backoff = BACKOFF_START;
        loop {
            let started = Instant::now();
            match self.run_once() {
                End::Stopped => return,
                End::Failed(error) => {
                    // The setting goes first: a long error would be cut before it.
                    let error = match self.config.limits.setting_hint(&error) {
                        Some(setting) => format!("{setting}: {error}"),
                        None => error,
                    };
                    let error = wedge_proto::messages::bounded_text(
                        error,
                        wedge_proto::messages::MAX_ERROR_TEXT,
                    );
                    tracing::warn!(module = self.config.name, error, retry_in = ?backoff, "module failed");
                    self.host.events.send(
                        Some(&self.config.name),
                        EventKind::ModuleFailed {
                            error: error.clone(),
                        },
                    );
                    {
                        let mut s = lock(&self.status);
                        s.state = ModuleState::Failed;
                        s.last_error = Some(error);
                    }
                    self.changed.notify_one();
                }
            }
            if started.elapsed() > HEALTHY_AFTER {
                backoff = BACKOFF_START;
            }
            if !self.wait(backoff) {
                return;
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
            lock(&self.status).restarts += 1;
            self.host.metrics.restarts.inc();
        }
    }

    /// Sleeps for `d` unless told to stop; returns whether to go on.
    fn wait(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= until {
                return true;
            }
            std::thread::park_timeout(until - now);
        }
        false
    }

    fn set_state(&self, state: ModuleState) {
        lock(&self.status).state = state;
        self.changed.notify_one();
    }

    fn deadline_ticks(&self) -> u64 {
        (self.config.call_timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
    }

    fn run_once(&self) -> End {
        // A restart after a failure stays `failed` until it runs: restart back-off is one
        // problem, not a failure and a start every few seconds.
        if lock(&self.status).state != ModuleState::Failed {
            self.set_state(ModuleState::Starting);
        }
        let state = HostState::new(self.host.clone(), &self.config.limits);
        let mut store = Store::new(self.runtime.engine(), state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.deadline_ticks());

        let module = match self.module.pre.instantiate(&mut store) {
            Ok(m) => m,
            Err(e) => return End::Failed(format!("instantiation failed: {e:#}")),
        };
        store.set_epoch_deadline(self.deadline_ticks());
        let started = Instant::now();
        let init = module.call_init(&mut store, &self.config.config);
        self.host
            .metrics
            .init_seconds
            .observe(started.elapsed().as_secs_f64());
        match init {
            Ok(Ok(())) => {}
            Ok(Err(refused)) => return End::Failed(format!("init refused: {refused}")),
            Err(trap) => {
                self.host.metrics.traps.inc();
                return End::Failed(format!("trapped in init: {trap:#}"));
            }
        }
        self.set_state(ModuleState::Running);
        self.host
            .events
            .send(Some(&self.config.name), EventKind::ModuleStarted);

        let mut next_tick = self.config.tick.map(|t| Instant::now() + t);
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return self.drain(&module, &mut store);
            }
            if let (Some(at), Some(period)) = (next_tick, self.config.tick)
                && Instant::now() >= at
            {
                let now = Instant::now();
                // A tick that ran late is not repeated to catch up.
                next_tick = Some(if at + period > now {
                    at + period
                } else {
                    now + period
                });
                store.set_epoch_deadline(self.deadline_ticks());
                let started = Instant::now();
                let tick = module.call_on_tick(&mut store, wedge_proto::now_ms());
                self.host
                    .metrics
                    .tick_seconds
                    .observe(started.elapsed().as_secs_f64());
                match tick {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => self.guest_error("tick", &error),
                    Err(trap) => {
                        self.host.metrics.traps.inc();
                        return End::Failed(format!("trapped on tick: {trap:#}"));
                    }
                }
            }
            let wait = next_tick
                .map(|at| at.saturating_duration_since(Instant::now()).min(POLL))
                .unwrap_or(POLL);
            let msg = match self.rx.recv_timeout(wait) {
                Ok(m) => m,
                Err(flume::RecvTimeoutError::Timeout) => continue,
                Err(flume::RecvTimeoutError::Disconnected) => return End::Stopped,
            };
            if let Err(end) = self.handle_batch(&module, &mut store, msg) {
                return end;
            }
        }
    }

    /// Handles `first` and what else is queued now, up to [`BATCH`] messages, before the
    /// loop looks at ticks and stop requests again; the counters move once per batch.
    fn handle_batch(
        &self,
        module: &bindings::Module,
        store: &mut Store<HostState>,
        first: Message,
    ) -> Result<(), End> {
        let (mut taken, mut handled) = (0, 0);
        let mut next = Some(first);
        let outcome = loop {
            let Some(msg) = next.take() else {
                break Ok(());
            };
            taken += 1;
            match self.handle(module, store, msg) {
                Ok(ok) => handled += u64::from(ok),
                Err(end) => break Err(end),
            }
            if taken < BATCH {
                next = self.rx.try_recv().ok();
            }
        };
        self.host.metrics.messages_in.inc_by(taken);
        self.host
            .stats
            .messages
            .fetch_add(handled, Ordering::Relaxed);
        outcome
    }

    /// One call of `on-message`: `Ok(true)` handled, `Ok(false)` the module returned an
    /// error (counted), `Err` the instance ends.
    fn handle(
        &self,
        module: &bindings::Module,
        store: &mut Store<HostState>,
        msg: Message,
    ) -> Result<bool, End> {
        store.set_epoch_deadline(self.deadline_ticks());
        let started = Instant::now();
        let result = module.call_on_message(&mut *store, &msg.topic, &msg.payload);
        self.host
            .metrics
            .message_seconds
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(Ok(())) => Ok(true),
            Ok(Err(error)) => {
                self.guest_error(&msg.topic, &error);
                Ok(false)
            }
            Err(trap) => {
                self.host.metrics.traps.inc();
                Err(End::Failed(format!(
                    "trapped on message from {}: {trap:#}",
                    msg.topic
                )))
            }
        }
    }

    fn guest_error(&self, source: &str, error: &str) {
        let n = self.host.stats.errors.fetch_add(1, Ordering::Relaxed);
        if n.is_multiple_of(100) {
            tracing::warn!(
                module = self.config.name,
                source,
                error,
                errors = n + 1,
                "module returned an error"
            );
        }
    }

    /// Handles what is still queued, within [`DRAIN_BUDGET`].
    fn drain(&self, module: &bindings::Module, store: &mut Store<HostState>) -> End {
        let until = Instant::now() + DRAIN_BUDGET;
        while Instant::now() < until {
            match self.rx.try_recv() {
                Ok(msg) => {
                    if self.handle_batch(module, store, msg).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        End::Stopped
    }
}
