//! One module instance on its own thread, supervised.
//!
//! Why a thread per instance: a module call is synchronous CPU work bounded only by its
//! deadline; on its own thread it can never stall the async runtime that runs the uplink
//! and the other modules. Messages reach it over a bounded queue; when it is full, new
//! messages are dropped and counted rather than buffered without bound.
//!
//! Life of an instance: instantiate → `init(config)` → `on-message` for each message. A
//! trap anywhere (including a deadline overrun or a failed memory grow) discards the
//! instance; after a backoff (200 ms doubling to 30 s, reset after 10 s of healthy running)
//! a fresh one is started from the same compiled component.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use wasmtime::Store;
use wasmtime::component::Component;
use wedge_broker::LocalPublisher;
use wedge_shared::Digest;
use wedge_shared::messages::{ModuleState, ModuleStatus};

use super::bindings;
use super::host::{HostCounters, HostState};
use super::{EPOCH_TICK, Runtime};

const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// How often an idle instance thread checks whether it should stop.
const POLL: Duration = Duration::from_millis(100);

/// A local message for a module.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// How to run one instance.
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    pub name: String,
    pub digest: Digest,
    /// JSON text for `init`.
    pub config: String,
    pub memory_bytes: usize,
    pub call_timeout: Duration,
    pub queue: usize,
}

/// Where the router sends an instance's messages.
#[derive(Debug, Clone)]
pub struct Inbox {
    tx: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
}

impl Inbox {
    /// Queues a message without blocking; a full queue drops it and counts the drop.
    pub fn offer(&self, message: Message) {
        match self.tx.try_send(message) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Counters of one instance.
#[derive(Debug, Default)]
pub struct Counters {
    pub handled: AtomicU64,
    pub guest_errors: AtomicU64,
    pub host: Arc<HostCounters>,
}

/// A running (or restarting) module instance.
#[derive(Debug)]
pub struct Instance {
    config: InstanceConfig,
    inbox: Inbox,
    status: Arc<Mutex<ModuleStatus>>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Instance {
    /// Starts the instance's thread. `changed` is notified whenever its state changes.
    pub(crate) fn start(
        runtime: Runtime,
        component: Component,
        publisher: LocalPublisher,
        config: InstanceConfig,
        changed: Arc<Notify>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(config.queue);
        let status = Arc::new(Mutex::new(ModuleStatus {
            name: config.name.clone(),
            digest: config.digest,
            state: ModuleState::Starting,
            last_error: None,
            restarts: 0,
        }));
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let supervisor = Supervisor {
            runtime,
            component,
            publisher,
            config: config.clone(),
            rx,
            status: status.clone(),
            counters: counters.clone(),
            stop: stop.clone(),
            changed,
        };
        let thread = std::thread::Builder::new()
            .name(format!("module-{}", config.name))
            .spawn(move || supervisor.run())?;
        Ok(Self {
            config,
            inbox: Inbox {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            status,
            counters,
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

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn dropped(&self) -> u64 {
        self.inbox.dropped.load(Ordering::Relaxed)
    }

    pub fn status(&self) -> ModuleStatus {
        lock(&self.status).clone()
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
    component: Component,
    publisher: LocalPublisher,
    config: InstanceConfig,
    rx: Receiver<Message>,
    status: Arc<Mutex<ModuleStatus>>,
    counters: Arc<Counters>,
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
                    tracing::warn!(module = self.config.name, error, retry_in = ?backoff, "module failed");
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
        self.set_state(ModuleState::Starting);
        let state = HostState::new(
            self.config.name.as_str().into(),
            self.publisher.clone(),
            self.config.memory_bytes,
            self.counters.host.clone(),
        );
        let mut store = Store::new(self.runtime.engine(), state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.deadline_ticks());

        let module =
            match bindings::Module::instantiate(&mut store, &self.component, self.runtime.linker())
            {
                Ok(m) => m,
                Err(e) => return End::Failed(format!("instantiation failed: {e:#}")),
            };
        store.set_epoch_deadline(self.deadline_ticks());
        match module.call_init(&mut store, &self.config.config) {
            Ok(Ok(())) => {}
            Ok(Err(refused)) => return End::Failed(format!("init refused: {refused}")),
            Err(trap) => return End::Failed(format!("trapped in init: {trap:#}")),
        }
        self.set_state(ModuleState::Running);

        loop {
            if self.stop.load(Ordering::Relaxed) {
                return End::Stopped;
            }
            let msg = match self.rx.recv_timeout(POLL) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return End::Stopped,
            };
            store.set_epoch_deadline(self.deadline_ticks());
            match module.call_on_message(&mut store, &msg.topic, &msg.payload) {
                Ok(Ok(())) => {
                    self.counters.handled.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(error)) => {
                    let n = self.counters.guest_errors.fetch_add(1, Ordering::Relaxed);
                    if n.is_multiple_of(100) {
                        tracing::warn!(
                            module = self.config.name,
                            topic = msg.topic,
                            error,
                            errors = n + 1,
                            "module returned an error"
                        );
                    }
                }
                Err(trap) => {
                    return End::Failed(format!("trapped on message from {}: {trap:#}", msg.topic));
                }
            }
        }
    }
}
