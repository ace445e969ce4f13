//! `wedge-demo`: the whole system on this machine in one command.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tokio_util::sync::CancellationToken;

/// Runs a control plane and three edge nodes with simulated temperature sensors, deploys two
/// modules and rolls a new revision out with a canary; prints the dashboard URL, `wedgectl`
/// commands to try, and the alerts the module raises.
#[derive(Debug, Parser)]
#[command(name = "wedge-demo")]
struct Cli {
    /// Control plane HTTP API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    api_listen: SocketAddr,
    /// Control plane MQTT broker (the uplink).
    #[arg(long, default_value = "127.0.0.1:1883")]
    control_mqtt_listen: SocketAddr,
    /// The first edge node's local MQTT broker (where devices publish); the others take the
    /// next two ports.
    #[arg(long, default_value = "127.0.0.1:1884")]
    node_mqtt_listen: SocketAddr,
    /// Milliseconds between two sensor readings.
    #[arg(long, default_value_t = 500)]
    interval_ms: u64,
    /// Seconds each node of the canary rollout bakes before the next one gets it.
    #[arg(long, default_value_t = 20)]
    bake_secs: u64,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration_secs: Option<u64>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,rumqttd=off"));
    tracing_subscriber::fmt().with_env_filter(filter).init();

    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    let duration = cli.duration_secs.map(Duration::from_secs);
    tokio::spawn(async move {
        match duration {
            Some(d) => {
                tokio::select! {
                    _ = wedge_service::process::shutdown_signal() => {}
                    _ = tokio::time::sleep(d) => {}
                }
            }
            None => wedge_service::process::shutdown_signal().await,
        }
        on_signal.cancel();
    });
    let (alerts, mut seen) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move { while seen.recv().await.is_some() {} });
    let options = wedge_demo::Options {
        api_listen: cli.api_listen,
        control_mqtt_listen: cli.control_mqtt_listen,
        node_mqtt_listen: cli.node_mqtt_listen,
        interval: Duration::from_millis(cli.interval_ms.max(10)),
        bake: Duration::from_secs(cli.bake_secs.max(1)),
    };
    match wedge_demo::run(options, alerts, stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wedge-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}
