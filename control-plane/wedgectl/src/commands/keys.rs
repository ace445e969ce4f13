//! Publisher keys: `wedgectl keys generate|public`, and signing for `modules push --sign-key`.
//!
//! A private key file holds one line, `ed25519-seed:<base64 of 32 bytes>`, and is created
//! readable by its owner only. Nodes trust the public key (`trusted_publishers`).

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use wedge_proto::signing::{format_public_key, public_key};

use crate::{Failure, Result};

const PREFIX: &str = "ed25519-seed:";

/// Reads a private key file.
pub fn read_seed(path: &Path) -> anyhow::Result<[u8; 32]> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let b64 = text
        .trim()
        .strip_prefix(PREFIX)
        .ok_or_else(|| anyhow!("{} is not a wedgectl private key file", path.display()))?;
    B64.decode(b64)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow!("{} holds a damaged key", path.display()))
}

pub fn generate(out: &Path) -> Result<()> {
    (|| {
        if out.exists() {
            bail!("{} exists; refusing to overwrite a key", out.display());
        }
        let seed: [u8; 32] = rand::random();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut f = options
            .open(out)
            .with_context(|| format!("cannot create {}", out.display()))?;
        writeln!(f, "{PREFIX}{}", B64.encode(seed))?;
        eprintln!(
            "private key written to {}; give nodes this public key in trusted_publishers:",
            out.display()
        );
        println!("{}", format_public_key(&public_key(&seed)));
        Ok(())
    })()
    .map_err(Failure::Input)
}

pub fn public(key: &Path) -> Result<()> {
    let seed = read_seed(key).map_err(Failure::Input)?;
    println!("{}", format_public_key(&public_key(&seed)));
    Ok(())
}
