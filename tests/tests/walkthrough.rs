//! The README's "Running the binaries" walkthrough, followed as written: its shell block is
//! read from README.md and each command run with the real binaries on loopback, so a change
//! to the binaries that breaks the walkthrough (or a README edit that breaks it) fails here.
//!
//! What the test changes, and only this: `target/release/` is the directory of the binaries
//! `cargo test` built, `/var/lib/` a temporary directory, the broker's port 8883 a free one,
//! and the listen addresses the walkthrough leaves at their defaults (fixed ports) come from
//! their documented environment variables with free ports. The token and CA hash the node is
//! started with are the ones `wedgectl enroll-token create` printed.

use std::time::Duration;

use serde_json::Value;
use wedge_tests::process::{Proc, binary, free_port};
use wedge_tests::wait_for;

const README: &str = include_str!("../../README.md");
const DEADLINE: Duration = Duration::from_secs(90);

/// The commands of the walkthrough's shell block: continuation lines joined, comments and
/// blank lines dropped.
fn commands() -> anyhow::Result<Vec<String>> {
    let section = README
        .split_once("\n## Running the binaries\n")
        .ok_or_else(|| anyhow::anyhow!("README.md has no 'Running the binaries' section"))?
        .1;
    let block = section
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .ok_or_else(|| anyhow::anyhow!("the section has no sh block"))?
        .0;
    let mut out = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    Ok(out)
}

/// `text` with `from` replaced; fails when `from` is not in it (the README changed).
fn replace(text: &str, from: &str, to: &str) -> anyhow::Result<String> {
    anyhow::ensure!(text.contains(from), "expected {from:?} in {text:?}");
    Ok(text.replace(from, to))
}

/// The value after `label` on a line of `output`.
fn field(output: &str, label: &str) -> anyhow::Result<String> {
    output
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| anyhow::anyhow!("no {label:?} in the output:\n{output}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_the_binaries_walkthrough_works_as_written() -> anyhow::Result<()> {
    let commands = commands()?;
    let [build, control, token, enroll, node] = commands.as_slice() else {
        anyhow::bail!(
            "the walkthrough has {} commands: {commands:#?}",
            commands.len()
        );
    };
    anyhow::ensure!(build.starts_with("cargo build --release"), "{build}");

    let bin = binary("wedge-control")?;
    let bin_dir = bin
        .parent()
        .ok_or_else(|| anyhow::anyhow!("no binary directory"))?
        .display()
        .to_string();
    let var_lib = tempfile::tempdir()?;
    let var_lib = var_lib.path().display().to_string();
    let local = |line: &str| -> anyhow::Result<String> {
        Ok(replace(line, "target/release/", &format!("{bin_dir}/"))?
            .replace("/var/lib/", &format!("{var_lib}/")))
    };
    let (api, mqtt) = (free_port()?, free_port()?);
    let env = vec![
        ("WEDGE_API_LISTEN", format!("127.0.0.1:{api}")),
        ("WEDGE_MQTT_LISTEN", format!("127.0.0.1:{mqtt}")),
        ("WEDGE_API", format!("http://127.0.0.1:{api}")),
        (
            "WEDGE_LOCAL_MQTT_LISTEN",
            format!("127.0.0.1:{}", free_port()?),
        ),
        ("WEDGE_HTTP_LISTEN", format!("127.0.0.1:{}", free_port()?)),
    ];

    // 1. The control plane.
    let control = Proc::shell(&local(control)?, &env)?;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{api}");
    wait_for("the control plane's API", DEADLINE, || {
        let request = http.get(format!("{base}/readyz")).send();
        async move { request.await.ok().filter(|r| r.status().is_success()) }
    })
    .await?;

    // 2. An API token, then a bootstrap token (one shell: the export carries).
    let script = format!(
        "set -e; {}; {}; echo \"API token: $WEDGE_TOKEN\"",
        local(token)?,
        local(enroll)?
    );
    let mut shell = std::process::Command::new("bash");
    shell
        .arg("-c")
        .arg(&script)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let output = tokio::time::timeout(
        DEADLINE,
        tokio::task::spawn_blocking(move || shell.output()),
    )
    .await
    .map_err(|_| anyhow::anyhow!("step 2 did not finish within {DEADLINE:?}"))???;
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(
        output.status.success(),
        "{script}\nfailed: {}\n{printed}",
        String::from_utf8_lossy(&output.stderr)
    );
    let api_token = field(&printed, "API token:")?;
    let enroll_token = field(&printed, "Token:")?;
    let ca_sha256 = field(&printed, "CA SHA-256:")?;

    // 3. The node, with what step 2 printed.
    let line = replace(&local(node)?, "wde_…", &enroll_token)?;
    let line = replace(&line, "3b1f…", &ca_sha256)?;
    let line = replace(&line, ":8883", &format!(":{mqtt}"))?;
    let node = Proc::shell(&line, &env)?;
    let node_view = || {
        let request = http
            .get(format!("{base}/api/v1/nodes/gateway-7"))
            .bearer_auth(&api_token)
            .send();
        async move {
            let response = request.await.ok()?;
            response.status().is_success().then_some(())?;
            response.json::<Value>().await.ok()
        }
    };
    let online = wait_for("gateway-7 online with its labels", DEADLINE, || {
        let view = node_view();
        async move { view.await.filter(|v| v["status"] == "online") }
    })
    .await?;
    assert_eq!(online["labels"]["site"], "berlin", "{online}");
    assert_eq!(online["labels"]["role"], "gateway", "{online}");

    // Both stop cleanly on SIGTERM; the node says goodbye first.
    node.terminate(DEADLINE).await?;
    let offline = wait_for("gateway-7 reported offline", DEADLINE, || {
        let view = node_view();
        async move { view.await.filter(|v| v["status"] == "offline") }
    })
    .await?;
    assert!(offline["reason"].is_string(), "{offline}");
    control.terminate(DEADLINE).await?;
    Ok(())
}
