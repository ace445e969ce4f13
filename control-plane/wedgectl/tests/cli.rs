//! `wedgectl` against a real control plane and real edge nodes: what an operator types and
//! what they read back, including the errors.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use wedge_tests::{ControlPlane, Device, Node, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_wedgectl");
const DEADLINE: Duration = Duration::from_secs(60);

/// The control plane under test: its API and the operator token the harness made.
struct Target {
    api: String,
    token: String,
}

impl Target {
    fn of(cp: &ControlPlane) -> anyhow::Result<Self> {
        Ok(Self {
            api: cp.api.base.clone(),
            token: cp.token.clone().context("auth is on")?,
        })
    }
}

/// Runs `wedgectl --api <api> args…` off the async runtime, with the token in the
/// environment (as a user would export it). A run longer than [`DEADLINE`] (a `--watch`
/// that never ends) is killed and fails the test instead of hanging it.
async fn ctl(t: &Target, args: &[&str]) -> anyhow::Result<Output> {
    let mut cmd = Command::new(BIN);
    cmd.arg("--api").arg(&t.api).args(args);
    cmd.env("WEDGE_TOKEN", &t.token);
    // A developer's own config must not leak into the test.
    cmd.env("XDG_CONFIG_HOME", "/nonexistent");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn()?;
    let pid = child.id().to_string();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output());
    match tokio::time::timeout(DEADLINE, output).await {
        Ok(output) => Ok(output??),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            bail!("wedgectl {args:?} was still running after {DEADLINE:?}")
        }
    }
}

/// A child process killed when dropped (a failed test leaves no `--follow` behind).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and expects success; returns stdout.
async fn ok(t: &Target, args: &[&str]) -> anyhow::Result<String> {
    let o = ctl(t, args).await?;
    ensure!(
        o.status.success(),
        "wedgectl {args:?} failed ({}): {}{}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    Ok(stdout(&o))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_lists_pushes_deploys_and_follows_a_rollout() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let api = Target::of(&cp)?;
    let mut berlin = Node::start(&cp, "berlin-1", &[("site", "berlin")]).await?;
    let mut paris = Node::start(&cp, "paris-1", &[("site", "paris")]).await?;
    for id in ["berlin-1", "paris-1"] {
        cp.api.wait_status(id, "online", DEADLINE).await?;
    }

    // nodes, with filters, as a table and as JSON
    let table = ok(&api, &["nodes"]).await?;
    let header = table.lines().next().unwrap_or_default();
    ensure!(
        header.contains("NODE") && header.contains("STATUS"),
        "{table}"
    );
    ensure!(
        table.contains("berlin-1") && table.contains("paris-1") && table.contains("site=paris"),
        "{table}"
    );
    let json: Value = serde_json::from_str(
        &ok(
            &api,
            &["nodes", "--label", "site=paris", "--output", "json"],
        )
        .await?,
    )?;
    let ids: Vec<&str> = json
        .as_array()
        .context("an array")?
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    ensure!(ids == ["paris-1"], "{json}");
    ensure!(ok(&api, &["nodes", "--status", "offline"]).await? == "no nodes match\n");
    let node = ok(&api, &["node", "berlin-1"]).await?;
    ensure!(
        node.contains("Status:      online") && node.contains("site=berlin"),
        "{node}"
    );

    // modules push, twice: the second time nothing changes
    let wasm = wedge_modules::path("window-stats").context("window-stats is built")?;
    let wasm = wasm.to_str().context("utf-8 path")?;
    let pushed = ok(
        &api,
        &["modules", "push", wasm, "--name", "stats", "--version", "1"],
    )
    .await?;
    ensure!(
        pushed.starts_with("module stats@1 pushed: sha256:"),
        "{pushed}"
    );
    let again = ok(
        &api,
        &["modules", "push", wasm, "--name", "stats", "--version", "1"],
    )
    .await?;
    ensure!(again.contains("unchanged"), "{again}");
    ensure!(
        ok(&api, &["modules", "list"]).await?.contains("stats"),
        "list"
    );

    // A publisher key, and a signed push.
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("publisher.key");
    let key = key.to_str().context("utf-8 path")?;
    let public = ok(&api, &["keys", "generate", "--out", key]).await?;
    ensure!(public.starts_with("ed25519:"), "{public}");
    ensure!(ok(&api, &["keys", "public", "--key", key]).await? == public);
    let o = ctl(&api, &["keys", "generate", "--out", key]).await?;
    ensure!(
        o.status.code() == Some(2),
        "a key is never overwritten: {o:?}"
    );
    let signed = ok(
        &api,
        &[
            "modules",
            "push",
            wasm,
            "--name",
            "stats",
            "--version",
            "2",
            "--sign-key",
            key,
        ],
    )
    .await?;
    ensure!(
        signed.contains(&format!("signed by {}", public.trim())),
        "{signed}"
    );

    // deploy -f, idempotent like kubectl apply
    let yaml = dir.path().join("stats.yaml");
    std::fs::write(
        &yaml,
        "name: stats\nmodule: stats@1\nselector: {labels: {site: berlin}}\n\
         subscriptions: [\"sensors/#\"]\ntick_ms: 200\nconfig: {stream: rooms}\n",
    )?;
    let yaml = yaml.to_str().context("utf-8 path")?;
    ensure!(ok(&api, &["deploy", "-f", yaml]).await? == "deployment/stats revision 1 created\n");
    ensure!(ok(&api, &["deploy", "-f", yaml]).await? == "deployment/stats revision 1 unchanged\n");
    let watched = ok(&api, &["rollout", "status", "stats", "--watch"]).await?;
    ensure!(
        watched.contains("stats revision 1: complete · 1/1 healthy"),
        "{watched}"
    );

    // A second revision from TOML, with a canary; the watch follows it to the end.
    let toml = dir.path().join("stats.toml");
    std::fs::write(
        &toml,
        "name = \"stats\"\nmodule = \"stats@1\"\nsubscriptions = [\"sensors/#\"]\ntick_ms = 200\n\
         [selector.labels]\n\n[config]\nstream = \"rooms\"\n\
         [strategy]\ncanary = 1\nbatch = 1\nbake_seconds = 1\n",
    )?;
    let toml = toml.to_str().context("utf-8 path")?;
    ensure!(ok(&api, &["deploy", "-f", toml]).await? == "deployment/stats revision 2 created\n");
    let watched = ok(&api, &["rollout", "status", "stats", "--watch"]).await?;
    ensure!(
        watched.contains("stats revision 2: complete · 2/2 healthy"),
        "{watched}"
    );
    let status: Value =
        serde_json::from_str(&ok(&api, &["rollout", "status", "stats", "-o", "json"]).await?)?;
    ensure!(
        status["phase"] == "complete" && status["revision"] == 2,
        "{status}"
    );

    // Steering a finished rollout is refused with the server's reason.
    let o = ctl(&api, &["rollout", "pause", "stats"]).await?;
    ensure!(o.status.code() == Some(1), "{o:?}");
    ensure!(stderr(&o).contains("HTTP 409, conflict"), "{}", stderr(&o));

    // Telemetry: a sensor on berlin-1 feeds the window statistics.
    let device = Device::connect(berlin.local_mqtt_addr, "sensor", &[]).await?;
    wait_for("telemetry from berlin-1", DEADLINE, || async {
        device
            .publish("sensors/room-1/temperature", b"21.5")
            .await
            .ok()?;
        let t = cp.api.telemetry("berlin-1", Some("rooms")).await.ok()?;
        (t.len() >= 2).then_some(())
    })
    .await?;
    let lines = ok(
        &api,
        &["telemetry", "berlin-1", "--stream", "rooms", "--tail", "2"],
    )
    .await?;
    ensure!(
        lines.lines().count() == 2 && lines.contains("rooms") && lines.contains("\"mean\":21.5"),
        "{lines}"
    );

    // --follow prints new records as they come, until stopped.
    let mut follow = Command::new(BIN)
        .env("WEDGE_TOKEN", &api.token)
        .args([
            "--api",
            &api.api,
            "telemetry",
            "berlin-1",
            "--follow",
            "--tail",
            "1",
        ])
        .args(["--output", "json"])
        .stdout(Stdio::piped())
        .spawn()?;
    let out = follow.stdout.take().context("stdout")?;
    let follow = KillOnDrop(follow);
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let mut seqs = Vec::new();
    while seqs.len() < 3 {
        device.publish("sensors/room-1/temperature", b"22").await?;
        let Ok(Some(line)) = tokio::time::timeout(DEADLINE, rx.recv()).await else {
            bail!("wedgectl telemetry --follow printed nothing new");
        };
        let r: Value = serde_json::from_str(&line)?;
        seqs.push(r["seq"].as_u64().context("seq")?);
    }
    ensure!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    drop(follow);

    let events = ok(&api, &["events", "berlin-1"]).await?;
    ensure!(
        events.contains("node_online") && events.contains("module_started"),
        "{events}"
    );

    // logs: what a module wrote with host::log, delivered through the telemetry buffer.
    cp.api.upload_module("threshold-alert", "1").await?;
    cp.api
        .deploy(
            &serde_json::json!({"name": "alert", "module": "threshold-alert@1",
            "nodes": ["berlin-1"], "subscriptions": ["alarms/#"],
            "config": {"threshold": 1, "alert_topic": "out/alert"}}),
        )
        .await?;
    let logs = wedge_tests::wait_for(
        "wedgectl logs to show the module's line",
        DEADLINE,
        || async {
            let logs = ok(&api, &["logs", "berlin-1"]).await;
            let logs = logs.ok()?;
            logs.contains("alert  [info] threshold-alert ready")
                .then_some(logs)
        },
    )
    .await?;
    ensure!(!logs.contains("stats "), "only log lines: {logs}");

    // Enrollment tokens and revocation.
    let created = ok(
        &api,
        &[
            "enroll-token",
            "create",
            "--name",
            "line-9",
            "--uses",
            "3",
            "--ttl",
            "2h",
        ],
    )
    .await?;
    ensure!(
        created.contains("wde_") && created.contains("--ca-sha256"),
        "{created}"
    );
    let listed = ok(&api, &["enroll-token", "list"]).await?;
    ensure!(
        listed.contains("line-9") && !listed.contains("wde_"),
        "{listed}"
    );
    let tokens: serde_json::Value =
        serde_json::from_str(&ok(&api, &["--output", "json", "enroll-token", "list"]).await?)?;
    let id = tokens
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "line-9"))
        .and_then(|t| t["id"].as_str())
        .context("token listed")?
        .to_string();
    ensure!(
        ok(&api, &["enroll-token", "delete", &id])
            .await?
            .contains("deleted")
    );
    let revoked = ok(&api, &["revoke", "paris-1"]).await?;
    ensure!(revoked.contains("revoked"), "{revoked}");
    ensure!(
        ok(&api, &["readmit", "paris-1"])
            .await?
            .contains("enroll again")
    );
    let o = ctl(&api, &["readmit", "paris-1"]).await?;
    ensure!(
        o.status.code() == Some(1) && stderr(&o).contains("not revoked"),
        "{o:?}"
    );

    berlin.stop().await;
    paris.stop().await;
    cp.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_what_is_wrong() -> anyhow::Result<()> {
    // Nothing listens on a port just released.
    let free = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let nowhere = Target {
        api: format!("http://{free}"),
        token: String::new(),
    };
    let o = ctl(&nowhere, &["nodes"]).await?;
    ensure!(o.status.code() == Some(3), "{o:?}");
    ensure!(
        stderr(&o).contains(&format!("cannot reach the control plane at http://{free}")),
        "{}",
        stderr(&o)
    );

    let cp = ControlPlane::start().await?;
    let api = Target::of(&cp)?;
    let o = ctl(&api, &["node", "ghost"]).await?;
    ensure!(o.status.code() == Some(1), "{o:?}");
    ensure!(
        stderr(&o).trim() == "wedgectl: no node with id ghost (HTTP 404, not_found)",
        "{}",
        stderr(&o)
    );
    let o = ctl(&api, &["nodes", "--label", "nolabel"]).await?;
    ensure!(o.status.code() == Some(2), "{o:?}");
    ensure!(stderr(&o).contains("--label takes k=v"), "{}", stderr(&o));
    let o = ctl(&api, &["nodes", "--status", "sleepy"]).await?;
    ensure!(o.status.code() == Some(2), "{o:?}");

    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "module: m\n")?;
    let o = ctl(&api, &["deploy", "-f", bad.to_str().context("path")?]).await?;
    ensure!(o.status.code() == Some(2), "{o:?}");
    ensure!(stderr(&o).contains("no \"name\""), "{}", stderr(&o));
    let unknown = dir.path().join("unknown.yaml");
    std::fs::write(&unknown, "name: x\nmodule: nope@1\nnodes: [a]\n")?;
    let o = ctl(&api, &["deploy", "-f", unknown.to_str().context("path")?]).await?;
    ensure!(o.status.code() == Some(1), "{o:?}");
    ensure!(
        stderr(&o).contains("deployment/x: no module nope@1; upload it first (HTTP 400"),
        "{}",
        stderr(&o)
    );

    // The API URL from a config file, and from the environment.
    let config = dir.path().join("wedgectl.toml");
    std::fs::write(
        &config,
        format!("api = \"{}\"\ntoken = \"{}\"\n", api.api, api.token),
    )?;
    let o = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["nodes", "-o", "json"])
        .env_remove("WEDGE_API")
        .env_remove("WEDGE_TOKEN")
        .output()?;
    ensure!(o.status.success() && stdout(&o).trim() == "[]", "{o:?}");
    let o = Command::new(BIN)
        .args(["nodes", "-o", "json"])
        .env("WEDGE_API", &api.api)
        .env("WEDGE_TOKEN", &api.token)
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .output()?;
    ensure!(o.status.success() && stdout(&o).trim() == "[]", "{o:?}");

    // Without the token the server's refusal is shown as it is.
    let o = Command::new(BIN)
        .args(["--api", &api.api, "nodes"])
        .env_remove("WEDGE_TOKEN")
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .output()?;
    ensure!(o.status.code() == Some(1), "{o:?}");
    ensure!(
        stderr(&o).contains("this API needs a token") && stderr(&o).contains("HTTP 401"),
        "{}",
        stderr(&o)
    );
    cp.stop().await;
    Ok(())
}

/// A control plane listening on a network address serves its API over HTTPS by default,
/// with a certificate from its own CA; `wedgectl` talks to it only when told whom to trust
/// (the CA's hash, pinned like nodes pin it, or the CA file) and refuses another CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_on_a_network_address_is_https_and_wedgectl_pins_its_ca() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = wedge_control_plane::Config {
        data_dir: dir.path().to_path_buf(),
        // Every address: `api_tls = auto` must not serve plain HTTP here.
        api_listen: "0.0.0.0:0".parse()?,
        mqtt_listen: "127.0.0.1:0".parse()?,
        ..Default::default()
    };
    let cp = ControlPlane::start_with(config, dir).await?;
    ensure!(cp.api.base.starts_with("https://"), "{}", cp.api.base);
    let port = cp
        .api
        .base
        .rsplit(':')
        .next()
        .context("a port")?
        .to_string();
    let (status, _) = cp.api.get("/api/v1/nodes").await?;
    ensure!(status == 200, "the harness reaches it over HTTPS");

    // Plain HTTP to that port gets no API answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    ensure!(
        plain.as_ref().map_or(true, |r| !r.status().is_success()),
        "plain HTTP was answered: {plain:?}"
    );

    let ca = wedge_pki::Ca::load_or_create(cp.data_dir())?;
    let t = Target {
        api: format!("https://127.0.0.1:{port}"),
        token: cp.token.clone().context("auth is on")?,
    };
    // No trust given: a usage error that says what to give.
    let out = ctl(&t, &["nodes"]).await?;
    ensure!(out.status.code() == Some(2), "{}", stderr(&out));
    ensure!(stderr(&out).contains("--ca-sha256"), "{}", stderr(&out));
    // The CA pinned by hash, or trusted from its file.
    let pin = ca.fingerprint();
    ok(&t, &["--ca-sha256", &pin, "nodes"]).await?;
    let ca_file = cp.data_dir().join("ca.crt");
    ensure!(
        ca_file.is_file(),
        "the CA certificate is ca.crt in the data dir"
    );
    ok(
        &t,
        &["--ca-file", ca_file.to_str().context("utf-8")?, "nodes"],
    )
    .await?;
    // Another CA (a man in the middle's): refused, the token never sent.
    let stranger = tempfile::tempdir()?;
    let other = wedge_pki::Ca::load_or_create(stranger.path())?.fingerprint();
    let out = ctl(&t, &["--ca-sha256", &other, "nodes"]).await?;
    ensure!(out.status.code() == Some(3), "{}", stderr(&out));
    let other_file = stranger.path().join("ca.crt");
    let out = ctl(
        &t,
        &["--ca-file", other_file.to_str().context("utf-8")?, "nodes"],
    )
    .await?;
    ensure!(out.status.code() == Some(3), "{}", stderr(&out));
    Ok(())
}
