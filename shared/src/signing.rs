//! Publisher signatures on modules: ed25519 over the module's name, version and digest.
//!
//! A publisher signs `wedge-module-v2:<name>@<version>:<digest>` (`sha256:<hex>`). Names and
//! versions are `[A-Za-z0-9._-]`, so the `@` and `:` separators cannot be forged by a
//! crafted name. Binding the name and version means signed bytes cannot be presented under
//! another name or version (an old, vulnerable build re-uploaded as the latest one): the
//! node verifies the signature over the name and version its desired state carries, which
//! are the ones the API and the node report.
//!
//! Signatures made before that (`wedge-module-v1:<digest>`, the digest alone) still verify
//! and run; they are marked [`Covers::DigestOnly`] in the API and in the node's log, because
//! whoever can upload may re-label them. The prefixes keep a module signature from ever
//! being valid for anything else signed with the same key. Nodes that trust publisher keys
//! run only modules signed by one of them, and check before fetching the blob (the digest,
//! and so the signature, is in the desired state), so a refused module costs no transfer.
//!
//! Text forms: a public key is `ed25519:<base64>`; a signature travels in the upload's
//! `Wedge-Signature` header as `ed25519:<base64 key>:<base64 signature>`. The header does not
//! say what the signature covers: the control plane tries the name-binding form first and
//! the digest-only one second, and records which one verified.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::Digest;

const CONTEXT_V1: &[u8] = b"wedge-module-v1:";
const CONTEXT_V2: &[u8] = b"wedge-module-v2:";

/// What a signature covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Covers {
    /// The digest alone: the legacy form, kept verifiable. A record without the field
    /// (stored or sent before the field existed) is one of these.
    #[default]
    DigestOnly,
    /// The module's name, version and digest.
    NameVersionDigest,
}

impl Covers {
    pub fn as_str(self) -> &'static str {
        match self {
            Covers::DigestOnly => "digest-only",
            Covers::NameVersionDigest => "name-version-digest",
        }
    }
}

/// A publisher's signature on one module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleSignature {
    #[serde(with = "serde_bytes")]
    pub public_key: [u8; 32],
    #[serde(with = "serde_bytes")]
    pub signature: [u8; 64],
    #[serde(default)]
    pub covers: Covers,
}

/// The module a signature is checked against: what the desired state (or the upload) says.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub digest: &'a Digest,
}

/// Why a module is not allowed to run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unsigned module refused: this node runs only modules signed by a trusted publisher")]
    Unsigned,
    #[error("module signed by an untrusted key {0}")]
    Untrusted(String),
    #[error("bad module signature: it does not match the module's name, version and digest")]
    Invalid,
}

fn message(covers: Covers, module: Signed<'_>) -> Vec<u8> {
    match covers {
        Covers::DigestOnly => [CONTEXT_V1, module.digest.to_string().as_bytes()].concat(),
        Covers::NameVersionDigest => [
            CONTEXT_V2,
            format!("{}@{}:{}", module.name, module.version, module.digest).as_bytes(),
        ]
        .concat(),
    }
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
    /// Signs `module` (name, version and digest) with the private key `seed`.
    pub fn sign(seed: &[u8; 32], module: Signed<'_>) -> Self {
        Self::sign_covering(seed, module, Covers::NameVersionDigest)
    }

    /// Signs in the given form; [`Covers::DigestOnly`] only to make legacy signatures
    /// (tests, tools that must produce them).
    pub fn sign_covering(seed: &[u8; 32], module: Signed<'_>, covers: Covers) -> Self {
        let key = SigningKey::from_bytes(seed);
        Self {
            public_key: key.verifying_key().to_bytes(),
            signature: key.sign(&message(covers, module)).to_bytes(),
            covers,
        }
    }

    /// Whether this is a valid signature of `module` in the form it says it has.
    pub fn verify(&self, module: Signed<'_>) -> Result<(), Refusal> {
        let key = VerifyingKey::from_bytes(&self.public_key).map_err(|_| Refusal::Invalid)?;
        key.verify_strict(
            &message(self.covers, module),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| Refusal::Invalid)
    }

    /// Finds which form this signature (read from a header, form unknown) has for `module`:
    /// the name-binding one first, then the legacy digest-only one.
    pub fn recognise(mut self, module: Signed<'_>) -> Result<Self, Refusal> {
        for covers in [Covers::NameVersionDigest, Covers::DigestOnly] {
            self.covers = covers;
            if self.verify(module).is_ok() {
                return Ok(self);
            }
        }
        Err(Refusal::Invalid)
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
            // Not known from the text; `recognise` finds it.
            covers: Covers::NameVersionDigest,
        })
    }
}

/// Whether `module` with `signature` may run where `trusted` keys are trusted; no trusted
/// keys: every module may (signatures are not required).
pub fn check(
    signature: Option<&ModuleSignature>,
    module: Signed<'_>,
    trusted: &[[u8; 32]],
) -> Result<(), Refusal> {
    if trusted.is_empty() {
        return Ok(());
    }
    let sig = signature.ok_or(Refusal::Unsigned)?;
    if !trusted.contains(&sig.public_key) {
        return Err(Refusal::Untrusted(format_public_key(&sig.public_key)));
    }
    sig.verify(module)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn module<'a>(name: &'a str, version: &'a str, digest: &'a Digest) -> Signed<'a> {
        Signed {
            name,
            version,
            digest,
        }
    }

    #[test]
    fn signed_trusted_untrusted_unsigned_and_tampered() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let digest = Digest::of(b"module");
        let m = module("sensor", "1.2", &digest);
        let sig = ModuleSignature::sign(&a, m);
        assert_eq!(sig.covers, Covers::NameVersionDigest);
        let trusted = [public_key(&a)];
        assert_eq!(check(Some(&sig), m, &trusted), Ok(()));
        assert_eq!(check(None, m, &trusted), Err(Refusal::Unsigned));
        assert_eq!(check(None, m, &[]), Ok(()), "nothing trusted: not required");
        let other = ModuleSignature::sign(&b, m);
        assert!(matches!(
            check(Some(&other), m, &trusted),
            Err(Refusal::Untrusted(_))
        ));
        // A valid signature of another module, and a flipped bit.
        let elsewhere_digest = Digest::of(b"other");
        let elsewhere = ModuleSignature::sign(&a, module("sensor", "1.2", &elsewhere_digest));
        assert_eq!(check(Some(&elsewhere), m, &trusted), Err(Refusal::Invalid));
        let mut flipped = sig.clone();
        flipped.signature[0] ^= 1;
        assert_eq!(check(Some(&flipped), m, &trusted), Err(Refusal::Invalid));
    }

    #[test]
    fn the_same_bytes_under_another_name_or_version_are_refused() {
        let a = [1u8; 32];
        let trusted = [public_key(&a)];
        let digest = Digest::of(b"module");
        let sig = ModuleSignature::sign(&a, module("sensor", "1.2", &digest));
        for (name, version) in [("sensor", "1.3"), ("actuator", "1.2"), ("sensor@1", "2")] {
            assert_eq!(
                check(Some(&sig), module(name, version, &digest), &trusted),
                Err(Refusal::Invalid),
                "{name}@{version}"
            );
        }
        // A separator moved between name and version changes the message.
        let tricky = ModuleSignature::sign(&a, module("a", "b.c", &digest));
        assert_eq!(
            check(Some(&tricky), module("a.b", "c", &digest), &trusted),
            Err(Refusal::Invalid)
        );
    }

    #[test]
    fn legacy_digest_only_signatures_still_verify_and_say_so() {
        let a = [1u8; 32];
        let trusted = [public_key(&a)];
        let digest = Digest::of(b"module");
        let m = module("sensor", "1.2", &digest);
        let legacy = ModuleSignature::sign_covering(&a, m, Covers::DigestOnly);
        // Read from a header, the form is unknown until recognised.
        let read = ModuleSignature::from_header(&legacy.to_header()).unwrap();
        let recognised = read.recognise(m).unwrap();
        assert_eq!(recognised.covers, Covers::DigestOnly);
        assert_eq!(check(Some(&recognised), m, &trusted), Ok(()));
        // Digest-only covers no name: any label verifies, which is why it is marked.
        assert_eq!(
            check(Some(&recognised), module("x", "9", &digest), &trusted),
            Ok(())
        );
        // A name-binding signature is recognised as such, and a bad one as neither.
        let bound = ModuleSignature::from_header(&ModuleSignature::sign(&a, m).to_header())
            .unwrap()
            .recognise(m)
            .unwrap();
        assert_eq!(bound.covers, Covers::NameVersionDigest);
        let elsewhere = ModuleSignature::from_header(&legacy.to_header())
            .unwrap()
            .recognise(module("sensor", "1.2", &Digest::of(b"other")));
        assert_eq!(elsewhere, Err(Refusal::Invalid));
        // A signature without the field (stored or sent before it existed) is digest-only.
        #[derive(Serialize)]
        struct Old {
            #[serde(with = "serde_bytes")]
            public_key: [u8; 32],
            #[serde(with = "serde_bytes")]
            signature: [u8; 64],
        }
        let old = Old {
            public_key: legacy.public_key,
            signature: legacy.signature,
        };
        let mut bytes = Vec::new();
        ciborium::into_writer(&old, &mut bytes).unwrap();
        let decoded: ModuleSignature = ciborium::from_reader(bytes.as_slice()).unwrap();
        assert_eq!(decoded, legacy);
    }

    #[test]
    fn text_forms_round_trip() {
        let seed = [7u8; 32];
        let digest = Digest::of(b"m");
        let sig = ModuleSignature::sign(&seed, module("m", "1", &digest));
        assert_eq!(ModuleSignature::from_header(&sig.to_header()).unwrap(), sig);
        let key = public_key(&seed);
        assert_eq!(parse_public_key(&format_public_key(&key)).unwrap(), key);
        for bad in ["", "ed25519:", "ed25519:AAAA", "rsa:abc", "ed25519:!!:??"] {
            assert!(ModuleSignature::from_header(bad).is_err(), "{bad}");
        }
        assert!(parse_public_key("ed25519:AAAA").is_err());
    }
}
