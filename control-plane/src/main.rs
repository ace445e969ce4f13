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
    /// HTTPS for the API: auto (HTTPS unless on a loopback address), on, off [default: auto].
    #[arg(long, env = "WEDGE_API_TLS", value_enum)]
    api_tls: Option<wedge_control_plane::config::ApiTls>,
    /// The API's certificate chain (PEM) [default: one from the control plane's CA].
    #[arg(long, env = "WEDGE_API_TLS_CERT_FILE")]
    api_tls_cert_file: Option<PathBuf>,
    /// The API certificate's private key (PEM).
    #[arg(long, env = "WEDGE_API_TLS_KEY_FILE")]
    api_tls_key_file: Option<PathBuf>,
    /// Embedded MQTT broker address [default: 0.0.0.0:8883].
    #[arg(long, env = "WEDGE_MQTT_LISTEN")]
    mqtt_listen: Option<SocketAddr>,
    /// Use this external MQTT broker (`mqtt://host:port`) instead of the embedded one.
    #[arg(long, env = "WEDGE_MQTT_BROKER")]
    mqtt_broker: Option<String>,
    /// User name for the external broker.
    #[arg(long, env = "WEDGE_MQTT_BROKER_USERNAME")]
    mqtt_broker_username: Option<String>,
    /// File with the external broker's password.
    #[arg(long, env = "WEDGE_MQTT_BROKER_PASSWORD_FILE")]
    mqtt_broker_password_file: Option<PathBuf>,
    /// Largest module `POST /api/v1/modules` accepts, bytes [default: 67108864].
    #[arg(long, env = "WEDGE_MAX_MODULE_SIZE")]
    max_module_size: Option<usize>,
    /// Log filter, e.g. `info` or `warn,wedge=debug` [default: info]; `RUST_LOG` wins.
    #[arg(long, env = "WEDGE_LOG_LEVEL")]
    log_level: Option<String>,
    /// Log format: `text` or `json`.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    admin: Option<Admin>,
}

/// Administration of the control plane in `--data-dir` (works while it runs).
#[derive(Debug, clap::Subcommand)]
enum Admin {
    /// API tokens
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, clap::Subcommand)]
enum TokenCommand {
    /// Create a token and print it (the only time it is shown)
    Create {
        /// Who or what uses it, e.g. "alice" or "ci"
        #[arg(long)]
        name: String,
        /// viewer: read only; operator: read and change
        #[arg(long, value_enum)]
        role: wedge_control_plane::auth::Role,
        /// Lifetime, e.g. 90d or 12h [default: until revoked]
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
    },
    /// List tokens (ids, names, roles; never secrets)
    List,
    /// Revoke a token by id: refused from the next request on
    Revoke { id: String },
}

fn admin(data_dir: &std::path::Path, command: Admin) -> anyhow::Result<()> {
    use wedge_control_plane::auth;
    let Admin::Token(command) = command;
    match command {
        TokenCommand::Create { name, role, ttl } => {
            let (entry, token) = auth::create_expiring(data_dir, &name, role, ttl)?;
            let until = entry.expires_at_ms.map_or(String::new(), |at| {
                format!(", valid until {}", wedge_control_plane::time::rfc3339(at))
            });
            eprintln!(
                "created token {} ({}) for {}{until}; it is shown once, keep it safe:",
                entry.id,
                entry.role.as_str(),
                entry.name
            );
            println!("{token}");
        }
        TokenCommand::List => {
            let now = wedge_control_plane::time::now_ms();
            for t in auth::list(data_dir)? {
                let expiry = match t.expires_at_ms {
                    None => String::new(),
                    Some(at) if t.expired(now) => {
                        format!("  (expired {})", wedge_control_plane::time::rfc3339(at))
                    }
                    Some(at) => format!("  (until {})", wedge_control_plane::time::rfc3339(at)),
                };
                println!(
                    "{}  {:<8}  {}  {}{expiry}",
                    t.id,
                    t.role.as_str(),
                    t.created_at,
                    t.name
                );
            }
        }
        TokenCommand::Revoke { id } => {
            if !auth::revoke(data_dir, &id)? {
                anyhow::bail!("no token with id {id}");
            }
            eprintln!("token {id} revoked");
        }
    }
    Ok(())
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
    if let Some(v) = cli.api_tls {
        config.api_tls = v;
    }
    if let Some(v) = &cli.api_tls_cert_file {
        config.api_tls_cert_file = Some(v.clone());
    }
    if let Some(v) = &cli.api_tls_key_file {
        config.api_tls_key_file = Some(v.clone());
    }
    if let Some(v) = cli.mqtt_listen {
        config.mqtt_listen = v;
    }
    // An empty value (compose's `${WEDGE_MQTT_BROKER:-}`) means the embedded broker.
    if let Some(v) = cli.mqtt_broker.as_ref().filter(|v| !v.is_empty()) {
        config.mqtt_broker = Some(v.clone());
    }
    if let Some(v) = cli.mqtt_broker_username.as_ref().filter(|v| !v.is_empty()) {
        config.mqtt_broker_username = Some(v.clone());
    }
    if let Some(v) = cli
        .mqtt_broker_password_file
        .as_ref()
        .filter(|v| !v.as_os_str().is_empty())
    {
        config.mqtt_broker_password_file = Some(v.clone());
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
    let mut cli = Cli::parse();
    if let Some(command) = cli.admin.take() {
        let result = config(&cli).and_then(|c| admin(&c.data_dir, command));
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wedge-control: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    wedge_service::process::init(&cli.log_format);
    // SIGHUP reloads by loading again: the file, the environment and these flags.
    wedge_service::process::run_service("wedge-control", move || config(&cli), App::start).await
}
