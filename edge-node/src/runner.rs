//! `wedge-node module run`: one module on a developer's machine, with the node's host, limits
//! and checks, fed from standard input or from devices on a local broker, printing what it
//! does.
//!
//! Input: each line of standard input is a message, `TOPIC PAYLOAD` (the payload is the rest
//! of the line, as text); lines whose topic matches none of `--subscribe` are skipped, as on a
//! node. With `--mqtt-listen`, devices may also publish to the embedded broker there; the run
//! then lasts until SIGINT/SIGTERM, otherwise until standard input ends and the module has
//! handled every line.
//!
//! Output: one JSON object per line on standard output, `{"publish": {"topic", "payload"}}` or
//! `{"emit": {"stream", "payload"}}` (the payload as text when it is UTF-8, else as
//! `payload_hex`), and at the end `{"stats": {...}}`; the module's log lines and failures go to
//! standard error. The exit code is 1 when the module failed (it did not start, or trapped).
//!
//! Why the same parts as a node and not a lighter host: a module that passes here passes on a
//! node — the same import check, limits, rate limits, key-value store and local broker.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use wedge_proto::Digest;
use wedge_proto::messages::ModuleState;

use crate::config::ModuleLimits;
use crate::router::{Route, RouteTable};
use crate::runtime::host::Tapped;
use crate::runtime::{HostContext, Instance, InstanceConfig, Message, Runtime};

/// What to run and how.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub file: PathBuf,
    /// JSON text for `init`.
    pub config: String,
    /// Topic filters the module receives.
    pub subscribe: Vec<String>,
    /// Period of `on-tick`, if any.
    pub tick: Option<Duration>,
    /// Where devices may publish; none: standard input only.
    pub mqtt_listen: Option<SocketAddr>,
    /// Topic prefixes the module may publish under (empty: any non-reserved topic).
    pub publish_prefixes: Vec<String>,
    pub limits: ModuleLimits,
    pub max_module_size: u64,
}

/// Runs the module until its input ends (or a signal, with `--mqtt-listen`); returns
/// whether it ran without failing.
pub async fn run(options: RunOptions) -> anyhow::Result<bool> {
    let bytes = std::fs::read(&options.file)
        .with_context(|| format!("cannot read {}", options.file.display()))?;
    if bytes.len() as u64 > options.max_module_size {
        bail!(
            "{} is {} bytes, over max_module_size = {} (raise it with --max-module-size)",
            options.file.display(),
            bytes.len(),
            options.max_module_size
        );
    }
    // The module's key-value store and emitted records live in a scratch directory.
    let data = std::env::temp_dir().join(format!("wedge-module-run-{}", std::process::id()));
    let result = run_in(options, bytes, &data).await;
    let _ = std::fs::remove_dir_all(&data);
    result
}

async fn run_in(
    options: RunOptions,
    bytes: Vec<u8>,
    data: &std::path::Path,
) -> anyhow::Result<bool> {
    let store = crate::store::Store::open(data)?;
    let buffer = store.buffer(64 * 1024 * 1024, Default::default())?;
    let runtime = Runtime::new(None)?;
    let started = std::time::Instant::now();
    let compiled = tokio::task::spawn_blocking({
        let runtime = runtime.clone();
        move || {
            let compiled = runtime.compile(&bytes);
            Runtime::release_compile_memory();
            compiled
        }
    })
    .await??;
    tracing::info!(took = ?started.elapsed(), "module compiled");

    let listen = options
        .mqtt_listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let mut broker_config = wedge_broker::Config::new(listen);
    // Devices connect without a password, and read at the router's pace as on a node.
    let devices = crate::devices::DeviceGate::new(&crate::devices::DevicesConfig {
        allow_anonymous: true,
        ..Default::default()
    })?;
    let pace = devices.pace();
    broker_config.gate = Some(Arc::new(crate::devices::SharedDeviceGate(devices)));
    let (broker, publisher, receiver) = tokio::task::spawn_blocking(move || {
        wedge_broker::EmbeddedBroker::start_with_link(&broker_config, "wedge-module-run")
    })
    .await?
    .context("cannot start the local MQTT broker")?;
    publisher.subscribe("#")?;
    if options.mqtt_listen.is_some() {
        tracing::info!(addr = %broker.local_addr(), "devices may publish to the local broker");
    }

    let (events, mut events_rx) = crate::events::EventSink::new();
    let metrics = crate::metrics::Metrics::new(buffer.clone(), Default::default(), pace.clone());
    let (tap, tapped) = std::sync::mpsc::sync_channel(1024);
    let name = "module";
    let limits = &options.limits;
    let host = HostContext {
        module: name.into(),
        publisher,
        buffer,
        kv: store.kv(name, limits.kv_bytes)?,
        publish_prefixes: options.publish_prefixes.clone(),
        publish_per_sec: limits.publish_per_sec.max(1),
        stats: Default::default(),
        metrics: metrics.module(name),
        events,
        tap: Some(tap),
    };
    let config = InstanceConfig {
        name: name.into(),
        digest: Digest::of(options.file.to_string_lossy().as_bytes()),
        config: options.config.clone(),
        limits: limits.instance(limits.memory_bytes),
        call_timeout: Duration::from_millis(limits.call_timeout_ms),
        queue: limits.queue,
        tick: options.tick,
    };
    let changed = Arc::new(tokio::sync::Notify::new());
    let instance = Instance::start(runtime, &compiled, host, config, changed)?;
    let inbox = instance.inbox();

    let printer = std::thread::spawn(move || print_tapped(tapped));
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let events_task = tokio::spawn({
        let failed = failed.clone();
        async move {
            while let Some(event) = events_rx.recv().await {
                if matches!(
                    event.kind,
                    wedge_proto::messages::EventKind::ModuleFailed { .. }
                ) {
                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                tracing::debug!(event = ?event.kind, "module event");
            }
        }
    });

    let shutdown = CancellationToken::new();
    let table = RouteTable::default();
    let routes = vec![Route {
        module: name.into(),
        filters: options.subscribe.clone(),
        inbox: inbox.clone(),
    }];
    if options.mqtt_listen.is_some() {
        table.replace(routes.clone());
    }
    let router = tokio::spawn(crate::router::run(receiver, table, pace, shutdown.clone()));

    // Standard input, read on a blocking thread: a line waits while the module's queue is
    // full, so a file of any length is handled whole.
    let filters = options.subscribe.clone();
    let stdin = tokio::task::spawn_blocking(move || feed_stdin(&filters, &routes[0].inbox));
    let (sent, skipped) = stdin.await??;
    if skipped > 0 {
        tracing::warn!(
            skipped,
            "input lines skipped: no topic, or a topic outside --subscribe"
        );
    }
    if options.mqtt_listen.is_some() {
        wedge_service::process::shutdown_signal().await;
    }
    // Let the module finish what was sent (unless it failed), then stop it.
    let until = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = instance.status();
        let handled = status.stats.messages + status.stats.errors;
        if handled >= sent
            || status.state == ModuleState::Failed
            || std::time::Instant::now() > until
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(inbox);
    let status = instance.status();
    if let Some(thread) = instance.stop() {
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
    shutdown.cancel();
    let _ = router.await;
    let _ = printer.join();
    events_task.abort();
    let stats = status.stats;
    println!(
        "{}",
        json!({"stats": {
            "state": status.state.as_str(),
            "messages": stats.messages,
            "errors": stats.errors,
            "dropped": stats.dropped,
            "published": stats.published,
            "refused": stats.refused,
            "emitted": stats.emitted,
        }})
    );
    if let Some(error) = &status.last_error {
        eprintln!("module failed: {error}");
    }
    Ok(status.state != ModuleState::Failed && !failed.load(std::sync::atomic::Ordering::Relaxed))
}

/// Sends each `TOPIC PAYLOAD` line of standard input whose topic matches `filters`; returns
/// how many lines were sent and how many skipped.
fn feed_stdin(
    filters: &[String],
    inbox: &crate::runtime::instance::Inbox,
) -> anyhow::Result<(u64, u64)> {
    let (mut sent, mut skipped) = (0, 0);
    for line in std::io::stdin().lines() {
        let line = line.context("cannot read standard input")?;
        let (topic, payload) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        if topic.is_empty()
            || wedge_proto::topics::validate_topic(topic).is_err()
            || !filters
                .iter()
                .any(|f| wedge_proto::topics::matches(f, topic))
        {
            skipped += 1;
            continue;
        }
        let message = Message {
            topic: topic.into(),
            payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
        };
        if !inbox.send(message) {
            break;
        }
        sent += 1;
    }
    Ok((sent, skipped))
}

/// Prints what the module did, one JSON object per line, until the module is gone.
fn print_tapped(tapped: std::sync::mpsc::Receiver<Tapped>) {
    let stdout = std::io::stdout();
    for item in tapped {
        let (kind, key, name, payload) = match item {
            Tapped::Published { topic, payload } => ("publish", "topic", topic, payload),
            Tapped::Emitted { stream, payload } => ("emit", "stream", stream, payload),
        };
        let body = match String::from_utf8(payload) {
            Ok(text) => json!({key: name, "payload": text}),
            Err(e) => json!({key: name, "payload_hex": hex::encode(e.as_bytes())}),
        };
        let mut out = stdout.lock();
        // A closed stdout (`| head`) ends the printing, not the module.
        if writeln!(out, "{}", json!({kind: body})).is_err() {
            return;
        }
    }
}
