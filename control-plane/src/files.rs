//! Small TOML files beside the store (API tokens, enrollment tokens, revocations): read with
//! "missing means empty", written atomically (temporary file, fsync, rename) with mode 0600
//! because they hold hashes of secrets.

use std::path::Path;

use anyhow::Context as _;

/// Reads `path`; a missing file is `T::default()`.
pub fn read_toml<T: Default + serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("invalid {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes `value` to `path` atomically, readable by this user only.
pub fn write_private_toml<T: serde::Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    use std::io::Write as _;
    let text = toml::to_string(value)?;
    let tmp = path.with_extension("toml.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}
