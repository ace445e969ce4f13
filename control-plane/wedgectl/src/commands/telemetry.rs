//! `wedgectl telemetry NODE`, `wedgectl logs NODE` (the `$log` stream) and
//! `wedgectl events NODE`.

use std::time::Duration;

use serde_json::Value;

use crate::client::{Client, segment};
use crate::output::{self, Format, age, text};
use crate::{Failure, Result};

pub use wedge_proto::messages::LOG_STREAM;

const POLL: Duration = Duration::from_secs(1);
const PAGE: usize = 1000;

fn query(node: &str, stream: Option<&str>, rest: &str) -> String {
    let mut q = format!("/api/v1/nodes/{}/telemetry?{rest}", segment(node));
    if let Some(s) = stream {
        q.push_str(&format!("&stream={}", segment(s)));
    }
    q
}

fn print_record(out: Format, r: &Value) {
    match out {
        Format::Json => println!("{r}"),
        Format::Table if r["stream"] == LOG_STREAM => println!(
            "{}  {}  [{}] {}",
            text(&r["timestamp"]),
            text(&r["module"]),
            text(&r["payload"]["level"]),
            text(&r["payload"]["message"])
        ),
        Format::Table => {
            let payload = if r["payload"].is_null() {
                format!("base64:{}", text(&r["payload_base64"]))
            } else {
                text(&r["payload"])
            };
            println!(
                "{:>8}  {}  {}  {payload}",
                text(&r["seq"]),
                text(&r["timestamp"]),
                text(&r["stream"])
            );
        }
    }
}

pub async fn show(
    client: &Client,
    out: Format,
    node: &str,
    stream: Option<&str>,
    follow: bool,
    tail: usize,
) -> Result<()> {
    let tail = tail.clamp(1, 10_000);
    let first = client
        .get(&query(node, stream, &format!("newest=true&limit={tail}")))
        .await?;
    let records = first.as_array().cloned().unwrap_or_default();
    if !follow {
        match out {
            Format::Json => output::json(&first),
            Format::Table => records.iter().for_each(|r| print_record(out, r)),
        }
        return Ok(());
    }
    // Following: JSON lines, one record each, as they arrive.
    records.iter().for_each(|r| print_record(out, r));
    let mut after = records.last().and_then(|r| r["seq"].as_u64()).unwrap_or(0);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let page = client
            .get(&query(
                node,
                stream,
                &format!("after_seq={after}&limit={PAGE}"),
            ))
            .await?;
        for r in page.as_array().into_iter().flatten() {
            print_record(out, r);
            after = after.max(r["seq"].as_u64().unwrap_or(after));
        }
    }
}

pub async fn events(client: &Client, out: Format, node: &str) -> Result<()> {
    let all = client
        .get(&format!("/api/v1/nodes/{}/events", segment(node)))
        .await?;
    if out == Format::Json {
        output::json(&all);
        return Ok(());
    }
    let events = all.as_array().map_or(&[][..], Vec::as_slice);
    if events.is_empty() {
        return Err(Failure::Outcome(format!("no events for {node}")));
    }
    let mut t = output::table(&["age", "time", "event", "module", "message"]);
    for e in events {
        let message = match e["level"].as_str() {
            Some(level) => format!("[{level}] {}", text(&e["message"])),
            None => text(&e["message"]),
        };
        t.add_row(vec![
            age(&e["time"]),
            text(&e["time"]),
            text(&e["kind"]),
            text(&e["module"]),
            message,
        ]);
    }
    println!("{t}");
    Ok(())
}
