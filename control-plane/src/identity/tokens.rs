//! Bootstrap tokens for enrollment: `wde_<id>_<secret>`, limited in uses and time.
//!
//! Stored like API tokens (only the SHA-256 of the secret, file mode 0600), in
//! `enrollment-tokens.toml`, created and deleted through the API.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

const FILE: &str = "enrollment-tokens.toml";

/// One token as stored and listed (never the secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnrollToken {
    pub id: String,
    pub name: String,
    /// Enrollments it still allows.
    pub uses_left: u32,
    /// ms since the epoch.
    pub expires_ms: u64,
    pub created_ms: u64,
    /// The node ids it may enroll: one id, or a pattern where `*` stands for any run of
    /// characters (`berlin-*`). Absent: any id.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub nodes: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    #[schema(ignore)]
    pub sha256: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFile {
    #[serde(default, rename = "token")]
    tokens: Vec<EnrollToken>,
}

/// Why a bootstrap token is refused. One message for unknown and wrong secret: a caller
/// learns nothing about which ids exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the enrollment token is not valid")]
    Invalid,
    #[error("the enrollment token has expired")]
    Expired,
    #[error("the enrollment token has been used up")]
    UsedUp,
    #[error("the enrollment token is not for this node id")]
    NotForNode,
    #[error("cannot save the enrollment tokens: {0}")]
    Save(String),
}

/// The enrollment tokens of this control plane.
#[derive(Debug)]
pub struct BootstrapTokens {
    path: PathBuf,
    tokens: Mutex<Vec<EnrollToken>>,
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn parse(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.strip_prefix("wde_")?.split_once('_')?;
    (id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()) && !secret.is_empty())
        .then_some((id, secret))
}

impl BootstrapTokens {
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(FILE);
        let file: TokenFile = crate::files::read_toml(&path)?;
        Ok(Self {
            path,
            tokens: Mutex::new(file.tokens),
        })
    }

    fn save(&self, tokens: &[EnrollToken]) -> Result<(), TokenError> {
        crate::files::write_private_toml(
            &self.path,
            &TokenFile {
                tokens: tokens.to_vec(),
            },
        )
        .map_err(|e| TokenError::Save(e.to_string()))
    }

    /// A new token; the only time its secret is seen.
    pub fn create(
        &self,
        name: &str,
        uses: u32,
        ttl_ms: u64,
        nodes: Option<&str>,
        now_ms: u64,
    ) -> Result<(EnrollToken, String), TokenError> {
        use base64::Engine as _;
        let mut tokens = self.tokens.lock().map_err(|_| TokenError::Invalid)?;
        let id = loop {
            let id = hex::encode(rand::random::<[u8; 4]>());
            if !tokens.iter().any(|t| t.id == id) {
                break id;
            }
        };
        let secret =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let entry = EnrollToken {
            id: id.clone(),
            name: name.to_string(),
            uses_left: uses,
            expires_ms: now_ms.saturating_add(ttl_ms),
            created_ms: now_ms,
            nodes: nodes.map(str::to_string),
            sha256: hash(&secret),
        };
        // Expired and used-up tokens are only clutter.
        tokens.retain(|t| t.uses_left > 0 && t.expires_ms > now_ms);
        tokens.push(entry.clone());
        self.save(&tokens)?;
        Ok((public(&entry), format!("wde_{id}_{secret}")))
    }

    pub fn list(&self) -> Vec<EnrollToken> {
        self.tokens
            .lock()
            .map(|t| t.iter().map(public).collect())
            .unwrap_or_default()
    }

    /// Deletes a token; whether it existed.
    pub fn delete(&self, id: &str) -> Result<bool, TokenError> {
        let mut tokens = self.tokens.lock().map_err(|_| TokenError::Invalid)?;
        let before = tokens.len();
        tokens.retain(|t| t.id != id);
        let found = tokens.len() != before;
        if found {
            self.save(&tokens)?;
        }
        Ok(found)
    }

    /// Checks a token for enrolling `node` without using it up.
    pub fn check(&self, token: &str, node: &str, now_ms: u64) -> Result<(), TokenError> {
        let tokens = self.tokens.lock().map_err(|_| TokenError::Invalid)?;
        find(&tokens, token, node, now_ms).map(|_| ())
    }

    /// Uses a token once, for enrolling `node`.
    pub fn consume(&self, token: &str, node: &str, now_ms: u64) -> Result<(), TokenError> {
        let mut tokens = self.tokens.lock().map_err(|_| TokenError::Invalid)?;
        let i = find(&tokens, token, node, now_ms)?;
        tokens[i].uses_left -= 1;
        self.save(&tokens)
    }
}

fn public(t: &EnrollToken) -> EnrollToken {
    EnrollToken {
        sha256: String::new(),
        ..t.clone()
    }
}

/// Whether a token's node pattern admits `node`: `*` matches any run of characters.
pub fn pattern_matches(pattern: &str, node: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = node.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty(); // no `*`: the whole id
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Checks a node pattern as given to the API: the characters of an id, and `*`.
pub fn validate_pattern(pattern: &str) -> Result<(), String> {
    let ok = !pattern.is_empty()
        && pattern.len() <= 128
        && pattern
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*'));
    if ok {
        Ok(())
    } else {
        Err("nodes must be a node id or a pattern of 1 to 128 letters, digits, '.', '_', '-' and '*'".into())
    }
}

fn find(tokens: &[EnrollToken], token: &str, node: &str, now_ms: u64) -> Result<usize, TokenError> {
    let (id, secret) = parse(token).ok_or(TokenError::Invalid)?;
    let i = tokens
        .iter()
        .position(|t| t.id == id && t.sha256 == hash(secret))
        .ok_or(TokenError::Invalid)?;
    if tokens[i].expires_ms <= now_ms {
        return Err(TokenError::Expired);
    }
    if tokens[i].uses_left == 0 {
        return Err(TokenError::UsedUp);
    }
    if let Some(pattern) = &tokens[i].nodes
        && !pattern_matches(pattern, node)
    {
        return Err(TokenError::NotForNode);
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_are_limited_in_uses_and_time_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = BootstrapTokens::load(dir.path()).unwrap();
        let (entry, token) = tokens.create("line-3", 2, 1000, None, 10_000).unwrap();
        assert!(entry.sha256.is_empty(), "the hash is not shown");
        assert_eq!(tokens.check(&token, "n1", 10_001), Ok(()));
        tokens.consume(&token, "n1", 10_001).unwrap();
        let again = BootstrapTokens::load(dir.path()).unwrap();
        assert_eq!(again.list()[0].uses_left, 1);
        assert_eq!(again.check(&token, "n1", 11_000), Err(TokenError::Expired));
        again.consume(&token, "n1", 10_002).unwrap();
        assert_eq!(again.consume(&token, "n1", 10_003), Err(TokenError::UsedUp));
        let forged = format!("wde_{}_{}", entry.id, "A".repeat(43));
        assert_eq!(again.check(&forged, "n1", 10_001), Err(TokenError::Invalid));
        assert_eq!(
            again.check("garbage", "n1", 10_001),
            Err(TokenError::Invalid)
        );
        assert!(again.delete(&entry.id).unwrap());
        assert!(!again.delete(&entry.id).unwrap());
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(!text.contains(parse(&token).unwrap().1));
    }

    #[test]
    fn tokens_bound_to_a_pattern_enroll_only_matching_ids() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = BootstrapTokens::load(dir.path()).unwrap();
        let (entry, token) = tokens
            .create("berlin", 5, 1000, Some("berlin-*"), 10_000)
            .unwrap();
        assert_eq!(entry.nodes.as_deref(), Some("berlin-*"));
        assert_eq!(tokens.check(&token, "berlin-7", 10_001), Ok(()));
        assert_eq!(
            tokens.check(&token, "paris-1", 10_001),
            Err(TokenError::NotForNode)
        );
        assert_eq!(
            tokens.consume(&token, "paris-1", 10_001),
            Err(TokenError::NotForNode)
        );
        assert_eq!(
            BootstrapTokens::load(dir.path()).unwrap().list()[0].uses_left,
            5
        );
    }

    #[test]
    fn patterns() {
        for (pattern, id, ok) in [
            ("n1", "n1", true),
            ("n1", "n10", false),
            ("*", "anything", true),
            ("berlin-*", "berlin-", true),
            ("berlin-*", "berlin-12", true),
            ("berlin-*", "xberlin-1", false),
            ("*-gw", "site-gw", true),
            ("*-gw", "site-gw2", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "ac", false),
            ("ab*ba", "aba", false),
        ] {
            assert_eq!(pattern_matches(pattern, id), ok, "{pattern} {id}");
        }
        assert!(validate_pattern("berlin-*").is_ok());
        assert!(validate_pattern("a/b").is_err());
        assert!(validate_pattern("").is_err());
    }
}
