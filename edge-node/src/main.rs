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
    /// Load native code the control plane compiled for this node [default: true].
    #[arg(long, env = "WEDGE_PRECOMPILED")]
    precompiled: Option<bool>,
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
    /// Work with a module on this machine
    #[command(subcommand)]
    Module(ModuleCommand),
}

#[derive(Debug, clap::Subcommand)]
enum ModuleCommand {
    /// Run a module with the node's host and limits against `TOPIC PAYLOAD` lines from
    /// standard input (and devices, with --mqtt-listen), printing what it publishes and
    /// emits as JSON lines
    Run(RunArgs),
    /// Compile a component (standard input) into native code for this machine (standard
    /// output); the node runs this in a child process
    #[command(hide = true)]
    Compile,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The module's .wasm component
    file: PathBuf,
    /// The deployment's config: JSON text passed to `init`
    #[arg(long, default_value = "{}")]
    config: String,
    /// Topic filter the module receives; repeat for several
    #[arg(long, default_value = "#")]
    subscribe: Vec<String>,
    /// Call `on-tick` this often, milliseconds
    #[arg(long)]
    tick_ms: Option<u64>,
    /// Also let devices publish to a local broker on this address; run until Ctrl-C
    #[arg(long)]
    mqtt_listen: Option<SocketAddr>,
    /// Topic prefix the module may publish under; repeat for several [default: any]
    #[arg(long)]
    publish_prefix: Vec<String>,
    /// Linear memory limit, bytes [default: 33554432]
    #[arg(long)]
    memory_bytes: Option<u64>,
    /// Longest single call, milliseconds [default: 1000]
    #[arg(long)]
    call_timeout_ms: Option<u64>,
    /// Local publishes per second [default: 100000]
    #[arg(long)]
    publish_per_sec: Option<u32>,
    /// Largest module accepted, bytes [default: 67108864]
    #[arg(long)]
    max_module_size: Option<u64>,
}

async fn run_module(args: RunArgs) -> ExitCode {
    let defaults = Config::default();
    let mut limits = defaults.limits;
    limits.memory_bytes = args.memory_bytes.unwrap_or(limits.memory_bytes);
    limits.call_timeout_ms = args.call_timeout_ms.unwrap_or(limits.call_timeout_ms);
    limits.publish_per_sec = args.publish_per_sec.unwrap_or(limits.publish_per_sec);
    let options = wedge_edge_node::runner::RunOptions {
        file: args.file,
        config: args.config,
        subscribe: args.subscribe,
        tick: args.tick_ms.map(std::time::Duration::from_millis),
        mqtt_listen: args.mqtt_listen,
        publish_prefixes: args.publish_prefix,
        limits,
        max_module_size: args.max_module_size.unwrap_or(defaults.max_module_size),
    };
    match wedge_edge_node::runner::run(options).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("wedge-node: {e:#}");
            ExitCode::from(1)
        }
    }
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
    if let Some(v) = cli.precompiled {
        config.precompiled = v;
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
    match cli.command {
        Some(Command::HashPassword) => return hash_password(),
        Some(Command::Module(ModuleCommand::Compile)) => {
            return wedge_edge_node::runtime::child::compile_stdin_to_stdout();
        }
        Some(Command::Module(ModuleCommand::Run(args))) => {
            // Logs to standard error: standard output is the module's output.
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "warn,rumqttd=off,wedge_edge_node=info".into()),
                )
                .init();
            return run_module(args).await;
        }
        None => {}
    }
    wedge_service::process::init(&cli.log_format);
    // Compiles run in a child process (this binary), so their memory goes back.
    match std::env::current_exe() {
        Ok(exe) => wedge_edge_node::runtime::child::compile_in_child(exe),
        Err(e) => tracing::warn!(error = %e, "cannot find this binary; modules compile in-process"),
    }
    // SIGHUP reloads by loading again: the file, the environment and these flags.
    wedge_service::process::run_service("wedge-node", move || config(&cli), App::start).await
}
