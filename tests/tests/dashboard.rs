//! The dashboard in a real browser: the demo (a control plane, three real edge nodes with
//! sensors, two deployments and a canary rollout) runs in this process, and headless
//! Chromium driven by playwright-core (`tests/browser/dashboard.mjs`) loads the dashboard,
//! filters and searches the nodes, clicks into a node and checks its modules, chart and
//! events, then opens the rollout; and a control plane with API tokens on, where the page
//! asks for a token. Screenshots land in `target/ci-artifacts/`.
//!
//! Needs Node.js, `npm ci --prefix tests/browser` and Debian's `chromium` (or `$CHROMIUM`);
//! `.ci/run` installs them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use wedge_demo::Event;
use wedge_tests::{Api, wait_for};

const DEADLINE: Duration = Duration::from_secs(90);

/// Runs `tests/browser/<script>` with `args` and the screenshot directory; fails with the
/// script's output unless it passes.
async fn browser_check(script: &str, args: Vec<String>) -> anyhow::Result<()> {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if !here.join("browser/node_modules/playwright-core").is_dir() {
        bail!(
            "playwright-core is not installed: run `npm ci --prefix tests/browser` \
             (and `apt-get install chromium`), as .ci/run does"
        );
    }
    let script = here.join("browser").join(script);
    let shots = here.join("../target/ci-artifacts");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(&script)
            .args(&args)
            .arg(&shots)
            .output()
    })
    .await?
    .context("cannot run node (Node.js 20 or newer is needed)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    if !out.status.success() {
        bail!(
            "the browser check failed ({}):\n{stdout}\n{stderr}",
            out.status
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_live_fleet_in_a_browser() -> anyhow::Result<()> {
    let (events, mut seen) = tokio::sync::mpsc::channel(64);
    let stop = tokio_util::sync::CancellationToken::new();
    let demo = tokio::spawn(wedge_demo::run(
        wedge_demo::Options::ephemeral(Duration::from_millis(100), Duration::from_secs(2)),
        events,
        stop.clone(),
    ));
    let base = loop {
        match tokio::time::timeout(DEADLINE, seen.recv()).await? {
            Some(Event::Ready { api }) => break api,
            Some(Event::Alert { .. }) => {}
            None => bail!("the demo stopped: {:?}", demo.await),
        }
    };
    tokio::spawn(async move { while seen.recv().await.is_some() {} });

    // Something to chart: two windows of room statistics stored from berlin-1.
    let api = Api::new(base.trim_start_matches("http://").parse()?);
    wait_for("two room-stats records from berlin-1", DEADLINE, || async {
        let records = api.telemetry("berlin-1", Some("room-stats")).await.ok()?;
        (records.len() >= 2).then_some(())
    })
    .await?;

    let checked = browser_check("dashboard.mjs", vec![base]).await;
    stop.cancel();
    demo.await??;
    checked
}

/// With API tokens on (the default), the page asks for a token, refuses a wrong one, and
/// shows the fleet with the right one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_asks_for_a_token_when_auth_is_on() -> anyhow::Result<()> {
    let cp = wedge_tests::ControlPlane::start().await?;
    let mut node = wedge_tests::Node::start(&cp, "guarded-1", &[("site", "x")]).await?;
    cp.api.wait_status("guarded-1", "online", DEADLINE).await?;
    let token = cp.token.clone().context("auth is on by default")?;
    let checked = browser_check("dashboard-auth.mjs", vec![cp.api.base.clone(), token]).await;
    node.stop().await;
    cp.stop().await;
    checked
}
