//! Debian's Mosquitto as a third-party broker for tests: on a free loopback port, in a
//! temporary directory, killed when dropped. `.ci/run` installs it (`mosquitto`,
//! `mosquitto-clients`).

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{free_port, program};

/// Whether the Mosquitto broker and clients are installed; outside CI a test may skip
/// without them, in CI (`CI` set) their absence is an error.
pub fn available() -> anyhow::Result<bool> {
    let present = ["mosquitto", "mosquitto_pub", "mosquitto_sub"]
        .iter()
        .all(|p| program(p).is_some());
    anyhow::ensure!(
        present || std::env::var_os("CI").is_none(),
        "mosquitto and mosquitto-clients are not installed (.ci/run installs them)"
    );
    Ok(present)
}

/// A running Mosquitto.
pub struct Mosquitto {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// The control plane's user name in [`Mosquitto::start`]'s password file.
    pub const CONTROL_USER: &'static str = "wedge-control";
    /// Its password.
    pub const CONTROL_PASSWORD: &'static str = "wedge-test-control";

    /// Starts one with [`Self::CONTROL_USER`] only; see [`Self::start_with_nodes`].
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with_nodes(&[])
    }

    /// Starts one on a free loopback port with the settings of
    /// `deploy/mosquitto/mosquitto.conf` (all but where it listens and keeps its files), the
    /// topic rules of `deploy/mosquitto/acl`, and [`Self::CONTROL_USER`] and `nodes` (node
    /// id, password) in its password file; returns once it accepts connections.
    pub fn start_with_nodes(nodes: &[(&str, &str)]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/mosquitto");
        let passwords = dir.path().join("passwords");
        let passwd =
            program("mosquitto_passwd").ok_or_else(|| anyhow::anyhow!("no mosquitto_passwd"))?;
        let logins = std::iter::once((Self::CONTROL_USER, Self::CONTROL_PASSWORD));
        for (i, (user, password)) in logins.chain(nodes.iter().copied()).enumerate() {
            let mut cmd = Command::new(&passwd);
            if i == 0 {
                cmd.arg("-c");
            }
            let made = cmd
                .arg("-b")
                .arg(&passwords)
                .args([user, password])
                .status()?;
            anyhow::ensure!(made.success(), "mosquitto_passwd: {made}");
        }
        // The shipped settings, with this run's listener and files.
        let local = [
            "listener",
            "password_file",
            "acl_file",
            "persistence",
            "log_dest",
        ];
        let settings: String = std::fs::read_to_string(shipped.join("mosquitto.conf"))?
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter(|l| !local.iter().any(|k| l.starts_with(k)))
            .map(|l| format!("{l}\n"))
            .collect();
        let config = format!(
            "listener {} 127.0.0.1\n{settings}password_file {}\nacl_file {}\n\
             persistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n",
            addr.port(),
            passwords.display(),
            shipped.join("acl").display(),
        );
        Self::spawn(dir, addr, &config)
    }

    /// Starts a plain one on a free loopback port: anyone may connect, to any topic (the
    /// broker of a do-it-yourself stack, for benchmarks).
    pub fn start_open() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let config = format!(
            "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             log_dest stderr\nlog_type error\nlog_type warning\n",
            addr.port()
        );
        Self::spawn(dir, addr, &config)
    }

    fn spawn(dir: tempfile::TempDir, addr: SocketAddr, config_text: &str) -> anyhow::Result<Self> {
        let config = dir.path().join("mosquitto.conf");
        std::fs::write(&config, config_text)?;
        let program = program("mosquitto").ok_or_else(|| anyhow::anyhow!("no mosquitto"))?;
        let child = Command::new(program)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .spawn()?;
        let mut me = Self {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = me.child.try_wait()? {
                anyhow::bail!("mosquitto exited at start: {status}");
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "mosquitto not listening on {addr}"
            );
            std::thread::park_timeout(Duration::from_millis(20));
        }
        Ok(me)
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }

    /// Stops it (SIGKILL: a broker that vanishes).
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
