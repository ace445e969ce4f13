//! Publisher signatures on modules: ed25519 over the module's digest.
//!
//! A publisher signs `wedge-module-v1:` followed by the digest's text (`sha256:<hex>`); the
//! prefix keeps a module signature from ever being valid for anything else signed with the
//! same key. Nodes that trust publisher keys run only modules signed by one of them, and
//! check before fetching the blob (the digest, and so the signature, is in the desired
//! state), so a refused module costs no transfer.
//!
//! Text forms: a public key is `ed25519:<base64>`; a signature travels in the upload's
//! `Wedge-Signature` header as `ed25519:<base64 key>:<base64 signature>`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::Digest;

const CONTEXT: &[u8] = b"wedge-module-v1:";

/// A publisher's signature on one module digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleSignature {
    #[serde(with = "serde_bytes")]
    pub public_key: [u8; 32],
    #[serde(with = "serde_bytes")]
    pub signature: [u8; 64],
}

/// Why a module is not allowed to run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unsigned module refused: this node runs only modules signed by a trusted publisher")]
    Unsigned,
    #[error("module signed by an untrusted key {0}")]
    Untrusted(String),
    #[error("bad module signature: it does not match the module's digest")]
    Invalid,
}

fn message(digest: &Digest) -> Vec<u8> {
    let mut m = CONTEXT.to_vec();
    m.extend_from_slice(digest.to_string().as_bytes());
    m
}

/// `ed25519:<base64>`.
pub fn format_public_key(key: &[u8; 32]) -> String {
    format!("ed25519:{}", B64.encode(key))
}

/// Reads `ed25519:<base64>` (or the bare base64).
pub fn parse_public_key(text: &str) -> Result<[u8; 32], String> {
    let b64 = text.trim().strip_prefix("ed25519:").unwrap_or(text.trim());
    let bytes = B64
        .decode(b64)
        .map_err(|_| format!("{text:?} is not an ed25519:<base64> public key"))?;
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| format!("{text:?} is not 32 bytes long"))?;
    VerifyingKey::from_bytes(&key).map_err(|_| format!("{text:?} is not a valid ed25519 key"))?;
    Ok(key)
}

/// The public key of a private key seed.
pub fn public_key(seed: &[u8; 32]) -> [u8; 32] {
    SigningKey::from_bytes(seed).verifying_key().to_bytes()
}

impl ModuleSignature {
    /// Signs `digest` with the private key `seed`.
    pub fn sign(seed: &[u8; 32], digest: &Digest) -> Self {
        let key = SigningKey::from_bytes(seed);
        Self {
            public_key: key.verifying_key().to_bytes(),
            signature: key.sign(&message(digest)).to_bytes(),
        }
    }

    /// Whether this is a valid signature of `digest` by `public_key`.
    pub fn verify(&self, digest: &Digest) -> Result<(), Refusal> {
        let key = VerifyingKey::from_bytes(&self.public_key).map_err(|_| Refusal::Invalid)?;
        key.verify_strict(&message(digest), &Signature::from_bytes(&self.signature))
            .map_err(|_| Refusal::Invalid)
    }

    pub fn to_header(&self) -> String {
        format!(
            "{}:{}",
            format_public_key(&self.public_key),
            B64.encode(self.signature)
        )
    }

    pub fn from_header(text: &str) -> Result<Self, String> {
        let rest = text
            .trim()
            .strip_prefix("ed25519:")
            .ok_or("a signature is ed25519:<base64 key>:<base64 signature>")?;
        let (key, sig) = rest
            .split_once(':')
            .ok_or("a signature is ed25519:<base64 key>:<base64 signature>")?;
        let public_key = parse_public_key(key)?;
        let signature: [u8; 64] = B64
            .decode(sig)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("the signature part is not 64 bytes of base64")?;
        Ok(Self {
            public_key,
            signature,
        })
    }
}

/// Whether a module with `digest` and `signature` may run where `trusted` keys are trusted;
/// no trusted keys: every module may (signatures are not required).
pub fn check(
    signature: Option<&ModuleSignature>,
    digest: &Digest,
    trusted: &[[u8; 32]],
) -> Result<(), Refusal> {
    if trusted.is_empty() {
        return Ok(());
    }
    let sig = signature.ok_or(Refusal::Unsigned)?;
    if !trusted.contains(&sig.public_key) {
        return Err(Refusal::Untrusted(format_public_key(&sig.public_key)));
    }
    sig.verify(digest)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn signed_trusted_untrusted_unsigned_and_tampered() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let digest = Digest::of(b"module");
        let sig = ModuleSignature::sign(&a, &digest);
        let trusted = [public_key(&a)];
        assert_eq!(check(Some(&sig), &digest, &trusted), Ok(()));
        assert_eq!(check(None, &digest, &trusted), Err(Refusal::Unsigned));
        assert_eq!(
            check(None, &digest, &[]),
            Ok(()),
            "nothing trusted: not required"
        );
        let other = ModuleSignature::sign(&b, &digest);
        assert!(matches!(
            check(Some(&other), &digest, &trusted),
            Err(Refusal::Untrusted(_))
        ));
        // A valid signature of another module, and a flipped bit.
        let elsewhere = ModuleSignature::sign(&a, &Digest::of(b"other"));
        assert_eq!(
            check(Some(&elsewhere), &digest, &trusted),
            Err(Refusal::Invalid)
        );
        let mut flipped = sig.clone();
        flipped.signature[0] ^= 1;
        assert_eq!(
            check(Some(&flipped), &digest, &trusted),
            Err(Refusal::Invalid)
        );
    }

    #[test]
    fn text_forms_round_trip() {
        let seed = [7u8; 32];
        let sig = ModuleSignature::sign(&seed, &Digest::of(b"m"));
        assert_eq!(ModuleSignature::from_header(&sig.to_header()).unwrap(), sig);
        let key = public_key(&seed);
        assert_eq!(parse_public_key(&format_public_key(&key)).unwrap(), key);
        for bad in ["", "ed25519:", "ed25519:AAAA", "rsa:abc", "ed25519:!!:??"] {
            assert!(ModuleSignature::from_header(bad).is_err(), "{bad}");
        }
        assert!(parse_public_key("ed25519:AAAA").is_err());
    }
}
