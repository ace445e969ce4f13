//! `wedgectl nodes` and `wedgectl node ID`.

use anyhow::anyhow;
use serde_json::Value;

use crate::client::{Client, segment};
use crate::output::{self, Format, age, bytes, labels, text};
use crate::{Failure, Result};

const STATUSES: [&str; 3] = ["online", "degraded", "offline"];

/// Parses `k=v` filters.
fn label_filters(raw: &[String]) -> Result<Vec<(String, String)>> {
    raw.iter()
        .map(|l| {
            l.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| Failure::Input(anyhow!("--label takes k=v, not {l:?}")))
        })
        .collect()
}

pub async fn list(
    client: &Client,
    out: Format,
    status: Option<String>,
    label: &[String],
) -> Result<()> {
    if let Some(s) = &status
        && !STATUSES.contains(&s.as_str())
    {
        return Err(Failure::Input(anyhow!(
            "--status takes one of {}, not {s:?}",
            STATUSES.join(", ")
        )));
    }
    let filters = label_filters(label)?;
    let all = client.get("/api/v1/nodes").await?;
    let nodes: Vec<&Value> = all
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| status.as_ref().is_none_or(|s| n["status"] == s.as_str()))
        .filter(|n| {
            filters
                .iter()
                .all(|(k, v)| n["labels"][k].as_str() == Some(v.as_str()))
        })
        .collect();
    if out == Format::Json {
        output::json(&Value::Array(nodes.into_iter().cloned().collect()));
        return Ok(());
    }
    let mut t = output::table(&[
        "node",
        "status",
        "labels",
        "arch",
        "version",
        "modules",
        "backlog",
        "last seen",
        "reason",
    ]);
    for n in &nodes {
        let modules = n["modules"].as_array().map_or(&[][..], Vec::as_slice);
        let running = modules.iter().filter(|m| m["state"] == "running").count();
        t.add_row(vec![
            text(&n["id"]),
            text(&n["status"]),
            labels(&n["labels"]),
            text(&n["arch"]),
            text(&n["version"]),
            format!("{running}/{}", modules.len()),
            text(&n["telemetry"]["pending"]),
            age(&n["last_seen"]),
            text(&n["reason"]),
        ]);
    }
    if nodes.is_empty() {
        println!("no nodes match");
    } else {
        println!("{t}");
    }
    Ok(())
}

pub async fn show(client: &Client, out: Format, id: &str) -> Result<()> {
    let n = client
        .get(&format!("/api/v1/nodes/{}", segment(id)))
        .await?;
    if out == Format::Json {
        output::json(&n);
        return Ok(());
    }
    let r = &n["resources"];
    let b = &n["telemetry"];
    println!("Node:        {}", text(&n["id"]));
    println!(
        "Status:      {} (for {})",
        text(&n["status"]),
        age(&n["since"])
    );
    if let Some(reason) = n["reason"].as_str() {
        println!("Reason:      {}", crate::output::clean(reason));
    }
    println!("Labels:      {}", labels(&n["labels"]));
    println!("Arch:        {}", text(&n["arch"]));
    println!("Version:     {}", text(&n["version"]));
    println!("Last seen:   {} ago", age(&n["last_seen"]));
    println!(
        "Generation:  {} applied of {}",
        text(&n["applied_generation"]),
        text(&n["desired_generation"])
    );
    println!(
        "Backlog:     {} records ({}), {} dropped",
        text(&b["pending"]),
        bytes(&b["bytes"]),
        text(&b["dropped"])
    );
    println!(
        "Disk:        {} free of {}",
        bytes(&r["disk_free_bytes"]),
        bytes(&r["disk_total_bytes"])
    );
    println!(
        "Memory:      {} available of {}",
        bytes(&r["memory_available_bytes"]),
        bytes(&r["memory_total_bytes"])
    );
    let modules = n["modules"].as_array().map_or(&[][..], Vec::as_slice);
    if modules.is_empty() {
        println!("Modules:     none");
        return Ok(());
    }
    let mut t = output::table(&[
        "module",
        "state",
        "restarts",
        "messages",
        "errors",
        "emitted",
        "digest",
        "last error",
    ]);
    for m in modules {
        t.add_row(vec![
            text(&m["name"]),
            text(&m["state"]),
            text(&m["restarts"]),
            text(&m["stats"]["messages"]),
            text(&m["stats"]["errors"]),
            text(&m["stats"]["emitted"]),
            text(&m["digest"]).chars().take(19).collect(),
            text(&m["last_error"]),
        ]);
    }
    println!("Modules:\n{t}");
    Ok(())
}
