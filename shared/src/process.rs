//! Process plumbing both binaries share (feature `process`): tracing output and shutdown
//! signals. Not part of the protocol; kept here so the two `main`s do not repeat it.

/// Installs the tracing subscriber: human text, or JSON lines. The level comes from
/// `RUST_LOG` (default `info`, rumqttd at `warn`); colours only on a terminal.
pub fn init(format: &str) {
    // rumqttd logs every accepted connection at info; that is noise at fleet scale.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
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

/// A started service a `main` can wait on.
pub trait Service: Sized {
    fn shutdown_token(&self) -> tokio_util::sync::CancellationToken;
    fn wait(self) -> impl std::future::Future<Output = ()> + Send;
}

/// The body of a binary's `main` after flag parsing: refuse a bad configuration with
/// [`EXIT_CONFIG`] before anything binds, start, stop on SIGINT/SIGTERM, drain.
pub async fn run_service<C, S, F>(
    bin: &str,
    config: anyhow::Result<C>,
    start: impl FnOnce(C) -> F,
) -> std::process::ExitCode
where
    S: Service,
    F: std::future::Future<Output = anyhow::Result<S>>,
{
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{bin}: invalid configuration: {e:#}");
            return std::process::ExitCode::from(EXIT_CONFIG);
        }
    };
    let service = match start(config).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot start: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let token = service.shutdown_token();
    systemd_ready(token.clone());
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        token.cancel();
    });
    service.wait().await;
    std::process::ExitCode::SUCCESS
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
