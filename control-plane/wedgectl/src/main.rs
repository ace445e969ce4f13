//! `wedgectl`: the Wedge control plane from the command line.
//!
//! A thin client of the HTTP API: every command is one or a few API calls, and
//! `--output json` prints what the API answered. Exit codes: 0 done, 1 the API refused or a
//! watched rollout failed, 2 bad usage or input, 3 the control plane cannot be reached.

mod client;
mod commands;
mod output;
mod settings;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::Format;

#[derive(Debug, Parser)]
#[command(
    name = "wedgectl",
    version,
    about = "Operate a Wedge fleet from the command line"
)]
struct Cli {
    /// Control plane API, e.g. https://control.example.net:8080 [default: http://127.0.0.1:8080]
    #[arg(long, env = "WEDGE_API", global = true)]
    api: Option<String>,
    /// For an https:// API: SHA-256 of the control plane's CA certificate, pinned like nodes
    /// pin it (printed by `wedge-control` at start and by `wedgectl enroll-token create`)
    #[arg(long, env = "WEDGE_CA_SHA256", global = true)]
    ca_sha256: Option<String>,
    /// For an https:// API: PEM certificates to trust instead (the CA's ca.crt, or a public
    /// CA bundle when the API has a certificate of the operator's)
    #[arg(long, env = "WEDGE_CA_FILE", global = true)]
    ca_file: Option<PathBuf>,
    /// API token (sent as a bearer token)
    #[arg(long, env = "WEDGE_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// TOML file with `api`, `token`, `ca_sha256`, `ca_file` [default: ~/.config/wedge/wedgectl.toml]
    #[arg(long, env = "WEDGE_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Output format
    #[arg(long, short, value_enum, default_value = "table", global = true)]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List nodes
    Nodes {
        /// Only nodes with this status: online, degraded, offline
        #[arg(long)]
        status: Option<String>,
        /// Only nodes with this label (k=v); repeat for several
        #[arg(long, short = 'l')]
        label: Vec<String>,
    },
    /// Show one node: status, problems, modules, backlog
    Node { id: String },
    /// Upload and list modules; start a module project and run it locally
    #[command(subcommand, alias = "module")]
    Modules(ModulesCommand),
    /// Create or update deployments from a TOML or YAML file (like `kubectl apply`: an
    /// unchanged deployment is left alone)
    Deploy {
        /// The file; `-` reads standard input (format from --format, default YAML)
        #[arg(long, short = 'f')]
        file: PathBuf,
        /// File format, when the extension does not say
        #[arg(long, value_enum)]
        format: Option<commands::deploy::FileFormat>,
    },
    /// Follow and steer rollouts
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Print a node's stored telemetry
    Telemetry {
        node: String,
        /// Only this stream
        #[arg(long, short)]
        stream: Option<String>,
        /// Keep printing new records as they arrive
        #[arg(long, short)]
        follow: bool,
        /// How many of the newest records to print first
        #[arg(long, default_value_t = 20)]
        tail: usize,
    },
    /// Print the log lines a node's modules wrote (info and above)
    Logs {
        node: String,
        /// Keep printing new lines as they arrive
        #[arg(long, short)]
        follow: bool,
        /// How many of the newest lines to print first
        #[arg(long, default_value_t = 50)]
        tail: usize,
    },
    /// Print a node's recent events
    Events { node: String },
    /// Publisher keys for signing modules
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Bootstrap tokens new nodes enroll with
    #[command(subcommand, name = "enroll-token")]
    EnrollToken(EnrollTokenCommand),
    /// Cut a node off: refuse its certificates and end its connection now
    Revoke { node: String },
    /// Let a revoked node enroll again
    Readmit { node: String },
    /// Let another machine take over a node's id (new hardware, a wiped data directory):
    /// refuse the old certificates, cut the old connection, allow one new enrollment
    Replace { node: String },
}

#[derive(Debug, Subcommand)]
enum EnrollTokenCommand {
    /// Create one: prints the token (once) and the CA hash nodes pin
    Create {
        /// What it is for
        #[arg(long, default_value = "")]
        name: String,
        /// How many nodes may enroll with it
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long it is valid (e.g. 1h, 24h, 7d)
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// Only these node ids: one id, or a pattern with `*` (e.g. 'berlin-*')
        #[arg(long)]
        nodes: Option<String>,
    },
    /// List them (without secrets)
    List,
    /// Delete one
    Delete { id: String },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make a private key file and print its public key (for nodes' trusted_publishers)
    Generate {
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the public key of a private key file
    Public {
        #[arg(long)]
        key: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ModulesCommand {
    /// Upload a WebAssembly component
    Push {
        file: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: String,
        /// Sign it with this private key (from `wedgectl keys generate`)
        #[arg(long)]
        sign_key: Option<PathBuf>,
    },
    /// List uploaded modules
    List,
    /// Write a new module project (WIT included, one build command)
    New {
        name: String,
        #[arg(long, value_enum)]
        lang: commands::scaffold::Lang,
        /// Where [default: ./NAME]
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Run a module on this machine with a node's host and limits, reading `TOPIC PAYLOAD`
    /// lines from standard input (runs `wedge-node module run`; `--help` there lists the
    /// options: --config JSON, --subscribe, --tick-ms, --mqtt-listen, limits)
    Run {
        file: PathBuf,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum RolloutCommand {
    /// Where a deployment's rollout stands
    Status {
        name: String,
        /// Follow it with a progress bar until it ends (exit 1 if it rolls back or is aborted)
        #[arg(long, short)]
        watch: bool,
    },
    /// Start no new batch until resumed
    Pause { name: String },
    /// Continue a paused rollout
    Resume { name: String },
    /// Stop the rollout and send every node back to the stable revision
    Abort { name: String },
}

/// How a command failed, and the exit code that says so.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Client(#[from] client::Error),
    /// Bad usage or input (a file that does not parse, a bad filter).
    #[error("{0:#}")]
    Input(anyhow::Error),
    /// The command worked, and what it found is a failure (a rollout that rolled back).
    #[error("{0}")]
    Outcome(String),
}

impl Failure {
    fn code(&self) -> u8 {
        match self {
            Self::Client(client::Error::Unreachable { .. }) => 3,
            Self::Input(_) => 2,
            Self::Client(_) | Self::Outcome(_) => 1,
        }
    }
}

pub type Result<T> = std::result::Result<T, Failure>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The local commands need no control plane.
    let local = match &cli.command {
        Command::Modules(ModulesCommand::New { name, lang, dir }) => {
            Some(commands::scaffold::new(name, *lang, dir.as_deref()))
        }
        Command::Modules(ModulesCommand::Run { file, args }) => {
            Some(commands::scaffold::run(file, args))
        }
        _ => None,
    };
    if let Some(result) = local {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wedgectl: {e}");
                ExitCode::from(e.code())
            }
        };
    }
    let given = settings::Given {
        api: cli.api,
        token: cli.token,
        ca_sha256: cli.ca_sha256,
        ca_file: cli.ca_file,
    };
    let settings = match settings::resolve(given, cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wedgectl: {e:#}");
            return ExitCode::from(2);
        }
    };
    let client = match client::Client::new(&settings) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wedgectl: {e:#}");
            return ExitCode::from(2);
        }
    };
    let out = cli.output;
    let result = match cli.command {
        Command::Nodes { status, label } => {
            commands::nodes::list(&client, out, status, &label).await
        }
        Command::Node { id } => commands::nodes::show(&client, out, &id).await,
        Command::Modules(ModulesCommand::Push {
            file,
            name,
            version,
            sign_key,
        }) => {
            commands::modules::push(&client, out, &file, &name, &version, sign_key.as_deref()).await
        }
        Command::Keys(KeysCommand::Generate { out }) => commands::keys::generate(&out),
        Command::Keys(KeysCommand::Public { key }) => commands::keys::public(&key),
        Command::Modules(ModulesCommand::List) => commands::modules::list(&client, out).await,
        Command::Modules(ModulesCommand::New { .. } | ModulesCommand::Run { .. }) => Ok(()),
        Command::Deploy { file, format } => {
            commands::deploy::apply(&client, out, &file, format).await
        }
        Command::Rollout(RolloutCommand::Status { name, watch }) => {
            commands::rollout::status(&client, out, &name, watch).await
        }
        Command::Rollout(RolloutCommand::Pause { name }) => {
            commands::rollout::control(&client, out, &name, "pause").await
        }
        Command::Rollout(RolloutCommand::Resume { name }) => {
            commands::rollout::control(&client, out, &name, "resume").await
        }
        Command::Rollout(RolloutCommand::Abort { name }) => {
            commands::rollout::control(&client, out, &name, "abort").await
        }
        Command::Telemetry {
            node,
            stream,
            follow,
            tail,
        } => commands::telemetry::show(&client, out, &node, stream.as_deref(), follow, tail).await,
        Command::Logs { node, follow, tail } => {
            let stream = Some(commands::telemetry::LOG_STREAM);
            commands::telemetry::show(&client, out, &node, stream, follow, tail).await
        }
        Command::Events { node } => commands::telemetry::events(&client, out, &node).await,
        Command::EnrollToken(EnrollTokenCommand::Create {
            name,
            uses,
            ttl,
            nodes,
        }) => {
            let token = commands::identity::NewToken {
                name: &name,
                uses,
                ttl,
                nodes: nodes.as_deref(),
            };
            commands::identity::create_token(&client, out, token).await
        }
        Command::EnrollToken(EnrollTokenCommand::List) => {
            commands::identity::list_tokens(&client, out).await
        }
        Command::EnrollToken(EnrollTokenCommand::Delete { id }) => {
            commands::identity::delete_token(&client, &id).await
        }
        Command::Revoke { node } => commands::identity::revoke(&client, out, &node).await,
        Command::Readmit { node } => commands::identity::readmit(&client, &node).await,
        Command::Replace { node } => commands::identity::replace(&client, out, &node).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wedgectl: {e}");
            ExitCode::from(e.code())
        }
    }
}
