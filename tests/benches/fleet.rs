//! Fleet-scale benchmark: a real `wedge-control` process driven by simulated nodes
//! (`wedge_tests::sim`, the real MQTT protocol, one connection per node).
//!
//! For each fleet size: time to register every node, time until 99 % (and 100 %) of the
//! nodes applied a rollout of a small module, heartbeat ingest rate, and HTTP latency of
//! `GET /api/v1/nodes/{id}` and of the full `GET /api/v1/nodes` with every node registered.
//!
//! Conditions: the control plane is its own process; the simulated nodes and the load are
//! this one. TLS on (every simulated node enrolled with its own certificate) and API tokens
//! on, with the token's rate limit raised for the benchmark (said in the output): the API
//! figures measure answers, not refusals. The benchmark checks its outcome: every node
//! online, every node running each revision, every API answer a 200 whose body holds what
//! was asked (the node list: all `n` nodes); heartbeats dropped anywhere are counted and
//! printed beside the rate.
//!
//! Run: `cargo build --release --bin wedge-control && cargo bench -p wedge-tests --bench fleet`
//! (`WEDGE_BENCH_SIZES=1000,10000` by default). Every simulated node holds one socket in
//! this process and one in the control plane's: 10,000 nodes need `ulimit -n` above
//! 10,100 in both (the control plane inherits this process's limit).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::ensure;
use serde_json::{Value, json};
use wedge_tests::process::{Proc, free_port};
use wedge_tests::sim::{SimFleet, SimOptions};
use wedge_tests::{Api, wait_for};

const DEADLINE: Duration = Duration::from_secs(600);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn fleet_counts(api: &Api) -> Option<Value> {
    let (status, f) = api.get("/api/v1/fleet").await.ok()?;
    (status == 200).then_some(f)
}

async fn run(n: usize) -> anyhow::Result<()> {
    println!("--- {n} simulated nodes ---");
    let dir = tempfile::tempdir()?;
    let api_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let mqtt_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    // The benchmark's requests come back to back: a rate limit for people would answer
    // most of them 429 and the figures would time refusals.
    let config = dir.path().join("control.toml");
    std::fs::write(
        &config,
        "[auth]\nrate_per_sec = 1000000\nrate_burst = 1000000\n",
    )?;
    println!("API tokens on; the benchmark token's rate limit raised to 1,000,000/s");
    let _cp = Proc::control_plane_with(dir.path(), api_addr, mqtt_addr, Some(&config))?;
    let token = wedge_tests::operator_token(dir.path())?;
    let api = Api::with_token(api_addr, Some(token.clone()));
    wait_for("control plane API", DEADLINE, || async {
        api.get("/healthz").await.ok().filter(|(s, _)| *s == 200)
    })
    .await?;

    // 1. Registration.
    let start = Instant::now();
    let options = SimOptions {
        ca_dir: Some(dir.path().to_path_buf()),
        ..SimOptions::default()
    };
    let fleet = SimFleet::start(mqtt_addr, "sim", n, options);
    wait_for("every node online", DEADLINE, || async {
        let f = fleet_counts(&api).await?;
        (f["nodes"]["online"].as_u64()? as usize >= n).then_some(())
    })
    .await?;
    println!(
        "registration: {n} nodes online in {:.2} s",
        start.elapsed().as_secs_f64()
    );

    // 2. Rollout of a small module to every node, all at once.
    let digest: wedge_proto::Digest = api.upload_module("forward", "1").await?.parse()?;
    let start = Instant::now();
    api.deploy(&json!({
        "name": "fw",
        "module": "forward@1",
        "selector": {"labels": {"sim": "yes"}},
        "subscriptions": ["sensors/#"],
    }))
    .await?;
    let accepted = start.elapsed();
    let want = (n as f64 * 0.99).ceil() as usize;
    let mut last_report = Instant::now();
    wait_for("99% applied", DEADLINE, || {
        let running = fleet.running("fw", &digest);
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "  … {running} of {n} applied after {:.0} s",
                start.elapsed().as_secs_f64()
            );
        }
        async move { (running >= want).then_some(()) }
    })
    .await?;
    let p99 = start.elapsed();
    wait_for("100% applied", DEADLINE, || async {
        (fleet.running("fw", &digest) >= n).then_some(())
    })
    .await?;
    let all = start.elapsed();
    wait_for("rollout complete", DEADLINE, || async {
        let (_, d) = api.get("/api/v1/deployments/fw").await.ok()?;
        (d["rollout"]["phase"] == "complete").then_some(())
    })
    .await?;
    let complete = start.elapsed();
    println!(
        "rollout: POST answered in {}, 99% applied in {:.2} s, 100% in {:.2} s, \
         control plane saw every node healthy (phase complete) in {:.2} s",
        ms(accepted),
        p99.as_secs_f64(),
        all.as_secs_f64(),
        complete.as_secs_f64()
    );

    // 2b. A gated rollout of revision 2 over the same fleet: 1 % canary, then batches of
    // 25 %, each once the previous one reports healthy.
    let digest2: wedge_proto::Digest = api.upload_module("threshold-alert", "1").await?.parse()?;
    let start = Instant::now();
    api.deploy(&json!({
        "name": "fw",
        "module": "threshold-alert@1",
        "selector": {"labels": {"sim": "yes"}},
        "subscriptions": ["sensors/#"],
        "strategy": {"canary": "1%", "batch": "25%"},
    }))
    .await?;
    let accepted = start.elapsed();
    wait_for("99% on revision 2", DEADLINE, || async {
        (fleet.running("fw", &digest2) >= want).then_some(())
    })
    .await?;
    let p99 = start.elapsed();
    wait_for("revision 2 complete", DEADLINE, || async {
        let (_, d) = api.get("/api/v1/deployments/fw").await.ok()?;
        (d["rollout"]["revision"] == 2 && d["rollout"]["phase"] == "complete").then_some(())
    })
    .await?;
    println!(
        "gated rollout (canary 1%, batches of 25%): POST answered in {}, 99% applied in \
         {:.2} s, complete in {:.2} s",
        ms(accepted),
        p99.as_secs_f64(),
        start.elapsed().as_secs_f64()
    );

    // 3. Heartbeat ingest: bursts of growing size, every node at once; the control plane
    // works through them (its inbound queue holds 4,096; beyond that it drops, counted). The
    // rate that counts is the largest burst with nothing dropped; drops beyond it are shown.
    let mut sustained = None;
    for per_node in [1usize, 2, 5, 10] {
        // At most 20,000 at once: far more overflows the broker's per-filter log and
        // measures its eviction instead.
        if per_node * n > 20_000 && per_node > 1 {
            break;
        }
        let burst = heartbeat_burst(&api, &fleet, n, per_node).await?;
        println!(
            "heartbeat burst of {} ({per_node} per node): {} processed in {:.2} s = {:.0} \
             heartbeats/s; dropped: {} by the control plane's inbound queue, {} in the \
             simulated clients, {} in the broker",
            burst.sent,
            burst.processed,
            burst.took.as_secs_f64(),
            burst.rate(),
            burst.dropped_inbound,
            burst.dropped_clients,
            burst.dropped_broker,
        );
        if burst.dropped() == 0 {
            sustained = Some(burst);
        } else {
            println!(
                "  beyond that: {:.1} % of the burst dropped",
                100.0 * burst.dropped() as f64 / burst.sent.max(1) as f64
            );
            break;
        }
    }
    match sustained {
        Some(b) => println!(
            "heartbeat ingest with zero drops: {:.0} heartbeats/s (a burst of {})",
            b.rate(),
            b.sent
        ),
        None => {
            println!("heartbeat ingest: even one heartbeat per node at once was dropped in part")
        }
    }

    // 4. API latency with every node registered.
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse()?,
    );
    let http = reqwest::Client::builder().default_headers(auth).build()?;
    let base = format!("http://{api_addr}");
    let mut one = Vec::new();
    for i in 0..1000 {
        let id = &fleet.nodes[(i * 7919) % n].id;
        let t = Instant::now();
        let r = http.get(format!("{base}/api/v1/nodes/{id}")).send().await?;
        let status = r.status();
        let body = r.bytes().await?;
        one.push(t.elapsed());
        ensure!(status == 200, "GET /api/v1/nodes/{id} answered {status}");
        let node: Value = serde_json::from_slice(&body)?;
        ensure!(
            node["id"] == id.as_str(),
            "GET /api/v1/nodes/{id} answered {node}"
        );
    }
    one.sort();
    let mut list = Vec::new();
    let mut size = 0;
    for _ in 0..50 {
        let t = Instant::now();
        let r = http.get(format!("{base}/api/v1/nodes")).send().await?;
        let status = r.status();
        let body = r.bytes().await?;
        list.push(t.elapsed());
        ensure!(status == 200, "GET /api/v1/nodes answered {status}");
        let nodes: Value = serde_json::from_slice(&body)?;
        let listed = nodes.as_array().map_or(0, Vec::len);
        ensure!(
            listed == n,
            "GET /api/v1/nodes listed {listed} of {n} nodes"
        );
        size = body.len();
    }
    list.sort();
    println!("outcome: 1,050 API requests, every one 200 with the node(s) asked for");
    println!(
        "GET /api/v1/nodes/{{id}} (1000 requests): median {}, p99 {}",
        ms(percentile(&one, 0.5)),
        ms(percentile(&one, 0.99))
    );
    println!(
        "GET /api/v1/nodes ({n} nodes, {:.1} MB, 50 requests): median {}, p99 {}",
        size as f64 / 1e6,
        ms(percentile(&list, 0.5)),
        ms(percentile(&list, 0.99))
    );
    fleet.stop().await;
    Ok(())
}

/// What one heartbeat burst did.
struct Burst {
    sent: u64,
    processed: u64,
    took: Duration,
    dropped_inbound: u64,
    dropped_clients: u64,
    dropped_broker: u64,
}

impl Burst {
    fn rate(&self) -> f64 {
        self.processed as f64 / self.took.as_secs_f64()
    }

    fn dropped(&self) -> u64 {
        self.dropped_inbound + self.dropped_clients + self.dropped_broker
    }
}

/// Every simulated node sends `per_node` heartbeats at once; returns when the control plane
/// has worked through them (its count grows no faster than the periodic heartbeats again).
async fn heartbeat_burst(
    api: &Api,
    fleet: &SimFleet,
    n: usize,
    per_node: usize,
) -> anyhow::Result<Burst> {
    let ingest = |f: &Value| {
        (
            f["ingest"]["heartbeats"].as_u64().unwrap_or(0),
            f["ingest"]["dropped_inbound"].as_u64().unwrap_or(0),
        )
    };
    let (before, dropped_before) = ingest(&fleet_counts(api).await.context_free()?);
    let (sent_before, sim_dropped_before) = fleet.heartbeats();
    let start = Instant::now();
    fleet.burst(per_node);
    // Sampled every 20 ms: the burst ends at the last sample that still grew faster than
    // twice the periodic heartbeats (n per 5 s interval), once 300 ms passed without such a
    // sample (ingest pauses between the broker's deliveries); good to ±20 ms.
    let periodic_per_sec = n as f64 / 5.0;
    let mut sample = (Instant::now(), before);
    let mut peaked = false;
    let mut last_busy = start;
    let (count, dropped) = loop {
        ensure!(start.elapsed() < DEADLINE, "heartbeat ingest never settled");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (count, dropped) = ingest(&fleet_counts(api).await.context_free()?);
        let now = Instant::now();
        let rate = (count - sample.1) as f64 / now.duration_since(sample.0).as_secs_f64();
        sample = (now, count);
        if rate > 2.0 * periodic_per_sec {
            peaked = true;
            last_busy = now;
        } else if peaked && now.duration_since(last_busy) > Duration::from_millis(300) {
            break (count, dropped);
        }
    };
    let took = last_busy - start;
    let (sent_after, sim_dropped) = fleet.heartbeats();
    let sent = sent_after - sent_before;
    let processed = count - before;
    let dropped_inbound = dropped - dropped_before;
    Ok(Burst {
        sent,
        processed,
        took,
        dropped_inbound,
        dropped_clients: sim_dropped - sim_dropped_before,
        dropped_broker: sent.saturating_sub(processed + dropped_inbound),
    })
}

/// `Option` → `anyhow::Result` without a context string.
trait ContextFree<T> {
    fn context_free(self) -> anyhow::Result<T>;
}

impl<T> ContextFree<T> for Option<T> {
    fn context_free(self) -> anyhow::Result<T> {
        self.ok_or_else(|| anyhow::anyhow!("the control plane did not answer"))
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let sizes = std::env::var("WEDGE_BENCH_SIZES").unwrap_or_else(|_| "1000,10000".into());
    println!(
        "conditions: wedge-control in its own process; simulated nodes and load in this one; TLS on (a certificate per simulated node); API tokens on"
    );
    for size in sizes.split(',') {
        run(size.trim().parse()?).await?;
    }
    Ok(())
}
