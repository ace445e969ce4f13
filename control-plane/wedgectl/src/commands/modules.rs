//! `wedgectl modules push|list`.

use std::path::Path;

use anyhow::Context;

use crate::client::{Client, segment};
use crate::output::{self, Format, age, bytes, text};
use crate::{Failure, Result};

pub async fn push(
    client: &Client,
    out: Format,
    file: &Path,
    name: &str,
    version: &str,
    sign_key: Option<&Path>,
) -> Result<()> {
    let wasm = std::fs::read(file)
        .with_context(|| format!("cannot read {}", file.display()))
        .map_err(Failure::Input)?;
    let signature = match sign_key {
        Some(key) => {
            let seed = super::keys::read_seed(key).map_err(Failure::Input)?;
            let digest = wedge_proto::Digest::of(&wasm);
            let module = wedge_proto::signing::Signed {
                name,
                version,
                digest: &digest,
            };
            Some(wedge_proto::signing::ModuleSignature::sign(&seed, module).to_header())
        }
        None => None,
    };
    let answer = client
        .post_bytes(
            &format!(
                "/api/v1/modules?name={}&version={}",
                segment(name),
                segment(version)
            ),
            wasm,
            signature,
        )
        .await?;
    let m = &answer.body;
    match out {
        Format::Json => output::json(m),
        Format::Table if answer.status == 201 => println!(
            "module {}@{} pushed: {} ({}){}",
            text(&m["name"]),
            text(&m["version"]),
            text(&m["digest"]),
            bytes(&m["size"]),
            m["signed_by"]
                .as_str()
                .map(|k| format!(", signed by {k}"))
                .unwrap_or_default()
        ),
        Format::Table => println!(
            "module {}@{} unchanged: already stored with the same digest {}",
            text(&m["name"]),
            text(&m["version"]),
            text(&m["digest"])
        ),
    }
    Ok(())
}

pub async fn list(client: &Client, out: Format) -> Result<()> {
    let all = client.get("/api/v1/modules").await?;
    if out == Format::Json {
        output::json(&all);
        return Ok(());
    }
    let mut t = output::table(&["name", "version", "size", "digest", "uploaded"]);
    for m in all.as_array().into_iter().flatten() {
        t.add_row(vec![
            text(&m["name"]),
            text(&m["version"]),
            bytes(&m["size"]),
            text(&m["digest"]),
            format!("{} ago", age(&m["uploaded_at"])),
        ]);
    }
    println!("{t}");
    Ok(())
}
