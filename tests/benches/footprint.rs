//! The node's memory: the real `wedge-node` binary (release) against a real `wedge-control`,
//! both child processes, uplink TLS. Prints the node's resident memory (VmRSS) at each stage:
//! started and enrolled with nothing to run (broker, store, uplink), one Rust
//! `threshold-alert` running and idle, and idle again after a burst of 20,000 readings (from
//! `wedge-load`), and with `threshold-alert-js` and `threshold-alert-py` running too (when
//! `wasm-modules/build-guests` has built them), loaded as native code the control plane
//! compiled — whose compile time and peak memory it prints as well. The differences are
//! what each part costs.
//!
//! Run: `cargo build --release --bins && cargo bench -p wedge-tests --bench footprint`.
//! Idle means: measured after `SETTLE` without traffic (a measuring choice, not a wait for
//! something to happen).

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::json;
use wedge_tests::process::{Proc, free_port};
use wedge_tests::{Api, DEVICE_PASSWORD, DEVICE_USER, wait_for};

const DEADLINE: Duration = Duration::from_secs(120);
const SETTLE: Duration = Duration::from_secs(5);

/// A `/proc/PID/status` figure in KiB (`VmRSS`: resident now; `VmHWM`: the peak).
fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .and_then(|l| l.split_whitespace().nth(1))
        .with_context(|| format!("no {field}"))?
        .parse()
        .with_context(|| field.to_string())
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let api_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let mqtt_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let local_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let cp_dir = dir.path().join("cp");
    let api = Api::with_token(api_addr, Some(wedge_tests::operator_token(&cp_dir)?));
    let cp = Proc::control_plane(&cp_dir, api_addr, mqtt_addr)?;
    wait_for("control plane API", DEADLINE, || async {
        api.get("/healthz").await.ok().filter(|(s, _)| *s == 200)
    })
    .await?;
    let enrollment = api.enrollment().await?;
    let node = Proc::node(
        "small",
        &dir.path().join("node"),
        mqtt_addr,
        local_addr,
        &enrollment,
    )?;
    api.wait_status("small", "online", DEADLINE).await?;
    println!("conditions: release binaries as child processes, uplink TLS, one node");

    tokio::time::sleep(SETTLE).await;
    let empty = rss_kib(node.pid())?;
    api.upload_module("threshold-alert", "1").await?;
    api.deploy(&json!({
        "name": "alert",
        "module": "threshold-alert@1",
        "nodes": ["small"],
        "subscriptions": ["sensors/#"],
        "config": {"threshold": 50, "alert_topic": "alerts/temp"},
    }))
    .await?;
    api.wait_module_state("small", "alert", "running", DEADLINE)
        .await?;
    tokio::time::sleep(SETTLE).await;
    let one_module = rss_kib(node.pid())?;

    let load = Command::new(env!("CARGO_BIN_EXE_wedge-load"))
        .arg(local_addr.to_string())
        .args(["--count", "20000", "--qos", "1"])
        .args(["--user", DEVICE_USER, "--password", DEVICE_PASSWORD])
        .output()?;
    ensure!(
        load.status.success(),
        "wedge-load: {}",
        String::from_utf8_lossy(&load.stderr)
    );
    tokio::time::sleep(SETTLE).await;
    let after_burst = rss_kib(node.pid())?;

    // The JavaScript and Python modules: compiled by the control plane (timed, with the
    // control plane's peak memory), loaded by the node as native code.
    let mut guests = Vec::new();
    for name in wedge_modules::GUESTS {
        let Some(bytes) = wedge_modules::guest(name)? else {
            continue;
        };
        let uploaded = std::time::Instant::now();
        let (status, body) = api
            .post_bytes(&format!("/api/v1/modules?name={name}&version=1"), bytes)
            .await?;
        ensure!(status == 201, "upload: {status} {body}");
        wait_for("the control plane's precompile", DEADLINE, || async {
            let (_, modules) = api.get("/api/v1/modules").await.ok()?;
            modules.as_array()?.iter().find(|m| {
                m["name"] == *name && m["precompiled"].as_array().is_some_and(|n| !n.is_empty())
            })?;
            Some(())
        })
        .await?;
        let compile = uploaded.elapsed();
        let cp_peak = status_kib(cp.pid(), "VmHWM")?;
        api.deploy(&json!({
            "name": name,
            "module": format!("{name}@1"),
            "nodes": ["small"],
            "subscriptions": [format!("{name}/#")],
            "config": {"threshold": 50, "alert_topic": format!("alerts/{name}")},
        }))
        .await?;
        api.wait_module_state("small", name, "running", DEADLINE)
            .await?;
        tokio::time::sleep(SETTLE).await;
        guests.push((name, compile, cp_peak, rss_kib(node.pid())?));
    }

    let mib = |k: u64| k as f64 / 1024.0;
    println!("| node stage | VmRSS | added |");
    println!("| --- | --- | --- |");
    println!(
        "| enrolled, nothing to run (broker, store, TLS uplink, HTTP) | {:.1} MiB | |",
        mib(empty)
    );
    println!(
        "| + one Rust threshold-alert, idle | {:.1} MiB | {:+.1} MiB |",
        mib(one_module),
        mib(one_module) - mib(empty)
    );
    println!(
        "| after 20,000 QoS 1 readings, idle | {:.1} MiB | {:+.1} MiB |",
        mib(after_burst),
        mib(after_burst) - mib(one_module)
    );
    let mut before = after_burst;
    for (name, _, _, rss) in &guests {
        println!(
            "| + {name} (native code from the control plane) running, idle | {:.1} MiB | {:+.1} MiB |",
            mib(*rss),
            mib(*rss) - mib(before)
        );
        before = *rss;
    }
    if !guests.is_empty() {
        println!(
            "\n| module | compiled by the control plane in (upload to listed) | control plane peak RSS so far |"
        );
        println!("| --- | --- | --- |");
        for (name, compile, cp_peak, _) in &guests {
            println!(
                "| {name} | {:.1} s | {:.0} MiB |",
                compile.as_secs_f64(),
                mib(*cp_peak)
            );
        }
    }
    Ok(())
}
