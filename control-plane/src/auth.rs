//! API tokens: who may read and who may change the fleet.
//!
//! A token is `wdg_<id>_<secret>`: `id` (8 hex digits) names it in logs and lists and finds
//! its entry; `secret` is 32 random bytes. Only the SHA-256 of the secret is kept, in
//! `<data_dir>/api-tokens.toml` (mode 0600), so a leaked file grants nothing. A plain hash is
//! enough here, unlike for passwords: the secret has 256 bits of entropy, there is nothing
//! to guess.
//!
//! Tokens are created, listed and revoked with `wedge-control token …`, which edits the file;
//! a running control plane follows the file without a restart: a new token works on its
//! first use (an unknown token makes it look at the file), a revocation within a second (it
//! checks the file's modification time at most once a second otherwise).
//!
//! Roles: `viewer` may read (GET, HEAD); `operator` may also upload, deploy and steer
//! rollouts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{Instant, SystemTime};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The file, in the control plane's data directory.
pub const FILE: &str = "api-tokens.toml";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read everything, change nothing.
    Viewer,
    /// Read and change: upload modules, deploy, pause, resume, abort.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
        }
    }

    /// Whether this role may make a request with `method`.
    pub fn allows(self, method: &axum::http::Method) -> bool {
        use axum::http::Method;
        self == Self::Operator || matches!(*method, Method::GET | Method::HEAD)
    }
}

/// One token as stored: never the secret itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// Hex SHA-256 of the secret part.
    pub sha256: String,
    pub created_at: String,
    /// When it stops working (ms since the epoch); none: until revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
}

impl Entry {
    /// Whether it has expired at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|at| now_ms >= at)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFile {
    #[serde(default, rename = "token")]
    tokens: Vec<Entry>,
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Splits `wdg_<id>_<secret>`.
fn parse(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("wdg_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()) && !secret.is_empty())
        .then_some((id, secret))
}

fn read_file(path: &Path) -> anyhow::Result<TokenFile> {
    crate::files::read_toml(path)
}

fn write_file(path: &Path, file: &TokenFile) -> anyhow::Result<()> {
    crate::files::write_private_toml(path, file)
}

/// Creates a token in `data_dir` that works until revoked, and returns it: the only time the
/// secret is seen.
pub fn create(data_dir: &Path, name: &str, role: Role) -> anyhow::Result<(Entry, String)> {
    create_expiring(data_dir, name, role, None)
}

/// Creates a token that stops working after `ttl` (none: until revoked).
pub fn create_expiring(
    data_dir: &Path,
    name: &str,
    role: Role,
    ttl: Option<std::time::Duration>,
) -> anyhow::Result<(Entry, String)> {
    if ttl.is_some_and(|t| t.is_zero()) {
        bail!("a token's lifetime must be longer than zero");
    }
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        bail!("a token name is 1 to 64 printable characters");
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let path = data_dir.join(FILE);
    let mut file = read_file(&path)?;
    let id = loop {
        let id = hex::encode(rand::random::<[u8; 4]>());
        if !file.tokens.iter().any(|t| t.id == id) {
            break id;
        }
    };
    use base64::Engine as _;
    let secret =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let entry = Entry {
        id: id.clone(),
        name: name.to_string(),
        role,
        sha256: hash(&secret),
        created_at: crate::time::rfc3339(crate::time::now_ms()),
        expires_at_ms: ttl.map(|t| {
            crate::time::now_ms().saturating_add(u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
        }),
    };
    file.tokens.push(entry.clone());
    write_file(&path, &file)?;
    Ok((entry, format!("wdg_{id}_{secret}")))
}

/// Every token in `data_dir` (without secrets).
pub fn list(data_dir: &Path) -> anyhow::Result<Vec<Entry>> {
    Ok(read_file(&data_dir.join(FILE))?.tokens)
}

/// Deletes token `id`; false if there was none.
pub fn revoke(data_dir: &Path, id: &str) -> anyhow::Result<bool> {
    let path = data_dir.join(FILE);
    let mut file = read_file(&path)?;
    let before = file.tokens.len();
    file.tokens.retain(|t| t.id != id);
    if file.tokens.len() == before {
        return Ok(false);
    }
    write_file(&path, &file)?;
    Ok(true)
}

/// The tokens a running control plane accepts, following the file.
#[derive(Debug)]
pub struct ApiTokens {
    path: PathBuf,
    by_id: RwLock<HashMap<String, Entry>>,
    /// Modification time of the file as last read, and when it was last looked at.
    seen: Mutex<(Option<SystemTime>, Instant)>,
}

impl ApiTokens {
    pub fn load(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join(FILE);
        let tokens = Self {
            by_id: RwLock::new(HashMap::new()),
            seen: Mutex::new((None, Instant::now())),
            path,
        };
        tokens.reload()?;
        Ok(tokens)
    }

    pub fn count(&self) -> usize {
        self.by_id.read().map(|m| m.len()).unwrap_or(0)
    }

    fn reload(&self) -> anyhow::Result<()> {
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let file = read_file(&self.path)?;
        let map = file.tokens.into_iter().map(|t| (t.id.clone(), t)).collect();
        if let Ok(mut by_id) = self.by_id.write() {
            *by_id = map;
        }
        if let Ok(mut seen) = self.seen.lock() {
            *seen = (mtime, Instant::now());
        }
        Ok(())
    }

    /// Re-reads the file if it changed: at most once a second, or at once (`now`) when a
    /// token was not found (one just created must work on its first use, as in a script;
    /// an unknown token costs a `stat`, and a re-read only when the file really changed).
    fn refresh(&self, now: bool) {
        let due = {
            let Ok(mut seen) = self.seen.lock() else {
                return;
            };
            if !now && seen.1.elapsed() < std::time::Duration::from_secs(1) {
                return;
            }
            seen.1 = Instant::now();
            let mtime = std::fs::metadata(&self.path)
                .and_then(|m| m.modified())
                .ok();
            mtime != seen.0
        };
        if due {
            match self.reload() {
                Ok(()) => tracing::info!(tokens = self.count(), "API tokens reloaded"),
                // Keep the tokens we had: a half-edited file must not lock everyone out.
                Err(e) => {
                    tracing::error!(error = %e, "cannot reload API tokens; keeping the old ones")
                }
            }
        }
    }

    /// The entry of a presented token, if it is valid.
    pub fn verify(&self, token: &str) -> Option<Entry> {
        self.refresh(false);
        let (id, secret) = parse(token)?;
        let known = self.by_id.read().ok()?.contains_key(id);
        if !known {
            self.refresh(true);
        }
        let by_id = self.by_id.read().ok()?;
        let entry = by_id.get(id)?;
        // Both sides are hashes of the same length; comparing them leaks nothing useful.
        (entry.sha256 == hash(secret) && !entry.expired(crate::time::now_ms()))
            .then(|| entry.clone())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn created_tokens_verify_and_revoked_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (entry, token) = create(dir.path(), "alice", Role::Viewer).unwrap();
        let tokens = ApiTokens::load(dir.path()).unwrap();
        assert_eq!(tokens.verify(&token).unwrap().name, "alice");
        assert_eq!(entry.role, Role::Viewer);
        // The file holds no secret. (The secret is base64url, which may itself contain `_`:
        // take it the way `verify` does, not from the last `_`.)
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        let (_, secret) = parse(&token).unwrap();
        assert_eq!(secret.len(), 43);
        assert!(!text.contains(secret));
        // Wrong secret, wrong shape, unknown id.
        let wrong = format!("wdg_{}_{}", entry.id, "x".repeat(43));
        for bad in [wrong.as_str(), "Bearer", "wdg_zz_x", "", "wdg_00000000_x"] {
            assert!(tokens.verify(bad).is_none(), "{bad}");
        }
        assert!(revoke(dir.path(), &entry.id).unwrap());
        assert!(!revoke(dir.path(), &entry.id).unwrap());
        tokens.reload().unwrap();
        assert!(tokens.verify(&token).is_none());
    }

    #[test]
    fn a_token_with_a_lifetime_stops_working_when_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let day = std::time::Duration::from_secs(86_400);
        let (entry, token) = create_expiring(dir.path(), "ci", Role::Operator, Some(day)).unwrap();
        let tokens = ApiTokens::load(dir.path()).unwrap();
        assert!(tokens.verify(&token).is_some(), "valid within its lifetime");
        let now = crate::time::now_ms();
        let at = entry.expires_at_ms.unwrap();
        assert!(at > now && at <= now + 86_400_000);
        assert!(!entry.expired(at - 1) && entry.expired(at));
        // The same token, its end moved into the past (as time passing would).
        let mut file = read_file(&dir.path().join(FILE)).unwrap();
        file.tokens[0].expires_at_ms = Some(now.saturating_sub(1));
        write_file(&dir.path().join(FILE), &file).unwrap();
        tokens.reload().unwrap();
        assert!(tokens.verify(&token).is_none(), "refused once expired");
        assert!(create_expiring(dir.path(), "x", Role::Viewer, Some(Default::default())).is_err());
    }

    #[test]
    fn a_token_created_while_running_works_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = ApiTokens::load(dir.path()).unwrap();
        // Looked at the file just now: the once-a-second check would not look again.
        assert!(tokens.verify("wdg_00000000_nothing").is_none());
        let (_, token) = create(dir.path(), "script", Role::Operator).unwrap();
        assert!(tokens.verify(&token).is_some());
    }

    #[test]
    fn roles() {
        use axum::http::Method;
        assert!(Role::Viewer.allows(&Method::GET));
        assert!(!Role::Viewer.allows(&Method::POST));
        assert!(Role::Operator.allows(&Method::POST));
    }
}
