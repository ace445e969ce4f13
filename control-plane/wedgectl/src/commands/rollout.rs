//! `wedgectl rollout status|pause|resume|abort NAME`.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use crate::client::{Client, segment};
use crate::output::{self, Format, age, text};
use crate::{Failure, Result};

const POLL: Duration = Duration::from_secs(1);

/// One line: phase and node counts.
fn summary(d: &Value) -> String {
    let r = &d["rollout"];
    let c = &r["counts"];
    let n = |k: &str| c[k].as_u64().unwrap_or(0);
    let mut line = format!(
        "{} revision {}: {}{} · {}/{} healthy, {} baking, {} updating, {} pending, {} failed, {} offline",
        text(&d["name"]),
        text(&r["revision"]),
        text(&r["phase"]),
        if r["paused"] == true { " (paused)" } else { "" },
        n("healthy"),
        n("total"),
        n("baking"),
        n("updating"),
        n("pending"),
        n("failed"),
        n("offline"),
    );
    if let Some(reason) = r["reason"].as_str() {
        line.push_str(&format!("\n  reason: {}", crate::output::clean(reason)));
    }
    line
}

fn active(d: &Value) -> bool {
    matches!(d["rollout"]["phase"].as_str(), Some("canary" | "batches"))
}

/// A rollout that ended badly is a failed command for scripts (`--watch`).
fn outcome(d: &Value) -> Result<()> {
    match d["rollout"]["phase"].as_str() {
        Some(p @ ("rolled_back" | "aborted")) => Err(Failure::Outcome(format!(
            "rollout of {} revision {} {}",
            text(&d["name"]),
            text(&d["rollout"]["revision"]),
            p.replace('_', " ")
        ))),
        _ => Ok(()),
    }
}

async fn fetch(client: &Client, name: &str) -> Result<Value> {
    let d = client
        .get(&format!("/api/v1/deployments/{}", segment(name)))
        .await?;
    if d["rollout"].is_null() {
        return Err(Failure::Outcome(format!("{name} has no rollout yet")));
    }
    Ok(d)
}

pub async fn status(client: &Client, out: Format, name: &str, watch: bool) -> Result<()> {
    let mut d = fetch(client, name).await?;
    if !watch {
        match out {
            Format::Json => output::json(&d["rollout"]),
            Format::Table => print_status(&d),
        }
        return Ok(());
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{bar:40.green/white} {pos}/{len} healthy · {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // Without a terminal the bar draws nothing: print each change as a line instead.
    let lines = bar.is_hidden() || out == Format::Json;
    let mut last = String::new();
    loop {
        let r = &d["rollout"];
        let line = summary(&d);
        if line != last {
            match out {
                Format::Json => println!("{}", r),
                Format::Table if lines => println!("{line}"),
                Format::Table => {
                    bar.set_length(r["counts"]["total"].as_u64().unwrap_or(0));
                    bar.set_position(r["counts"]["healthy"].as_u64().unwrap_or(0));
                    bar.set_message(format!(
                        "{}{}",
                        text(&r["phase"]),
                        if r["paused"] == true { " (paused)" } else { "" }
                    ));
                }
            }
            last = line;
        }
        if !active(&d) {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = tokio::signal::ctrl_c() => {
                bar.abandon();
                return Ok(());
            }
        }
        d = fetch(client, name).await?;
    }
    bar.finish_and_clear();
    if out == Format::Table && !lines {
        println!("{}", summary(&d));
    }
    outcome(&d)
}

fn print_status(d: &Value) {
    let r = &d["rollout"];
    println!("{}", summary(d));
    println!(
        "  started {} ago, in this phase for {}; stable revision {}",
        age(&r["started_at"]),
        age(&r["phase_since"]),
        if r["stable_revision"].is_null() {
            "none".to_string()
        } else {
            text(&r["stable_revision"])
        }
    );
    let nodes = r["nodes"].as_array().map_or(&[][..], Vec::as_slice);
    if !nodes.is_empty() {
        let mut t = output::table(&["node", "state", "revision", "online", "since", "error"]);
        for n in nodes {
            t.add_row(vec![
                text(&n["node"]),
                text(&n["state"]),
                text(&n["revision"]),
                if n["online"] == true { "yes" } else { "no" }.to_string(),
                age(&n["since"]),
                text(&n["error"]),
            ]);
        }
        println!("{t}");
    }
}

pub async fn control(client: &Client, out: Format, name: &str, verb: &str) -> Result<()> {
    let answer = client
        .post_json(
            &format!("/api/v1/deployments/{}/{verb}", segment(name)),
            &serde_json::json!({}),
        )
        .await?;
    match out {
        Format::Json => output::json(&answer.body["rollout"]),
        Format::Table => println!("{}", summary(&answer.body)),
    }
    Ok(())
}
