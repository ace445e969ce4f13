//! Startup and shutdown of the control plane.
//!
//! Order: open the store → start the embedded broker (unless `mqtt_broker` names an
//! external one) → connect our MQTT session → bind the API. Shutdown: cancel → the API stops accepting and finishes requests → the MQTT
//! session disconnects → the store is flushed. The embedded broker has no shutdown and
//! ends with the process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use wedge_broker::EmbeddedBroker;
use wedge_service::process::{Lifecycle, Service};

use crate::api::{self, AppState};
use crate::assignments::Assignments;
use crate::config::Config;
use crate::fleet::Fleet;
use crate::identity::NodeIdentities;
use crate::link::{self, Counters};
use crate::reconcile::Reconciler;
use crate::rollout::RolloutEngine;
use crate::store::Store;
use crate::time::now_ms;

/// The control plane.
#[derive(Debug)]
pub struct App;

/// A started control plane.
#[derive(Debug)]
pub struct Running {
    /// The configuration in force; SIGHUP's changes go to the tasks through it.
    tunables: Arc<tokio::sync::watch::Sender<Config>>,
    api_addr: SocketAddr,
    mqtt_addr: SocketAddr,
    lifecycle: Lifecycle,
    store: Store,
    identity: Option<Arc<NodeIdentities>>,
}

impl App {
    /// Starts everything and returns once the API and the broker accept connections.
    pub async fn start(config: Config) -> anyhow::Result<Running> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
        let store = Store::open(&config.data_dir.join("store"))
            .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;
        let fleet = Arc::new(Fleet::load(store.clone()).context("cannot load the node registry")?);

        let external = config.external_broker()?;
        let identity = node_identities(&config, external.as_ref())?;
        let (connect_host, mqtt_addr) =
            broker(&config, external.as_ref(), identity.as_ref()).await?;

        let tls = match &identity {
            Some(identity) => Some(identity.service_client_config()?),
            None => None,
        };
        let (outbox, session) = link::connect(
            (&connect_host, mqtt_addr.port()),
            // Reserved (no node or enrolling client can take it over) and unique per
            // process, so a restart or a second process never kicks this one off.
            &wedge_proto::topics::control_plane_client_id(&format!(
                "{}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            )),
            config.mqtt_max_payload,
            tls,
            config.external_credentials()?,
        );
        let plans = Arc::new(Assignments::default());
        let lifecycle = Lifecycle::new("control plane");
        let shutdown = lifecycle.token();
        let tracker = lifecycle.tracker();
        let (precompiler, precompiling) =
            crate::precompile::Precompiler::new(store.clone(), shutdown.clone());
        tracker.spawn(precompiling);
        let reconciler = Arc::new(Reconciler::new(
            store.clone(),
            plans.clone(),
            outbox.clone(),
            precompiler.clone(),
        ));
        let rollouts = Arc::new(
            RolloutEngine::load(store.clone(), fleet.clone(), reconciler.clone(), plans)
                .context("cannot load the rollouts")?,
        );
        let counters = Arc::new(Counters::default());

        let listener = tokio::net::TcpListener::bind(config.api_listen)
            .await
            .with_context(|| format!("cannot listen for the API on {}", config.api_listen))?;
        let api_addr = listener.local_addr()?;

        let ctx = link::Context {
            store: store.clone(),
            fleet: fleet.clone(),
            reconciler: reconciler.clone(),
            rollouts: rollouts.clone(),
            outbox,
            counters: counters.clone(),
            identity: identity.clone(),
            precompiler: precompiler.clone(),
        };
        tracker.spawn(session.run(ctx, shutdown.clone()));
        tracker.spawn(rollouts.clone().run(shutdown.clone()));
        tracker.spawn(offer_new_code(
            precompiler.clone(),
            reconciler.clone(),
            shutdown.clone(),
        ));
        let (tunables, tunables_rx) = tokio::sync::watch::channel(config.clone());
        tracker.spawn(sweep(fleet.clone(), tunables_rx.clone(), shutdown.clone()));
        tracker.spawn(retention(store.clone(), tunables_rx, shutdown.clone()));

        let tokens = api_tokens(&config, api_addr)?;
        let guard = Arc::new(api::auth::Guard::new(
            tokens,
            config.auth.rate_per_sec,
            config.auth.rate_burst,
        ));
        let metrics = Arc::new(crate::metrics::Metrics::new(
            fleet.clone(),
            store.clone(),
            rollouts.clone(),
            counters.clone(),
        ));
        let app = api::router(
            AppState {
                store: store.clone(),
                fleet,
                rollouts,
                counters,
                metrics,
                max_module_size: config.max_module_size,
                max_desired_bytes: config.mqtt_max_payload,
                identity: identity.clone(),
                precompiler,
            },
            guard,
        );
        let api_shutdown = shutdown.clone();
        let api_tls = api::tls::server_config(&config, &server_names(&config, api_addr))?;
        let scheme = if api_tls.is_some() { "https" } else { "http" };
        tracker.spawn(api::serve::serve(listener, app, api_tls, api_shutdown));
        tracing::info!(api = %api_addr, mqtt = %mqtt_addr, api_scheme = scheme, "control plane started");
        Ok(Running {
            tunables: Arc::new(tunables),
            api_addr,
            mqtt_addr,
            lifecycle,
            store,
            identity,
        })
    }
}

/// The node identities (CA, enrollment, revocation) when the embedded broker speaks TLS;
/// none with an external broker or with TLS off (both logged as warnings).
fn node_identities(
    config: &Config,
    external: Option<&wedge_proto::mqtt_url::MqttUrl>,
) -> anyhow::Result<Option<Arc<NodeIdentities>>> {
    if let Some(url) = external {
        tracing::warn!(
            broker = %format!("{}:{}", url.host, url.port),
            "using an external MQTT broker: node certificates, enrollment and topic \
             confinement are off; the broker's own access rules must confine nodes \
             (deploy/mosquitto/)"
        );
        Ok(None)
    } else if config.tls.enabled {
        let names = server_names(config, config.mqtt_listen);
        let identity = NodeIdentities::load(crate::identity::Settings {
            data_dir: config.data_dir.clone(),
            broker_names: names,
            node_cert_lifetime: Duration::from_secs(config.tls.node_cert_lifetime_secs),
        })
        .context("cannot set up node identity (TLS)")?;
        tracing::info!(
            ca_sha256 = identity.ca_sha256(),
            "broker speaks TLS; nodes pin this CA hash (uplink.ca_sha256)"
        );
        Ok(Some(identity))
    } else {
        tracing::warn!(
            "BROKER TLS IS OFF: any client that reaches the MQTT port can act as any node"
        );
        Ok(None)
    }
}

/// The broker the node link connects to: the external one, resolved, or the embedded one,
/// started behind the identities' gate. Returns the host to connect to and its address.
async fn broker(
    config: &Config,
    external: Option<&wedge_proto::mqtt_url::MqttUrl>,
    identity: Option<&Arc<NodeIdentities>>,
) -> anyhow::Result<(String, SocketAddr)> {
    let found = match external {
        Some(url) => {
            let addr = tokio::net::lookup_host((url.host.as_str(), url.port))
                .await
                .ok()
                .and_then(|mut addrs| addrs.next())
                .with_context(|| format!("cannot resolve the MQTT broker {}", url.host))?;
            (url.host.clone(), addr)
        }
        None => {
            let mut broker_cfg = wedge_broker::Config::new(config.mqtt_listen);
            broker_cfg.gate = identity.as_ref().map(|i| i.gate());
            broker_cfg.max_payload_size = config.mqtt_max_payload;
            broker_cfg.max_connections = 20_000;
            broker_cfg.segment_size = 4 * config.mqtt_max_payload;
            let broker = tokio::task::spawn_blocking(move || EmbeddedBroker::start(&broker_cfg))
                .await?
                .context("cannot start the embedded MQTT broker")?;
            let addr = broker.local_addr();
            let host = if addr.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                addr.ip().to_string()
            };
            (host, addr)
        }
    };
    Ok(found)
}

/// The API tokens the guard checks; none with `[auth] enabled = false` (logged).
fn api_tokens(
    config: &Config,
    api_addr: SocketAddr,
) -> anyhow::Result<Option<crate::auth::ApiTokens>> {
    if config.auth.enabled {
        let tokens =
            crate::auth::ApiTokens::load(&config.data_dir).context("cannot read the API tokens")?;
        if tokens.count() == 0 {
            tracing::warn!(
                "no API tokens yet: every API request is refused until you create one with \
                 `wedge-control token create --name NAME --role operator`"
            );
        }
        Ok(Some(tokens))
    } else {
        tracing::warn!(
            "API AUTHENTICATION IS OFF: anyone who reaches {} can deploy code to every node",
            api_addr
        );
        Ok(None)
    }
}

/// The names a server certificate of ours carries: `localhost`, `127.0.0.1`, this host's
/// name, the address it listens on when that is a specific one, and `[tls] names`.
fn server_names(config: &Config, listen: SocketAddr) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if let Ok(host) = std::env::var("HOSTNAME") {
        names.push(host);
    }
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    names.extend(config.tls.names.iter().cloned());
    names.sort();
    names.dedup();
    names
}

/// Offers native code to the nodes it was compiled for once it is stored (see
/// `precompile`): their desired states are computed again.
async fn offer_new_code(
    precompiler: Arc<crate::precompile::Precompiler>,
    reconciler: Arc<Reconciler>,
    shutdown: CancellationToken,
) {
    loop {
        let nodes = tokio::select! {
            _ = shutdown.cancelled() => return,
            nodes = precompiler.nodes_with_new_code() => nodes,
        };
        if let Err(e) = reconciler.nodes(nodes).await {
            tracing::warn!(error = %e, "cannot offer precompiled code to the nodes");
        }
    }
}

/// Marks nodes offline whose heartbeats are overdue (`heartbeat_timeout_secs`, as reloaded).
async fn sweep(
    fleet: Arc<Fleet>,
    config: tokio::sync::watch::Receiver<Config>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let timeout = config.borrow().heartbeat_timeout();
        if let Err(e) = fleet.sweep(now_ms(), timeout.as_millis() as u64) {
            tracing::warn!(error = %e, "offline sweep failed");
        }
    }
}

/// Deletes telemetry past its retention (as reloaded), once a minute.
async fn retention(
    store: Store,
    config: tokio::sync::watch::Receiver<Config>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (age, max_bytes) = {
            let c = config.borrow();
            (
                Duration::from_secs(c.telemetry_retention_secs),
                c.telemetry_max_bytes,
            )
        };
        let cutoff = now_ms().saturating_sub(age.as_millis() as u64);
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.prune_telemetry(cutoff, max_bytes)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(deleted = n, "telemetry retention"),
            Ok(Err(e)) => tracing::warn!(error = %e, "telemetry retention failed"),
            Err(e) => tracing::warn!(error = %e, "telemetry retention task failed"),
        }
    }
}

impl Running {
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The broker's address, embedded or external (what nodes connect to).
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt_addr
    }

    /// Node identity (CA, enrollment tokens, revocations), when the broker speaks TLS.
    pub fn identity(&self) -> Option<&Arc<NodeIdentities>> {
        self.identity.as_ref()
    }

    /// A token that stops the control plane when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.lifecycle.token()
    }

    /// Stops and waits for the tasks to finish (at most the grace period).
    pub async fn stop(self) {
        self.lifecycle.stop().await;
        Self::flush(&self.store);
    }

    /// Waits until the shutdown token is cancelled, then drains.
    pub async fn wait(self) {
        self.lifecycle.wait().await;
        Self::flush(&self.store);
    }

    fn flush(store: &Store) {
        if let Err(e) = store.flush() {
            tracing::error!(error = %e, "final store flush failed");
        }
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
                heartbeat_timeout_secs = applied.heartbeat_timeout_secs,
                telemetry_retention_secs = applied.telemetry_retention_secs,
                log_level = applied.log_level.as_deref().unwrap_or("default"),
                "configuration reloaded: log level, heartbeat timeout and telemetry retention \
                 applied"
            );
            wedge_service::process::warn_needs_restart(&restart);
            tunables.send_replace(applied);
        }
    }

    async fn wait(self) {
        Running::wait(self).await
    }
}
