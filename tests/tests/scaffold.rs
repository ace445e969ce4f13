//! The module author's loop, as `wasm-modules/README.md` gives it, in each language:
//! `wedgectl module new NAME --lang …` writes a project, its build command makes a
//! component, and `wedgectl module run` runs it with the node's host against lines from
//! standard input, printing what it publishes.
//!
//! The JavaScript and Python builds need the toolchains `wasm-modules/build-guests` installs
//! (npm's cache, `target/guest-tools/python`); without them this test skips, except in CI.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, ensure};
use wedge_tests::process::binary;

/// Runs `program args` in `dir`; fails with its output unless it succeeds.
fn run(dir: &Path, program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        // The outer cargo's settings would leak into the project's own build.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WRAPPER")
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    ensure!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `wedgectl module run wasm --config …` with two readings; returns its standard output.
fn module_run(dir: &Path, wasm: &str) -> anyhow::Result<String> {
    let mut child = Command::new(binary("wedgectl")?)
        .args(["module", "run", wasm, "--config", r#"{"threshold": 50}"#])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("no stdin")?
        .write_all(b"sensors/a 20\nsensors/a 72\n")?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "module run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

fn check_output(name: &str, stdout: &str) -> anyhow::Result<()> {
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    ensure!(lines.len() == 2, "{name}: {stdout}");
    let publish = &lines[0]["publish"];
    ensure!(publish["topic"] == format!("alerts/{name}"), "{stdout}");
    let alert: serde_json::Value =
        serde_json::from_str(publish["payload"].as_str().unwrap_or_default())?;
    ensure!(alert["value"].as_f64() == Some(72.0), "{stdout}");
    let stats = &lines[1]["stats"];
    ensure!(
        stats["messages"] == 2 && stats["published"] == 1,
        "{stdout}"
    );
    Ok(())
}

fn new_project(root: &Path, name: &str, lang: &str) -> anyhow::Result<std::path::PathBuf> {
    let wedgectl = binary("wedgectl")?;
    let wedgectl = wedgectl.to_str().context("path")?;
    run(root, wedgectl, &["module", "new", name, "--lang", lang])?;
    Ok(root.join(name))
}

#[test]
fn a_new_rust_module_builds_and_runs_locally() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let dir = new_project(root.path(), "too-hot", "rust")?;
    run(
        &dir,
        "cargo",
        &["build", "--release", "--target", "wasm32-wasip2"],
    )?;
    let out = module_run(&dir, "target/wasm32-wasip2/release/too_hot.wasm")?;
    check_output("too-hot", &out)
}

#[test]
fn new_javascript_and_python_modules_build_and_run_locally() -> anyhow::Result<()> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/guest-tools/python/bin/componentize-py");
    let npm = wedge_tests::process::program("npm");
    if !python.exists() || npm.is_none() {
        ensure!(
            std::env::var_os("CI").is_none(),
            "componentize-py or npm missing (wasm-modules/build-guests installs them)"
        );
        eprintln!("skipped: run wasm-modules/build-guests first");
        return Ok(());
    }
    let root = tempfile::tempdir()?;

    let js = new_project(root.path(), "hot-js", "js")?;
    run(
        &js,
        "npm",
        &["install", "--no-audit", "--no-fund", "--loglevel=error"],
    )?;
    run(&js, "npm", &["run", "build"])?;
    check_output("hot-js", &module_run(&js, "hot-js.wasm")?)?;

    let py = new_project(root.path(), "hot-py", "python")?;
    let python = python.to_str().context("path")?;
    run(
        &py,
        python,
        &[
            "-d",
            "wit",
            "-w",
            "module",
            "componentize",
            "app",
            "-o",
            "hot-py.wasm",
        ],
    )?;
    check_output("hot-py", &module_run(&py, "hot-py.wasm")?)
}
