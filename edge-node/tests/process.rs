//! The `wedge-node` binary as an operator runs it: config errors, SIGTERM, and a crash
//! (SIGKILL) that the control plane sees through the node's MQTT last will.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_wedge-node");
/// As long as the end-to-end suite allows: on a loaded 2-core CI machine a node once took
/// over 30 s to appear (cause not found; 0.4 s for the whole test here).
const DEADLINE: Duration = Duration::from_secs(90);

fn spawn_node(cp: &wedge_control_plane::Running, id: &str, dir: &std::path::Path) -> Child {
    let identity = cp.identity().expect("broker TLS is on");
    let (_, token) = identity
        .tokens()
        .create(
            "test",
            1,
            3_600_000,
            None,
            wedge_control_plane::time::now_ms(),
        )
        .unwrap();
    Command::new(BIN)
        .args(["--node-id", id, "--control-plane"])
        .arg(format!("mqtts://{}", cp.mqtt_addr()))
        .args([
            "--enroll-token",
            &token,
            "--ca-sha256",
            &identity.ca_sha256(),
        ])
        .arg("--data-dir")
        .arg(dir)
        .args(["--local-mqtt-listen", "127.0.0.1:0"])
        .args(["--http-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("wedge-node starts")
}

/// A control plane under test: its API address and a token it accepts.
struct Api {
    addr: std::net::SocketAddr,
    token: String,
}

async fn node_json(api: &Api, id: &str) -> Option<serde_json::Value> {
    let resp = reqwest::Client::new()
        .get(format!("http://{}/api/v1/nodes/{id}", api.addr))
        .bearer_auth(&api.token)
        .send()
        .await
        .ok()?;
    if resp.status() != 200 {
        return None;
    }
    resp.json().await.ok()
}

async fn wait_status(api: &Api, id: &str, status: &str) -> serde_json::Value {
    let start = Instant::now();
    let mut last = None;
    loop {
        if let Some(n) = node_json(api, id).await {
            if n["status"] == status {
                return n;
            }
            last = Some(n);
        }
        // The last view says why (degraded with its problems, never registered, …).
        assert!(
            start.elapsed() < DEADLINE,
            "node {id} not {status} within {DEADLINE:?}; last seen as {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn control_plane(dir: &std::path::Path) -> (wedge_control_plane::Running, Api) {
    let role = wedge_control_plane::auth::Role::Viewer;
    let (_, token) = wedge_control_plane::auth::create(dir, "test", role).unwrap();
    let running = wedge_control_plane::App::start(wedge_control_plane::Config {
        data_dir: dir.to_path_buf(),
        api_listen: "127.0.0.1:0".parse().unwrap(),
        mqtt_listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    })
    .await
    .unwrap();
    let api = Api {
        addr: running.api_addr(),
        token,
    };
    (running, api)
}

#[test]
fn invalid_config_exits_64() {
    let out = Command::new(BIN)
        .args(["--node-id", "bad/id"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("node_id"), "{stderr}");

    let out = Command::new(BIN)
        .args(["--node-id", "ok", "--control-plane", "http://x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_fires_the_last_will_and_sigterm_says_goodbye() {
    let dir = tempfile::tempdir().unwrap();
    let (cp, api) = control_plane(&dir.path().join("cp")).await;

    let mut node = spawn_node(&cp, "crashy", &dir.path().join("n1"));
    wait_status(&api, "crashy", "online").await;
    node.kill().unwrap(); // SIGKILL: no goodbye, the broker publishes the will
    node.wait().unwrap();
    let n = wait_status(&api, "crashy", "offline").await;
    assert_eq!(n["reason"], "connection lost (last will)");

    let mut node = spawn_node(&cp, "polite", &dir.path().join("n2"));
    wait_status(&api, "polite", "online").await;
    let killed = Command::new("kill")
        .args(["-TERM", &node.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = node.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < DEADLINE, "wedge-node ignored SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
    let n = wait_status(&api, "polite", "offline").await;
    assert_eq!(n["reason"], "shut down");
    cp.stop().await;
}

#[test]
fn hash_password_prints_an_argon2id_hash() {
    use std::io::Write as _;
    let run = |input: &str| {
        let mut child = Command::new(BIN)
            .arg("hash-password")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run("s3cret\n");
    assert!(out.status.success(), "{out:?}");
    let hash = String::from_utf8_lossy(&out.stdout);
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("s3cret"));
    assert_eq!(run("\n").status.code(), Some(64));
}
