//! Configuration of the control plane: defaults, then a TOML file (`--config`), then
//! flags. Validated before anything binds a port; an invalid one exits with code 64.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// Everything the control plane can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the store lives.
    pub data_dir: PathBuf,
    /// HTTP API address.
    pub api_listen: SocketAddr,
    /// Whether the API speaks HTTPS: `auto` (the default) serves HTTPS on every address but
    /// a loopback one; `on` always; `off` plain HTTP even on a network address (only behind
    /// a TLS-terminating proxy: tokens cross the network in clear otherwise).
    pub api_tls: ApiTls,
    /// The API's certificate chain and key (PEM), e.g. from a public CA; without them it
    /// uses a certificate from the control plane's own CA, which `wedgectl` pins
    /// (`--ca-sha256`).
    pub api_tls_cert_file: Option<PathBuf>,
    pub api_tls_key_file: Option<PathBuf>,
    /// Address of the embedded MQTT broker the nodes connect to.
    pub mqtt_listen: SocketAddr,
    /// An external MQTT broker (`mqtt://host:port`, e.g. Mosquitto) to use instead of the
    /// embedded one; nodes then connect to it too. Node identity and topic rules are then
    /// the broker's job (see `deploy/mosquitto/`).
    pub mqtt_broker: Option<String>,
    /// User name for the external broker (none: connect anonymously).
    pub mqtt_broker_username: Option<String>,
    /// File holding the external broker password (first line), read at start.
    pub mqtt_broker_password_file: Option<PathBuf>,
    /// A node whose last heartbeat is older than this is offline.
    pub heartbeat_timeout_secs: u64,
    /// Largest module accepted by `POST /api/v1/modules`.
    pub max_module_size: usize,
    /// Largest MQTT payload the broker accepts.
    pub mqtt_max_payload: usize,
    /// Telemetry older than this is deleted.
    pub telemetry_retention_secs: u64,
    /// When stored telemetry exceeds this, the oldest records are deleted.
    pub telemetry_max_bytes: u64,
    /// Who may use the API.
    pub auth: AuthConfig,
    pub tls: TlsConfig,
    /// Log filter (`info`, `warn,wedge_control_plane=debug`, …); `RUST_LOG` wins over it.
    pub log_level: Option<String>,
}

impl wedge_service::process::ServiceConfig for Config {
    fn log_level(&self) -> Option<&str> {
        self.log_level.as_deref()
    }
}

impl Config {
    /// What runs after a SIGHUP brings `new`: this configuration with the settings a reload
    /// applies at once taken from `new` (log level, heartbeat timeout, telemetry retention);
    /// every other setting is listed by [`Config::needs_restart`] and keeps its value.
    pub fn reloaded(&self, new: Config) -> Config {
        Config {
            heartbeat_timeout_secs: new.heartbeat_timeout_secs,
            telemetry_retention_secs: new.telemetry_retention_secs,
            telemetry_max_bytes: new.telemetry_max_bytes,
            log_level: new.log_level,
            ..self.clone()
        }
    }

    /// The settings that differ from `old` and take effect only after a restart.
    pub fn needs_restart(&self, old: &Config) -> Vec<&'static str> {
        wedge_service::changed_fields!(
            self,
            old,
            data_dir,
            api_listen,
            api_tls,
            api_tls_cert_file,
            api_tls_key_file,
            mqtt_listen,
            mqtt_broker,
            mqtt_broker_username,
            mqtt_broker_password_file,
            max_module_size,
            mqtt_max_payload,
            auth,
            tls,
        )
    }
}

/// Whether the API speaks HTTPS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ApiTls {
    /// HTTPS unless the API listens on a loopback address.
    #[default]
    Auto,
    On,
    Off,
}

impl Config {
    /// Whether the API is served over HTTPS.
    pub fn api_https(&self) -> bool {
        match self.api_tls {
            ApiTls::On => true,
            ApiTls::Off => false,
            ApiTls::Auto => !self.api_listen.ip().is_loopback(),
        }
    }
}

/// TLS and node certificates on the broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Off only on a network where every client is trusted: then any client may connect
    /// and use any topic.
    pub enabled: bool,
    /// Names and addresses nodes reach the broker by, for its certificate (`localhost`,
    /// `127.0.0.1` and this host's name are always included).
    pub names: Vec<String>,
    /// Lifetime of a node certificate; nodes renew at two thirds of it.
    pub node_cert_lifetime_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            names: Vec::new(),
            node_cert_lifetime_secs: 30 * 86_400,
        }
    }
}

/// API tokens (see [`crate::auth`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Off: anyone who reaches the API may do anything (demo only; logged loudly).
    pub enabled: bool,
    /// Requests per second each token may make on average…
    pub rate_per_sec: u32,
    /// …and in a burst.
    pub rate_burst: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            rate_per_sec: 50,
            rate_burst: 200,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("wedge-control-data"),
            api_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            api_tls: ApiTls::Auto,
            api_tls_cert_file: None,
            api_tls_key_file: None,
            mqtt_listen: SocketAddr::from(([0, 0, 0, 0], 8883)),
            mqtt_broker: None,
            mqtt_broker_username: None,
            mqtt_broker_password_file: None,
            heartbeat_timeout_secs: 15,
            // A componentize-py module is 18.4 MB, a componentize-js one 12 MB.
            max_module_size: 64 * 1024 * 1024,
            mqtt_max_payload: 1024 * 1024,
            telemetry_retention_secs: 7 * 24 * 3600,
            telemetry_max_bytes: 1024 * 1024 * 1024,
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            log_level: None,
        }
    }
}

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_secs(self.heartbeat_timeout_secs)
    }

    /// The external broker, when one is configured.
    pub fn external_broker(&self) -> anyhow::Result<Option<wedge_proto::mqtt_url::MqttUrl>> {
        let Some(url) = &self.mqtt_broker else {
            return Ok(None);
        };
        let parsed =
            wedge_proto::mqtt_url::parse(url).map_err(|e| anyhow::anyhow!("mqtt_broker: {e}"))?;
        if parsed.tls {
            bail!(
                "mqtt_broker {url:?}: TLS to an external broker is not supported yet; use                  mqtt:// on a trusted network, or the embedded broker (TLS with node certificates)"
            );
        }
        Ok(Some(parsed))
    }

    /// The external broker's credentials, when one is configured with a user name.
    pub fn external_credentials(&self) -> anyhow::Result<Option<(String, String)>> {
        let (Some(_), Some(user)) = (&self.mqtt_broker, &self.mqtt_broker_username) else {
            return Ok(None);
        };
        let password = match &self.mqtt_broker_password_file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| {
                    format!("cannot read mqtt_broker_password_file {}", path.display())
                })?
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
            None => String::new(),
        };
        Ok(Some((user.clone(), password)))
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.heartbeat_timeout_secs == 0 {
            bail!("heartbeat_timeout_secs must be at least 1");
        }
        self.external_broker()?;
        self.external_credentials()?;
        if self.auth.rate_per_sec == 0 || self.auth.rate_burst == 0 {
            bail!("auth.rate_per_sec and auth.rate_burst must be at least 1");
        }
        if self.tls.node_cert_lifetime_secs < 3 {
            bail!("tls.node_cert_lifetime_secs must be at least 3");
        }
        if self.api_tls_cert_file.is_some() != self.api_tls_key_file.is_some() {
            bail!("api_tls_cert_file and api_tls_key_file go together: give both or neither");
        }
        if self.api_tls_cert_file.is_some() && !self.api_https() {
            bail!(
                "api_tls_cert_file is given but the API serves plain HTTP (api_tls = off, or \
                 auto on a loopback address): set api_tls = \"on\""
            );
        }
        if self.max_module_size == 0 {
            bail!("max_module_size must be positive");
        }
        // Blob chunks and desired states must fit in one MQTT packet with room to spare.
        let min_payload = 2 * wedge_proto::messages::BLOB_CHUNK_SIZE;
        if self.mqtt_max_payload < min_payload {
            bail!("mqtt_max_payload must be at least {min_payload} bytes");
        }
        if self.mqtt_max_payload > wedge_proto::MAX_MESSAGE_SIZE {
            bail!(
                "mqtt_max_payload must be at most {} bytes",
                wedge_proto::MAX_MESSAGE_SIZE
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn file_overrides_defaults_and_rejects_unknown_keys() {
        let cfg: Config = toml::from_str("api_listen = \"127.0.0.1:9000\"").unwrap();
        assert_eq!(cfg.api_listen.port(), 9000);
        assert_eq!(cfg.mqtt_listen.port(), 8883);
        assert!(toml::from_str::<Config>("nope = 1").is_err());
    }

    #[test]
    fn validate_rejects_nonsense() {
        let cfg = Config {
            heartbeat_timeout_secs: 0,
            ..Config::default()
        };
        assert!(cfg.validate().is_err());
        let cfg = Config {
            mqtt_max_payload: 10,
            ..Config::default()
        };
        assert!(cfg.validate().is_err());
    }
}
