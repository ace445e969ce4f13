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
) -> Result<()> {
    let wasm = std::fs::read(file)
        .with_context(|| format!("cannot read {}", file.display()))
        .map_err(Failure::Input)?;
    let answer = client
        .post_bytes(
            &format!(
                "/api/v1/modules?name={}&version={}",
                segment(name),
                segment(version)
            ),
            wasm,
        )
        .await?;
    let m = &answer.body;
    match out {
        Format::Json => output::json(m),
        Format::Table if answer.status == 201 => println!(
            "module {}@{} pushed: {} ({})",
            text(&m["name"]),
            text(&m["version"]),
            text(&m["digest"]),
            bytes(&m["size"])
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
