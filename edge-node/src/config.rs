//! Configuration of an edge node: defaults, then a TOML file (`--config`), then flags.
//! Validated before anything binds a port; an invalid one exits with code 64.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use wedge_proto::topics::validate_id;

/// Everything an edge node can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The node's id: unique in the fleet, `[A-Za-z0-9._-]{1,128}`.
    pub node_id: String,
    /// Where the local store lives.
    pub data_dir: PathBuf,
    /// The control plane's MQTT broker: `mqtts://host:port` (TLS with a node certificate;
    /// port 8883 by default) or `mqtt://host:port` (plain, only when its TLS is off).
    pub control_plane: String,
    /// A bootstrap token to enroll with when the node has no certificate yet.
    pub enroll_token: Option<String>,
    /// SHA-256 (hex) of the control plane's CA certificate: the node trusts that CA only.
    pub ca_sha256: Option<String>,
    /// For a plain `mqtt://` uplink through a third-party broker (Mosquitto): a file whose
    /// first line is this node's password there; the user name is the node id. The
    /// embedded broker (`mqtts://`) uses the node's certificate instead.
    pub uplink_password_file: Option<PathBuf>,
    /// Address of the embedded broker local devices publish to.
    pub local_mqtt_listen: SocketAddr,
    /// Address of the HTTP server with `/metrics`, `/healthz` and `/readyz`.
    pub http_listen: SocketAddr,
    /// Labels deployments select nodes by.
    pub labels: BTreeMap<String, String>,
    pub heartbeat_interval_secs: u64,
    /// MQTT keep-alive with the control plane: the broker fires our last will after 1.5×.
    pub keep_alive_secs: u64,
    /// Largest module blob the node accepts.
    pub max_module_size: u64,
    /// Bytes of telemetry kept on disk while it waits for delivery; beyond it the oldest
    /// records are dropped and counted.
    pub buffer_bytes: u64,
    /// Group commit: what a module emits is on disk within this many milliseconds.
    pub flush_interval_ms: u64,
    /// What a full buffer does: `drop-oldest` or `reject-new`.
    pub buffer_full: crate::buffer::FullPolicy,
    /// Records older than this are dropped (and counted) even if undelivered; none by default.
    pub buffer_ttl_secs: Option<u64>,
    pub limits: ModuleLimits,
    /// Publisher keys (`ed25519:<base64>`) this node trusts; when any are given, only modules
    /// signed by one of them run. Empty: signatures are not required.
    pub trusted_publishers: Vec<String>,
    /// Load modules the control plane compiled ahead of time for this node instead of
    /// compiling them here. Ignored (the node compiles) when `trusted_publishers` is set:
    /// native code is not what a publisher signed.
    pub precompiled: bool,
    /// Who may use the local broker.
    pub devices: crate::devices::DevicesConfig,
    /// Log filter (`info`, `warn,wedge_edge_node=debug`, …); `RUST_LOG` wins over it.
    pub log_level: Option<String>,
}

impl wedge_service::process::ServiceConfig for Config {
    fn log_level(&self) -> Option<&str> {
        self.log_level.as_deref()
    }
}

impl Config {
    /// What runs after a SIGHUP brings `new`: this configuration with the settings a reload
    /// applies at once taken from `new` (log level, heartbeat interval, module limits); every
    /// other setting is listed by [`Config::needs_restart`] and keeps its value.
    pub fn reloaded(&self, new: Config) -> Config {
        Config {
            heartbeat_interval_secs: new.heartbeat_interval_secs,
            limits: new.limits,
            log_level: new.log_level,
            ..self.clone()
        }
    }

    /// The settings that differ from `old` and take effect only after a restart.
    pub fn needs_restart(&self, old: &Config) -> Vec<&'static str> {
        wedge_service::changed_fields!(
            self,
            old,
            node_id,
            data_dir,
            control_plane,
            uplink_password_file,
            local_mqtt_listen,
            http_listen,
            labels,
            keep_alive_secs,
            max_module_size,
            buffer_bytes,
            flush_interval_ms,
            buffer_full,
            buffer_ttl_secs,
            trusted_publishers,
            precompiled,
            devices,
        )
    }
}

/// Default `max_module_size` on both sides: a componentize-py module is 18.4 MB, a
/// componentize-js one 12 MB.
pub const DEFAULT_MAX_MODULE_SIZE: u64 = 64 * 1024 * 1024;

/// Default limits for every module instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModuleLimits {
    /// Most linear memory one instance may have.
    pub memory_bytes: u64,
    /// Longest one call (init or on-message) may run before it is interrupted.
    pub call_timeout_ms: u64,
    /// Messages waiting for one instance; beyond it new ones are dropped and counted.
    pub queue: usize,
    /// Bytes of keys and values one module may keep in its key-value store.
    pub kv_bytes: u64,
    /// Local publishes one module may make per second (and in a burst).
    pub publish_per_sec: u32,
    /// Core WebAssembly instances in one module's component: 1–2 for Rust, 5 for
    /// componentize-js, 14 for componentize-py.
    pub instances: usize,
    /// Tables in one module's component.
    pub tables: usize,
    /// Linear memories in one module's component.
    pub memories: usize,
}

impl ModuleLimits {
    /// What one instance may use: these limits, with `memory_bytes` (the deployment's, or
    /// these limits' own).
    pub fn instance(&self, memory_bytes: u64) -> crate::runtime::InstanceLimits {
        crate::runtime::InstanceLimits {
            memory_bytes: usize::try_from(memory_bytes).unwrap_or(usize::MAX),
            instances: self.instances,
            tables: self.tables,
            memories: self.memories,
        }
    }
}

impl Default for ModuleLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 32 * 1024 * 1024,
            call_timeout_ms: 1000,
            queue: 1024,
            kv_bytes: 1024 * 1024,
            // What one instance can process: a lower default refused a module's own alerts in a burst.
            publish_per_sec: 100_000,
            instances: 32,
            tables: 32,
            memories: 8,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_id: String::new(),
            data_dir: PathBuf::from("wedge-node-data"),
            control_plane: "mqtts://127.0.0.1:8883".into(),
            enroll_token: None,
            ca_sha256: None,
            uplink_password_file: None,
            local_mqtt_listen: SocketAddr::from(([0, 0, 0, 0], 1883)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            labels: BTreeMap::new(),
            heartbeat_interval_secs: 5,
            keep_alive_secs: 5,
            max_module_size: DEFAULT_MAX_MODULE_SIZE,
            buffer_bytes: 64 * 1024 * 1024,
            flush_interval_ms: 10,
            buffer_full: Default::default(),
            buffer_ttl_secs: None,
            limits: ModuleLimits::default(),
            trusted_publishers: Vec::new(),
            precompiled: true,
            devices: Default::default(),
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

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(self.heartbeat_interval_secs)
    }

    /// The trusted publisher keys, parsed.
    pub fn trusted_keys(&self) -> anyhow::Result<Vec<[u8; 32]>> {
        self.trusted_publishers
            .iter()
            .map(|k| {
                wedge_proto::signing::parse_public_key(k)
                    .map_err(|e| anyhow::anyhow!("trusted_publishers: {e}"))
            })
            .collect()
    }

    /// The control plane's broker as (host, port).
    pub fn control_plane_addr(&self) -> anyhow::Result<(String, u16)> {
        parse_mqtt_url(&self.control_plane)
    }

    /// The uplink login (node id, password) for a third-party broker, read from
    /// `uplink_password_file`.
    pub fn uplink_credentials(&self) -> anyhow::Result<Option<(String, String)>> {
        let Some(path) = &self.uplink_password_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read uplink_password_file {}", path.display()))?;
        let password = text.lines().next().unwrap_or_default().to_string();
        if password.is_empty() {
            bail!("uplink_password_file {} is empty", path.display());
        }
        Ok(Some((self.node_id.clone(), password)))
    }

    /// Whether the uplink uses TLS (`mqtts://`).
    pub fn uplink_tls(&self) -> bool {
        self.control_plane.starts_with("mqtts://")
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        validate_id(&self.node_id).map_err(|e| anyhow::anyhow!("node_id {e}"))?;
        self.control_plane_addr()?;
        if let Some(pin) = &self.ca_sha256
            && (pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            bail!("ca_sha256 must be 64 hex digits (the SHA-256 of the control plane's CA)");
        }
        if self.uplink_password_file.is_some() && self.uplink_tls() {
            bail!(
                "uplink_password_file is for a plain mqtt:// broker (Mosquitto); with mqtts:// \
                 the node logs in with its certificate"
            );
        }
        self.trusted_keys()?;
        self.devices.validate()?;
        for (k, v) in &self.labels {
            if k.is_empty() || k.contains([',', '=']) || v.contains([',', '=']) {
                bail!("label {k}={v}: keys must be non-empty; neither may contain ',' or '='");
            }
        }
        if self.heartbeat_interval_secs == 0 || self.keep_alive_secs == 0 {
            bail!("heartbeat_interval_secs and keep_alive_secs must be at least 1");
        }
        // The floors every module limit has (wedge_proto::rules), node defaults included.
        let limits = wedge_proto::messages::Limits {
            memory_bytes: Some(self.limits.memory_bytes),
            call_timeout_ms: Some(self.limits.call_timeout_ms),
            kv_bytes: Some(self.limits.kv_bytes),
            publish_per_sec: Some(self.limits.publish_per_sec),
        };
        limits.validate().map_err(anyhow::Error::msg)?;
        if self.buffer_bytes < 1024 * 1024 || self.limits.queue == 0 {
            bail!("buffer_bytes must be at least 1 MiB and limits.queue positive");
        }
        if self.limits.instances == 0 || self.limits.tables == 0 || self.limits.memories == 0 {
            bail!("limits.instances, limits.tables and limits.memories must be positive");
        }
        if self.max_module_size == 0 {
            bail!("max_module_size must be positive");
        }
        if !wedge_engine::CAN_COMPILE && (!self.precompiled || !self.trusted_publishers.is_empty())
        {
            bail!(
                "this wedge-node was built without a compiler and runs only modules the control \
                 plane compiled for it, but {} means it must compile them itself: use a build \
                 with the compiler (`deploy/build-arm64 --compiler`)",
                if self.precompiled {
                    "trusted_publishers"
                } else {
                    "precompiled = false"
                }
            );
        }
        Ok(())
    }
}

/// Parses `mqtt://host:port` (or `tcp://`, or a bare `host:port`); the port defaults to 1883.
pub fn parse_mqtt_url(url: &str) -> anyhow::Result<(String, u16)> {
    wedge_proto::mqtt_url::parse(url)
        .map(|u| (u.host, u.port))
        .map_err(|e| anyhow::anyhow!("control plane {e}"))
}

/// Parses `k=v,k2=v2` into labels.
pub fn parse_labels(s: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("label {pair:?} is not key=value"))?;
        labels.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_reload_names_what_needs_a_restart() {
        let old = Config::default();
        let mut new = Config {
            heartbeat_interval_secs: 1,
            log_level: Some("debug".into()),
            ..Config::default()
        };
        new.limits.queue = 7;
        assert!(new.needs_restart(&old).is_empty(), "all reloadable");
        assert_eq!(new.heartbeat_interval(), Duration::from_secs(1));
        assert_eq!(new.limits.queue, 7);
        new.local_mqtt_listen = "127.0.0.1:1".parse().unwrap();
        new.labels.insert("a".into(), "b".into());
        assert_eq!(new.needs_restart(&old), ["local_mqtt_listen", "labels"]);
    }

    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_mqtt_url("mqtt://cp.local:1884").unwrap(),
            ("cp.local".into(), 1884)
        );
        assert_eq!(
            parse_mqtt_url("10.0.0.1").unwrap(),
            ("10.0.0.1".into(), 1883)
        );
        assert_eq!(parse_mqtt_url("mqtt://[::1]:9").unwrap(), ("::1".into(), 9));
        assert!(parse_mqtt_url("http://x:1").is_err());
        assert!(parse_mqtt_url("mqtt://x:notaport").is_err());
        assert!(parse_mqtt_url("mqtt://").is_err());
    }

    #[test]
    fn labels() {
        let l = parse_labels("site=berlin, role=gateway").unwrap();
        assert_eq!(l["site"], "berlin");
        assert_eq!(l["role"], "gateway");
        assert!(parse_labels("oops").is_err());
        assert!(parse_labels("").unwrap().is_empty());
    }

    #[test]
    fn validation() {
        let mut c = Config {
            node_id: "n1".into(),
            ..Config::default()
        };
        c.validate().unwrap();
        c.node_id = "bad/id".into();
        assert!(c.validate().is_err());
        c.node_id = "n1".into();
        c.limits.memory_bytes = 1024;
        assert!(c.validate().is_err());
        assert!(toml::from_str::<Config>("unknown = 1").is_err());
    }
}
