//! `deploy/` stays valid: the systemd units pass `systemd-analyze verify` against the real
//! binaries, the compose file and the Kubernetes manifests parse and fit together, the
//! ConfigMap's configuration is one the control plane accepts, and the binaries speak
//! systemd's notify protocol that `Type=notify` and `WatchdogSec` rely on.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use serde_yaml_ng::Value;
use wedge_tests::process::{binary, free_port};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn yaml_documents(path: &Path) -> anyhow::Result<Vec<Value>> {
    use serde::Deserialize as _;
    let text = std::fs::read_to_string(path)?;
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(Value::deserialize)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not valid YAML", path.display()))
}

#[test]
fn systemd_units_verify() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for unit in ["wedge-control", "wedge-node"] {
        let text = std::fs::read_to_string(deploy().join(format!("systemd/{unit}.service")))?;
        ensure!(text.contains("Type=notify") && text.contains("WatchdogSec="));
        ensure!(text.contains("Restart=on-failure") && text.contains("NoNewPrivileges=yes"));
        // Verify against the binaries just built, where the unit expects them installed.
        let exe = binary(unit)?;
        let local = text.replace(&format!("/usr/local/bin/{unit}"), &exe.to_string_lossy());
        let path = dir.path().join(format!("{unit}.service"));
        std::fs::write(&path, local)?;
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .context("systemd-analyze is needed (Debian package systemd)")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Unknown or misspelt keys are only warnings: any output is a failure here.
        ensure!(
            out.status.success() && stderr.trim().is_empty(),
            "{unit}.service: {stderr}"
        );
        // And the sandboxing stays tight: systemd's exposure score at most 2.0 of 10
        // (1.6 for the control plane, 1.7 for the node, which may not deny W^X memory).
        let security = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--threshold=20", "--man=no"])
            .arg(&path)
            .output()?;
        ensure!(
            security.status.success(),
            "{unit}.service is exposed: {}",
            String::from_utf8_lossy(&security.stdout)
                .lines()
                .last()
                .unwrap_or_default()
        );
    }
    Ok(())
}

#[test]
fn containers_compose_and_kubernetes_fit_together() -> anyhow::Result<()> {
    let containerfile = std::fs::read_to_string(deploy().join("container/Containerfile"))?;
    let stages: Vec<&str> = containerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .filter_map(|l| l.split(" AS ").nth(1))
        .map(str::trim)
        .collect();
    ensure!(
        stages.contains(&"control-plane") && stages.contains(&"edge-node"),
        "{stages:?}"
    );
    for bin in ["wedge-control", "wedge-node"] {
        ensure!(
            containerfile.contains(&format!("--bin {bin}")),
            "{bin} not built"
        );
        ensure!(
            containerfile.contains(&format!("\"/usr/local/bin/{bin}\"")),
            "{bin} is not an entry point"
        );
    }

    let compose = yaml_documents(&deploy().join("compose.yaml"))?;
    let services = compose[0]["services"]
        .as_mapping()
        .context("compose: services")?;
    for (name, service) in services {
        if service["build"].is_null() {
            ensure!(
                service["image"].is_string(),
                "compose service {name:?}: no build, no image"
            );
            continue;
        }
        let target = service["build"]["target"].as_str().unwrap_or_default();
        ensure!(
            stages.contains(&target),
            "compose service {name:?} builds unknown target {target:?}"
        );
    }
    // Mosquitto's files, mounted from deploy/mosquitto/, exist and are the ones the
    // Mosquitto end-to-end test runs with.
    let mosquitto = &services
        .get("mosquitto")
        .context("compose: a mosquitto service")?["volumes"];
    for file in ["mosquitto.conf", "acl"] {
        ensure!(
            deploy().join("mosquitto").join(file).exists(),
            "deploy/mosquitto/{file}"
        );
        ensure!(
            mosquitto.as_sequence().is_some_and(|v| v.iter().any(|m| m
                .as_str()
                .is_some_and(|m| m.starts_with(&format!("./mosquitto/{file}:"))))),
            "compose mounts deploy/mosquitto/{file}"
        );
    }

    let docs = yaml_documents(&deploy().join("k8s/wedge-control.yaml"))?;
    let kind = |k: &str| docs.iter().find(|d| d["kind"] == k);
    for d in &docs {
        ensure!(
            d["apiVersion"].is_string() && d["metadata"]["name"].is_string(),
            "{d:?}"
        );
    }
    let config_map = kind("ConfigMap").context("a ConfigMap")?;
    let toml_text = config_map["data"]["control.toml"]
        .as_str()
        .context("control.toml in the ConfigMap")?;
    let config: wedge_control_plane::Config =
        toml::from_str(toml_text).context("the ConfigMap's control.toml")?;
    config.validate()?;

    let set = kind("StatefulSet").context("a StatefulSet")?;
    let pod = &set["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    ensure!(container["readinessProbe"]["httpGet"]["path"] == "/readyz");
    ensure!(container["livenessProbe"]["httpGet"]["path"] == "/healthz");
    // The probes speak what the API serves.
    let scheme = if config.api_https() { "HTTPS" } else { "HTTP" };
    for probe in ["readinessProbe", "livenessProbe"] {
        let given = container[probe]["httpGet"]["scheme"]
            .as_str()
            .unwrap_or("HTTP");
        ensure!(
            given == scheme,
            "{probe} uses {given}, the API serves {scheme}"
        );
    }
    let data_mount = container["volumeMounts"]
        .as_sequence()
        .and_then(|m| m.iter().find(|m| m["name"] == "data"))
        .context("the data volume is mounted")?;
    ensure!(data_mount["mountPath"].as_str() == config.data_dir.to_str());
    ensure!(set["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data");
    let ports: Vec<i64> = container["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|p| p["containerPort"].as_i64())
        .collect();
    ensure!(ports.contains(&i64::from(config.api_listen.port())));
    ensure!(ports.contains(&i64::from(config.mqtt_listen.port())));
    let service = kind("Service").context("a Service")?;
    ensure!(service["spec"]["selector"] == set["spec"]["selector"]["matchLabels"]);
    Ok(())
}

#[test]
fn binaries_notify_systemd_when_ready_and_ping_the_watchdog() -> anyhow::Result<()> {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir()?;
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path)?;
    socket.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut child = Command::new(binary("wedge-control")?)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--api-listen", &format!("127.0.0.1:{}", free_port()?)])
        .args(["--mqtt-listen", &format!("127.0.0.1:{}", free_port()?)])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .env("RUST_LOG", "error")
        .spawn()?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    while !(seen.iter().any(|m: &String| m.contains("READY=1"))
        && seen.iter().any(|m| m.contains("WATCHDOG=1")))
    {
        let n = socket
            .recv(&mut buf)
            .context("no READY=1 and WATCHDOG=1 within 60 s")?;
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    // SIGTERM: it says it is stopping, then exits cleanly.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    loop {
        let n = socket.recv(&mut buf).context("no STOPPING=1")?;
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            break;
        }
    }
    ensure!(child.wait()?.success());
    Ok(())
}
