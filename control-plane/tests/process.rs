//! The `wedge-control` binary as an operator runs it: config errors and SIGTERM.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_wedge-control");

#[test]
fn invalid_config_exits_64_with_a_message() {
    let out = Command::new(BIN)
        .args(["--config", "/nonexistent/wedge.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));

    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "api_listne = \"127.0.0.1:1\"").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(file.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("api_listne"), "{stderr}");
}

#[test]
fn serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "--api-listen",
            "127.0.0.1:0",
            "--mqtt-listen",
            "127.0.0.1:0",
        ])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The startup log line names the bound API address.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("control plane started") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("startup line");
    let api = line
        .split("api=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .map(|s| s.trim_matches(|c: char| !c.is_ascii_graphic()).to_string())
        .expect("api address in the log");
    let api = strip_ansi(&api);
    let body = http_get(&api, "/healthz");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");

    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn token_commands_create_list_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(["--data-dir", data])
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["token", "create", "--name", "ci", "--role", "viewer"]);
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(token.starts_with("wdg_"), "{token}");
    let id = token.split('_').nth(1).unwrap().to_string();
    assert!(String::from_utf8_lossy(&out.stderr).contains("shown once"));

    let out = run(&["token", "list"]);
    let list = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        list.contains(&id) && list.contains("viewer") && list.contains("ci"),
        "{list}"
    );
    assert!(!list.contains(&token), "the list never shows a secret");

    let out = run(&["token", "create", "--name", "x", "--role", "admin"]);
    assert_eq!(out.status.code(), Some(2), "clap refuses an unknown role");
    // A token with a lifetime says until when, and so does the list.
    let out = run(&[
        "token", "create", "--name", "ci-job", "--role", "operator", "--ttl", "12h",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("valid until"));
    let list = String::from_utf8_lossy(&run(&["token", "list"]).stdout).to_string();
    assert!(list.contains("ci-job  (until "), "{list}");
    let out = run(&[
        "token", "create", "--name", "y", "--role", "viewer", "--ttl", "soon",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap refuses a lifetime it cannot read"
    );
    assert!(run(&["token", "revoke", &id]).status.success());
    let out = run(&["token", "revoke", &id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no token with id"));
}

#[test]
fn sighup_reloads_what_it_can_and_names_what_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("control.toml");
    let write = |text: &str| std::fs::write(&config, text).unwrap();
    write(
        "api_listen = \"127.0.0.1:0\"\nmqtt_listen = \"127.0.0.1:0\"\nheartbeat_timeout_secs = 15\n",
    );
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--log-format", "json"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let wait_line = |what: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no log line with {what:?}"));
            if line.contains(what) {
                return line;
            }
        }
    };
    wait_line("control plane started");
    let hup = || {
        assert!(
            Command::new("kill")
                .args(["-HUP", &child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
    };

    // A reloadable change and one that needs a restart.
    write(
        "api_listen = \"127.0.0.1:1\"\nmqtt_listen = \"127.0.0.1:0\"\nheartbeat_timeout_secs = 3\n\
         log_level = \"debug\"\n",
    );
    hup();
    let line: serde_json::Value =
        serde_json::from_str(&wait_line("configuration reloaded")).unwrap();
    assert_eq!(line["fields"]["heartbeat_timeout_secs"], 3, "{line}");
    assert_eq!(line["fields"]["log_level"], "debug", "{line}");
    let line: serde_json::Value = serde_json::from_str(&wait_line("only after a restart")).unwrap();
    assert_eq!(line["fields"]["settings"], "api_listen", "{line}");

    // A configuration that does not validate is refused; the process goes on.
    write("heartbeat_timeout_secs = 0\n");
    hup();
    let line = wait_line("configuration refused");
    assert!(
        line.contains("heartbeat_timeout_secs must be at least 1"),
        "{line}"
    );
    assert!(child.try_wait().unwrap().is_none(), "still running");

    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert!(child.wait().unwrap().success());
}
