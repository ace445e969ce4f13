//! Process plumbing both binaries share: tracing output, log levels and their reload,
//! shutdown signals, systemd readiness and watchdog, the service lifecycle ([`run_service`]).

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, Registry, reload};

/// rumqttd logs every accepted connection at info; that is noise at fleet scale.
const DEFAULT_LEVEL: &str = "info,rumqttd=warn";

/// The live log filter, changed by [`set_log_level`] (on start and on SIGHUP).
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the tracing subscriber: human text, or JSON lines; colours only on a terminal.
/// The level is `RUST_LOG` when set, else the configuration's `log_level` (applied by
/// [`run_service`]), else `info`.
pub fn init(format: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LEVEL));
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let output = if format == "json" {
        tracing_subscriber::fmt::layer().json().boxed()
    } else {
        tracing_subscriber::fmt::layer().with_ansi(ansi).boxed()
    };
    if tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .is_ok()
    {
        let _ = FILTER.set(handle);
    }
}

/// Sets the log filter (`info`, `warn,wedge_edge_node=debug`, …) unless `RUST_LOG` is set,
/// which wins. `None` means the default.
pub fn set_log_level(level: Option<&str>) -> anyhow::Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        return Ok(());
    }
    let filter = EnvFilter::try_new(level.unwrap_or(DEFAULT_LEVEL))
        .map_err(|e| anyhow::anyhow!("log_level {level:?}: {e}"))?;
    if let Some(handle) = FILTER.get() {
        handle
            .reload(filter)
            .map_err(|e| anyhow::anyhow!("cannot change the log level: {e}"))?;
    }
    Ok(())
}

/// Checks a `log_level` value without applying it.
pub fn check_log_level(level: Option<&str>) -> anyhow::Result<()> {
    if let Some(level) = level {
        EnvFilter::try_new(level).map_err(|e| anyhow::anyhow!("log_level {level:?}: {e}"))?;
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is first polled: a
/// service that must not die of a signal sent during its start uses [`Signals`] instead.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    let term = Signals::install().term;
    stop_requested(
        #[cfg(unix)]
        term,
    )
    .await
}

/// Exit code for an unusable configuration (EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;

/// How long a stopping process waits for its tasks.
pub const GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The long-running tasks of a started service and the token that stops them:
/// signal → cancel → drain with a grace period → warn if it ran out.
#[derive(Debug)]
pub struct Lifecycle {
    name: &'static str,
    shutdown: tokio_util::sync::CancellationToken,
    tracker: tokio_util::task::TaskTracker,
}

impl Lifecycle {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            shutdown: tokio_util::sync::CancellationToken::new(),
            tracker: tokio_util::task::TaskTracker::new(),
        }
    }

    /// The token every task watches.
    pub fn token(&self) -> tokio_util::sync::CancellationToken {
        self.shutdown.clone()
    }

    /// Where long-running tasks are spawned.
    pub fn tracker(&self) -> &tokio_util::task::TaskTracker {
        &self.tracker
    }

    /// Cancels and drains.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.drain().await;
    }

    /// Waits until the token is cancelled (by a signal handler), then drains.
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        self.drain().await;
    }

    async fn drain(self) {
        self.tracker.close();
        if tokio::time::timeout(GRACE, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(service = self.name, grace = ?GRACE, "shutdown grace period ran out");
        }
        tracing::info!(service = self.name, "stopped");
    }
}

/// The names of the `fields` whose values differ between two configurations (compared by
/// their `Debug` form, so field types need no `PartialEq`): what a reload changed that only
/// a restart applies.
#[macro_export]
macro_rules! changed_fields {
    ($new:expr, $old:expr, $($field:ident),* $(,)?) => {{
        let mut changed: Vec<&'static str> = Vec::new();
        $(
            if format!("{:?}", $new.$field) != format!("{:?}", $old.$field) {
                changed.push(stringify!($field));
            }
        )*
        changed
    }};
}

/// Logs the settings a reload changed that take effect only after a restart.
pub fn warn_needs_restart(settings: &[&str]) {
    if !settings.is_empty() {
        tracing::warn!(
            settings = settings.join(", "),
            "changed settings that take effect only after a restart"
        );
    }
}

/// A configuration [`run_service`] can load, and reload on SIGHUP.
pub trait ServiceConfig: Send + 'static {
    /// The configured log filter (`RUST_LOG` wins over it).
    fn log_level(&self) -> Option<&str>;
}

/// A started service a `main` can wait on.
pub trait Service: Sized {
    type Config: ServiceConfig;
    fn shutdown_token(&self) -> tokio_util::sync::CancellationToken;
    fn wait(self) -> impl std::future::Future<Output = ()> + Send;
    /// What applies a reloaded configuration to the running service: it changes what can
    /// change safely and logs what needs a restart.
    fn reloader(&self) -> impl Fn(Self::Config) + Send + 'static;
}

/// The body of a binary's `main` after flag parsing: refuse a bad configuration with
/// [`EXIT_CONFIG`] before anything binds, start, reload on SIGHUP (`load` again: file,
/// environment and flags; a configuration that does not validate is refused and the running
/// one kept), stop on SIGINT/SIGTERM, drain.
pub async fn run_service<C, S, F>(
    bin: &'static str,
    load: impl Fn() -> anyhow::Result<C> + Send + 'static,
    start: impl FnOnce(C) -> F,
) -> std::process::ExitCode
where
    C: ServiceConfig,
    S: Service<Config = C>,
    F: std::future::Future<Output = anyhow::Result<S>>,
{
    let config = match load_checked(&load) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{bin}: invalid configuration: {e:#}");
            return std::process::ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(e) = set_log_level(config.log_level()) {
        tracing::warn!("{e:#}");
    }
    // Before the start logs anything: a signal sent as soon as the service says it started
    // must find its handler.
    let signals = Signals::install();
    let service = match start(config).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot start: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let token = service.shutdown_token();
    systemd_ready(token.clone());
    #[cfg(unix)]
    let (term, hup) = (signals.term, signals.hup);
    #[cfg(not(unix))]
    let _ = signals;
    reload_on_sighup(
        #[cfg(unix)]
        hup,
        load,
        service.reloader(),
        token.clone(),
    );
    tokio::spawn(async move {
        stop_requested(
            #[cfg(unix)]
            term,
        )
        .await;
        tracing::info!("shutting down");
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        token.cancel();
    });
    service.wait().await;
    std::process::ExitCode::SUCCESS
}

/// SIGTERM and SIGHUP listeners, installed at once (a signal that arrives before anyone
/// waits on them is kept, not handled by the default action, which ends the process).
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for {name}");
                    None
                }
            };
            Self {
                term: listen(SignalKind::terminate(), "SIGTERM"),
                hup: listen(SignalKind::hangup(), "SIGHUP"),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }
}

/// Resolves on SIGINT or on the (already installed) SIGTERM listener.
async fn stop_requested(#[cfg(unix)] term: Option<tokio::signal::unix::Signal>) {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async move {
        match term {
            Some(mut s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Loads the configuration and checks what `load` cannot: the log filter.
fn load_checked<C: ServiceConfig>(load: &impl Fn() -> anyhow::Result<C>) -> anyhow::Result<C> {
    let config = load()?;
    check_log_level(config.log_level())?;
    Ok(config)
}

/// On each SIGHUP: loads the configuration again and hands it to `apply`.
fn reload_on_sighup<C: ServiceConfig>(
    #[cfg(unix)] hup: Option<tokio::signal::unix::Signal>,
    load: impl Fn() -> anyhow::Result<C> + Send + 'static,
    apply: impl Fn(C) + Send + 'static,
    shutdown: tokio_util::sync::CancellationToken,
) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Some(mut hup) = hup else {
            tracing::warn!("no SIGHUP listener; no configuration reload");
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                got = hup.recv() => if got.is_none() { return },
            }
            let config = match load_checked(&load) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("SIGHUP: configuration refused, the running one stays: {e:#}");
                    continue;
                }
            };
            if let Err(e) = set_log_level(config.log_level()) {
                tracing::warn!("SIGHUP: {e:#}");
            }
            apply(config);
        }
    });
    #[cfg(not(unix))]
    let _ = (load, apply, shutdown);
}

/// Under systemd (`Type=notify`): says the service is ready, and pings the watchdog at half
/// its interval until shutdown. The pings come from a task on the runtime that serves
/// everything else, so a wedged runtime stops them and systemd restarts the service.
/// Outside systemd (no `NOTIFY_SOCKET`) this does nothing.
fn systemd_ready(shutdown: tokio_util::sync::CancellationToken) {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval / 2);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
        }
    });
}
