//! Where the API is and how to authenticate: flags, then the environment (`WEDGE_API`,
//! `WEDGE_TOKEN`, read by clap), then a TOML file, then the default.
//!
//! The file is `$WEDGE_CONFIG`, else `$XDG_CONFIG_HOME/wedge/wedgectl.toml`, else
//! `~/.config/wedge/wedgectl.toml`; it holds `api = "http://…"`, `token = "…"` and, for
//! an `https://` API, `ca_sha256 = "…"` (the control plane's CA, pinned like nodes pin it)
//! or `ca_file = "…"` (PEM certificates to trust, e.g. the CA's `ca.crt` or a public
//! bundle when the API has a certificate of the operator's).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

pub const DEFAULT_API: &str = "http://127.0.0.1:8080";

/// What one source says: the flags (with their environment variables), or the file. What
/// a source leaves out (`None`) comes from the next one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Given {
    pub api: Option<String>,
    pub token: Option<String>,
    pub ca_sha256: Option<String>,
    pub ca_file: Option<PathBuf>,
}

/// How to reach the API.
#[derive(Debug, Default)]
pub struct Settings {
    pub api: String,
    pub token: Option<String>,
    /// Whom to trust for an `https://` API.
    pub ca_sha256: Option<String>,
    pub ca_file: Option<PathBuf>,
}

/// The file to read: the one named, or the default location if it exists.
pub fn file_path(named: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = named {
        return Some(p.to_path_buf());
    }
    let dir = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    let p = dir.join("wedge").join("wedgectl.toml");
    p.is_file().then_some(p)
}

pub fn read(path: &Path) -> anyhow::Result<Given> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// The API URL, token and trust to use: what is `given` wins over the file.
pub fn resolve(given: Given, config: Option<&Path>) -> anyhow::Result<Settings> {
    let file = match file_path(config) {
        Some(p) => read(&p)?,
        None => Given::default(),
    };
    let api = given
        .api
        .or(file.api)
        .unwrap_or_else(|| DEFAULT_API.to_string());
    if !(api.starts_with("http://") || api.starts_with("https://")) {
        anyhow::bail!("the API URL must start with http:// or https://, not {api:?}");
    }
    Ok(Settings {
        api,
        token: given.token.or(file.token).filter(|t| !t.is_empty()),
        ca_sha256: given.ca_sha256.or(file.ca_sha256).filter(|t| !t.is_empty()),
        ca_file: given.ca_file.or(file.ca_file),
    })
}
