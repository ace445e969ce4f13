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
    wedge_shared::process::run_service("wedge-control", config(&cli), App::start).await
}
