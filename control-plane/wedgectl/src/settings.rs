//! Where the API is and how to authenticate: flags, then the environment (`WEDGE_API`,
//! `WEDGE_TOKEN`, read by clap), then a TOML file, then the default.
//!
//! The file is `$WEDGE_CONFIG`, else `$XDG_CONFIG_HOME/wedge/wedgectl.toml`, else
//! `~/.config/wedge/wedgectl.toml`; it holds `api = "http://…"` and `token = "…"`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

pub const DEFAULT_API: &str = "http://127.0.0.1:8080";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub api: Option<String>,
    pub token: Option<String>,
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

pub fn read(path: &Path) -> anyhow::Result<File> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// The API URL and token to use.
pub fn resolve(
    api: Option<String>,
    token: Option<String>,
    config: Option<&Path>,
) -> anyhow::Result<(String, Option<String>)> {
    let file = match file_path(config) {
        Some(p) => read(&p)?,
        None => File::default(),
    };
    let api = api.or(file.api).unwrap_or_else(|| DEFAULT_API.to_string());
    if !(api.starts_with("http://") || api.starts_with("https://")) {
        anyhow::bail!("the API URL must start with http:// or https://, not {api:?}");
    }
    Ok((api, token.or(file.token).filter(|t| !t.is_empty())))
}
