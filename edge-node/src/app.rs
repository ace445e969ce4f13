//! Startup and shutdown of an edge node.
//!
//! Order: validate config → open the store → start the local broker → start the runtime →
//! boot the saved desired state (modules run before any uplink exists) → start the router,
//! the uplink session and the agent. Shutdown: cancel → the agent stops the modules → the
//! uplink says a graceful goodbye → the store is flushed. The embedded broker has no
//! shutdown and ends with the process.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wedge_broker::EmbeddedBroker;
use wedge_service::process::{Lifecycle, Service};

use crate::agent::{Agent, NodeProfile, Wiring};
use crate::config::Config;
use crate::events::{self, EventSink};
use crate::router::{self, RouteTable};
use crate::runtime::Runtime;
use crate::store::Store;
use crate::uplink;

/// The edge node.
#[derive(Debug)]
pub struct App;

/// A started edge node.
#[derive(Debug)]
pub struct Running {
    local_mqtt_addr: SocketAddr,
    http_addr: SocketAddr,
    /// The configuration in force; SIGHUP's changes go to the agent through it.
    tunables: std::sync::Arc<tokio::sync::watch::Sender<Config>>,
    lifecycle: Lifecycle,
    buffer: crate::buffer::Buffer,
}

impl App {
    /// Starts the node; returns once its local broker accepts devices and its saved
    /// modules are started.
    pub async fn start(config: Config) -> anyhow::Result<Running> {
        config.validate()?;
        let (cp_host, cp_port) = config.control_plane_addr()?;
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
        // First, before anything is open: a node that has never enrolled has nothing to run
        // yet, and a signal during enrollment then simply ends the process.
        let tls = uplink_tls(&config, &cp_host, cp_port).await?;
        let http = crate::http::bind(config.http_listen).await?;
        let http_addr = http.local_addr()?;
        let store =
            Store::open_with_flush(&config.data_dir.join("store"), config.flush_interval_ms)
                .with_context(|| {
                    format!("cannot open the store in {}", config.data_dir.display())
                })?;

        let LocalBroker {
            broker,
            publisher,
            receiver,
            tls: local_tls,
            pace,
        } = local_broker(&config).await?;
        let local_mqtt_addr = broker.local_addr();
        let broker = std::sync::Arc::new(broker);

        let buffer = store
            .buffer(config.buffer_bytes, config.buffer_full)
            .context("cannot open the telemetry buffer")?;
        let (events, events_rx) = EventSink::new();
        let runtime = Runtime::new(Some(&config.data_dir.join("module-cache")))
            .context("cannot start the WebAssembly runtime")?;
        let routes = RouteTable::default();
        let (client, session) = uplink::connect(uplink::Settings {
            node_id: config.node_id.clone(),
            host: cp_host,
            port: cp_port,
            keep_alive: Duration::from_secs(config.keep_alive_secs),
            tls,
            data_dir: config.data_dir.clone(),
            credentials: config.uplink_credentials()?,
        });
        let uplink_counters = client.counters().clone();
        let metrics = std::sync::Arc::new(crate::metrics::Metrics::new(
            buffer.clone(),
            uplink_counters.clone(),
            pace.clone(),
        ));
        let (tunables, tunables_rx) = tokio::sync::watch::channel(config.clone());
        let mut agent = Agent::new(
            profile(&config)?,
            Wiring {
                store,
                buffer: buffer.clone(),
                events,
                runtime,
                publisher,
                routes: routes.clone(),
                uplink: client.clone(),
                metrics: metrics.clone(),
                tunables: tunables_rx,
            },
        );
        // Routes are in place before the first message is read: nothing is missed.
        agent.boot().await;

        let lifecycle = Lifecycle::new("edge node");
        let shutdown = lifecycle.token();
        let tracker = lifecycle.tracker();
        let (inbound_tx, inbound_rx) = mpsc::channel(256);
        // Readiness follows the in-process link: if it closes, local messages no longer
        // reach modules, and a supervisor should know.
        let local_link = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let link_open = local_link.clone();
        let router_shutdown = shutdown.clone();
        tracker.spawn(async move {
            router::run(receiver, routes, pace, router_shutdown).await;
            link_open.store(false, std::sync::atomic::Ordering::Relaxed);
        });
        tracker.spawn(events::forward(events_rx, client.clone(), shutdown.clone()));
        // The agent stops first, then the session says goodbye: the session gets its own
        // token, cancelled when the agent is done.
        let session_stop = CancellationToken::new();
        let agent_shutdown = shutdown.clone();
        let agent_done = session_stop.clone();
        tracker.spawn(async move {
            agent.run(inbound_rx, agent_shutdown).await;
            agent_done.cancel();
        });
        let (uploads_tx, uploads_rx) = mpsc::channel(256);
        tracker.spawn(uplink::upload::run(
            buffer.clone(),
            client,
            uploads_rx,
            config.buffer_ttl_secs.map(Duration::from_secs),
            shutdown.clone(),
        ));
        tracker.spawn(crate::http::serve(
            http,
            crate::http::HttpState {
                metrics,
                broker,
                buffer: buffer.clone(),
                uplink: uplink_counters,
                local_link,
            },
            shutdown.clone(),
        ));
        tracker.spawn(session.run(inbound_tx, uploads_tx, session_stop));
        tracing::info!(node = config.node_id, local_mqtt = %local_mqtt_addr, http = %http_addr, local_tls, control_plane = config.control_plane, "edge node started");
        Ok(Running {
            local_mqtt_addr,
            http_addr,
            tunables: std::sync::Arc::new(tunables),
            lifecycle,
            buffer,
        })
    }
}

impl Running {
    /// The local broker's address (what devices connect to).
    pub fn local_mqtt_addr(&self) -> SocketAddr {
        self.local_mqtt_addr
    }

    /// The HTTP server's address (`/metrics`, `/healthz`, `/readyz`).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.lifecycle.token()
    }

    /// The node's telemetry buffer (what modules emitted, waiting for delivery).
    pub fn buffer(&self) -> &crate::buffer::Buffer {
        &self.buffer
    }

    /// Stops and waits for the tasks to finish (at most the grace period).
    pub async fn stop(self) {
        self.lifecycle.stop().await;
    }

    /// Waits until the shutdown token is cancelled, then drains.
    pub async fn wait(self) {
        self.lifecycle.wait().await;
    }
}

impl Service for Running {
    type Config = Config;

    fn shutdown_token(&self) -> CancellationToken {
        self.lifecycle.token()
    }

    fn reloader(&self) -> impl Fn(Config) + Send + 'static {
        let tunables = self.tunables.clone();
        move |new: Config| {
            let current = tunables.borrow().clone();
            let restart = new.needs_restart(&current);
            let applied = current.reloaded(new);
            tracing::info!(
                heartbeat_interval_secs = applied.heartbeat_interval_secs,
                log_level = applied.log_level.as_deref().unwrap_or("default"),
                "configuration reloaded: log level, heartbeat interval and module limits \
                 (for modules started from now on) applied"
            );
            wedge_service::process::warn_needs_restart(&restart);
            tunables.send_replace(applied);
        }
    }

    async fn wait(self) {
        Running::wait(self).await
    }
}

/// The node's TLS settings for the uplink: its certificate, enrolling first when it has
/// none (before anything else is open: a signal during enrollment simply ends the
/// process). None for a plain `mqtt://` uplink (logged).
async fn uplink_tls(
    config: &Config,
    cp_host: &str,
    cp_port: u16,
) -> anyhow::Result<Option<uplink::identity::Tls>> {
    if config.uplink_tls() {
        Ok(Some(
            uplink::identity::load_or_enroll(
                &config.node_id,
                &config.data_dir,
                cp_host,
                cp_port,
                config.enroll_token.as_deref(),
                config.ca_sha256.as_deref(),
            )
            .await?,
        ))
    } else {
        tracing::warn!("the uplink is plain MQTT (mqtt://): no TLS, no node certificate");
        Ok(None)
    }
}

/// The local broker behind the device gate, with the in-process link the router reads
/// (subscribed to everything).
struct LocalBroker {
    broker: EmbeddedBroker,
    publisher: wedge_broker::LocalPublisher,
    receiver: wedge_broker::LocalReceiver,
    /// Whether devices connect over TLS.
    tls: bool,
    /// The pace device connections read at; the router holds it.
    pace: wedge_broker::Pace,
}

async fn local_broker(config: &Config) -> anyhow::Result<LocalBroker> {
    let mut broker_cfg = wedge_broker::Config::new(config.local_mqtt_listen);
    let devices = crate::devices::DeviceGate::new(&config.devices)
        .context("cannot set up device access to the local broker")?;
    let local_tls = devices.tls();
    let pace = devices.pace();
    broker_cfg.gate = Some(std::sync::Arc::new(crate::devices::SharedDeviceGate(
        devices,
    )));
    let link_id = wedge_proto::topics::node_link_client_id(&config.node_id);
    let (broker, publisher, receiver) =
        tokio::task::spawn_blocking(move || EmbeddedBroker::start_with_link(&broker_cfg, &link_id))
            .await?
            .context("cannot start the local MQTT broker")?;
    publisher
        .subscribe("#")
        .context("cannot subscribe to the local broker")?;
    Ok(LocalBroker {
        broker,
        publisher,
        receiver,
        tls: local_tls,
        pace,
    })
}

/// What the agent knows about its node, from the configuration.
fn profile(config: &Config) -> anyhow::Result<NodeProfile> {
    Ok(NodeProfile {
        node_id: config.node_id.clone(),
        labels: config.labels.clone(),
        heartbeat_interval: config.heartbeat_interval(),
        data_dir: config.data_dir.clone(),
        max_module_size: config.max_module_size,
        limits: config.limits.clone(),
        trusted_publishers: config.trusted_keys()?,
        precompile_key: precompile_key(config),
    })
}

/// The node's precompile key, unless it compiles its modules itself: by choice
/// (`precompiled = false`) or because it requires signed modules.
fn precompile_key(config: &Config) -> Option<String> {
    if !config.precompiled || !config.trusted_publishers.is_empty() {
        return None;
    }
    match wedge_engine::key(&wedge_engine::host_triple()) {
        Ok(key) => Some(key),
        Err(e) => {
            tracing::warn!(error = %e, "cannot name this node's native code; it compiles modules itself");
            None
        }
    }
}
