//! `wedge-node`: parse flags → config → tracing → start → wait for a signal → drain.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use wedge_edge_node::config::parse_labels;
use wedge_edge_node::{App, Config};

/// A Wedge edge node: local MQTT broker, WebAssembly modules, uplink to the control plane.
#[derive(Debug, Parser)]
#[command(name = "wedge-node", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML configuration file; flags override it.
    #[arg(long, env = "WEDGE_CONFIG")]
    config: Option<PathBuf>,
    /// This node's id, unique in the fleet.
    #[arg(long, env = "WEDGE_NODE_ID")]
    node_id: Option<String>,
    /// Directory of the local store.
    #[arg(long, env = "WEDGE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The control plane's MQTT broker [default: mqtts://127.0.0.1:8883].
    #[arg(long, env = "WEDGE_CONTROL_PLANE")]
    control_plane: Option<String>,
    /// Bootstrap token to enroll with (only needed until the node has its certificate).
    #[arg(long, env = "WEDGE_ENROLL_TOKEN")]
    enroll_token: Option<String>,
    /// SHA-256 of the control plane's CA certificate (shown when a token is created).
    #[arg(long, env = "WEDGE_CA_SHA256")]
    ca_sha256: Option<String>,
    /// For a plain mqtt:// uplink through Mosquitto: file with this node's password there
    /// (user name: the node id).
    #[arg(long, env = "WEDGE_UPLINK_PASSWORD_FILE")]
    uplink_password_file: Option<PathBuf>,
    /// Address of the local broker devices publish to [default: 0.0.0.0:1883].
    #[arg(long, env = "WEDGE_LOCAL_MQTT_LISTEN")]
    local_mqtt_listen: Option<SocketAddr>,
    /// Address of the HTTP server with /metrics, /healthz, /readyz [default: 127.0.0.1:9464].
    #[arg(long, env = "WEDGE_HTTP_LISTEN")]
    http_listen: Option<SocketAddr>,
    /// Labels, `k=v,k2=v2` (replace those of the config file).
    #[arg(long, env = "WEDGE_LABELS")]
    labels: Option<String>,
    /// Largest module blob the node accepts, bytes [default: 67108864].
    #[arg(long, env = "WEDGE_MAX_MODULE_SIZE")]
    max_module_size: Option<u64>,
    /// Log filter, e.g. `info` or `warn,wedge=debug` [default: info]; `RUST_LOG` wins.
    #[arg(long, env = "WEDGE_LOG_LEVEL")]
    log_level: Option<String>,
    /// Log format: `text` or `json`.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Read a device password from standard input and print its Argon2id hash, for
    /// `[[devices.users]] password_hash` in the node's configuration
    HashPassword,
}

fn hash_password() -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("wedge-node: cannot read the password: {e}");
        return ExitCode::from(1);
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("wedge-node: the password is empty");
        return ExitCode::from(64);
    }
    match wedge_edge_node::devices::hash_password(password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wedge-node: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(v) = &cli.node_id {
        config.node_id = v.clone();
    }
    if let Some(v) = &cli.data_dir {
        config.data_dir = v.clone();
    }
    if let Some(v) = &cli.control_plane {
        config.control_plane = v.clone();
    }
    if let Some(v) = &cli.enroll_token {
        config.enroll_token = Some(v.clone());
    }
    if let Some(v) = &cli.ca_sha256 {
        config.ca_sha256 = Some(v.clone());
    }
    // An empty value (compose's `${WEDGE_UPLINK_PASSWORD_FILE:-}`) means none.
    if let Some(v) = &cli.uplink_password_file
        && !v.as_os_str().is_empty()
    {
        config.uplink_password_file = Some(v.clone());
    }
    if let Some(v) = cli.local_mqtt_listen {
        config.local_mqtt_listen = v;
    }
    if let Some(v) = cli.http_listen {
        config.http_listen = v;
    }
    if let Some(v) = &cli.labels {
        config.labels = parse_labels(v)?;
    }
    if let Some(v) = cli.max_module_size {
        config.max_module_size = v;
    }
    if let Some(v) = &cli.log_level {
        config.log_level = Some(v.clone());
    }
    config.validate()?;
    Ok(config)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::HashPassword) = cli.command {
        return hash_password();
    }
    wedge_service::process::init(&cli.log_format);
    // SIGHUP reloads by loading again: the file, the environment and these flags.
    wedge_service::process::run_service("wedge-node", move || config(&cli), App::start).await
}
