//! `wedge-control`: parse flags → config → tracing → start → wait for a signal → drain.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use wedge_control_plane::{App, Config};

/// The Wedge control plane: embedded MQTT broker, store and HTTP API.
#[derive(Debug, Parser)]
#[command(name = "wedge-control", version)]
struct Cli {
    /// TOML configuration file; flags override it.
    #[arg(long, env = "WEDGE_CONFIG")]
    config: Option<PathBuf>,
    /// Directory of the store.
    #[arg(long, env = "WEDGE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// HTTP API address [default: 127.0.0.1:8080].
    #[arg(long, env = "WEDGE_API_LISTEN")]
    api_listen: Option<SocketAddr>,
    /// Embedded MQTT broker address [default: 0.0.0.0:1883].
    #[arg(long, env = "WEDGE_MQTT_LISTEN")]
    mqtt_listen: Option<SocketAddr>,
    /// Log format: `text` or `json`.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

/// Exit code for an unusable configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

fn config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(v) = &cli.data_dir {
        config.data_dir = v.clone();
    }
    if let Some(v) = cli.api_listen {
        config.api_listen = v;
    }
    if let Some(v) = cli.mqtt_listen {
        config.mqtt_listen = v;
    }
    config.validate()?;
    Ok(config)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    wedge_shared::process::init(&cli.log_format);
    let config = match config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wedge-control: invalid configuration: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let running = match App::start(config).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let token = running.shutdown_token();
    tokio::spawn(async move {
        wedge_shared::process::shutdown_signal().await;
        tracing::info!("shutting down");
        token.cancel();
    });
    running.wait().await;
    ExitCode::SUCCESS
}
