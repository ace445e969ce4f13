//! The real binaries as child processes, for tests that kill them.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The path of a workspace binary built next to the running test executable.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow::anyhow!("unexpected test executable path {}", exe.display()))?;
    let path = dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is not built; run the tests with `cargo test --workspace`",
        path.display()
    );
    Ok(path)
}

/// Where a Debian program is: on `PATH`, or in `/usr/sbin` or `/usr/bin` (not always on
/// a user's `PATH`).
pub fn program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.exists())
}

/// A free loopback port (for processes that must come back on the same one).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child process killed when dropped.
pub struct Proc {
    child: Child,
    /// A node's HTTP server (`/metrics`, `/readyz`).
    http: Option<SocketAddr>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> anyhow::Result<Self> {
        cmd.env("RUST_LOG", "warn,rumqttd=off")
            .stdin(Stdio::null())
            // Logs (on stdout) show up in the test's output: warnings only.
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        Ok(Self {
            child: cmd.spawn()?,
            http: None,
        })
    }

    /// A shell command line run as written (`bash -c 'exec …'`: the program replaces the
    /// shell, so signals reach it), with extra environment variables.
    pub fn shell(line: &str, env: &[(&str, String)]) -> anyhow::Result<Self> {
        let mut cmd = Command::new("bash");
        cmd.arg("-c").arg(format!("exec {line}"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::spawn(cmd)
    }

    /// `wedge-control` with its API and broker on the given loopback ports.
    pub fn control_plane(
        data_dir: &Path,
        api: SocketAddr,
        mqtt: SocketAddr,
    ) -> anyhow::Result<Self> {
        Self::control_plane_with(data_dir, api, mqtt, None)
    }

    /// `wedge-control` as [`Proc::control_plane`], with a configuration file.
    pub fn control_plane_with(
        data_dir: &Path,
        api: SocketAddr,
        mqtt: SocketAddr,
        config: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let mut cmd = Command::new(binary("wedge-control")?);
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        cmd.arg("--data-dir")
            .arg(data_dir)
            .arg("--api-listen")
            .arg(api.to_string())
            .arg("--mqtt-listen")
            .arg(mqtt.to_string());
        Self::spawn(cmd)
    }

    /// `wedge-node` with its local broker on `local`.
    pub fn node(
        id: &str,
        data_dir: &Path,
        control_plane: SocketAddr,
        local: SocketAddr,
        enrollment: &crate::Enrollment,
    ) -> anyhow::Result<Self> {
        let cmd = Command::new(binary("wedge-node")?);
        Self::node_with(cmd, id, data_dir, control_plane, local, enrollment)
    }

    /// A node started by `cmd`: the binary, or an emulator with the binary as its first
    /// argument (`qemu-aarch64-static wedge-node`).
    pub fn node_with(
        mut cmd: Command,
        id: &str,
        data_dir: &Path,
        control_plane: SocketAddr,
        local: SocketAddr,
        enrollment: &crate::Enrollment,
    ) -> anyhow::Result<Self> {
        // The harness's device account, through a config file as an operator would.
        let user = crate::device_user();
        let config = data_dir.with_extension("toml");
        std::fs::write(
            &config,
            format!(
                "[[devices.users]]\nusername = {:?}\npassword_hash = {:?}\n",
                user.username, user.password_hash
            ),
        )?;
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        cmd.arg("--config")
            .arg(&config)
            .args(["--node-id", id])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--control-plane")
            .arg(format!("mqtts://{control_plane}"))
            .args(["--enroll-token", &enrollment.token])
            .args(["--ca-sha256", &enrollment.ca_sha256])
            .arg("--local-mqtt-listen")
            .arg(local.to_string())
            .arg("--http-listen")
            .arg(http.to_string());
        let mut proc = Self::spawn(cmd)?;
        proc.http = Some(http);
        Ok(proc)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A node's HTTP address (`/metrics`, `/readyz`).
    pub fn http_addr(&self) -> anyhow::Result<SocketAddr> {
        self.http
            .ok_or_else(|| anyhow::anyhow!("not a node, or no HTTP server"))
    }

    /// SIGTERM, then waits (at most `deadline`) for a clean exit.
    pub async fn terminate(mut self, deadline: std::time::Duration) -> anyhow::Result<()> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(sent.success(), "kill -TERM failed");
        let status = crate::wait_for("the process to exit after SIGTERM", deadline, || {
            let exited = self.child.try_wait().ok().flatten();
            async move { exited }
        })
        .await?;
        anyhow::ensure!(status.success(), "exit status {status} after SIGTERM");
        Ok(())
    }

    /// SIGKILL: no goodbye, no flush.
    pub fn kill9(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
