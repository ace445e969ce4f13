//! Builds every guest module in `wasm-modules/` for `wasm32-wasip2` with the workspace's
//! `wasm-module` profile, so `cargo build`/`cargo test` always run the modules built from the
//! source next to them (no prebuilt `.wasm` is checked in).
//!
//! The nested cargo uses its own target directory: the outer build holds the lock on the
//! main one.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// Guest crates to build; each becomes `<name with _>.wasm`.
const MODULES: &[&str] = &[
    "threshold-alert",
    "forward",
    "window-stats",
    "zscore-anomaly",
    "sensor-decoder",
    "hostile-loop",
    "hostile-memory",
    "hostile-trap-init",
    "hostile-trap-message",
    "hostile-flood",
    "hostile-forbidden-topic",
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let modules_dir = manifest_dir
        .parent()
        .expect("catalog lives in wasm-modules/")
        .to_path_buf();
    let workspace = modules_dir
        .parent()
        .expect("wasm-modules/ lives in the workspace");
    let target_dir = env::var_os("WEDGE_WASM_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target").join("wasm-modules"));

    println!("cargo:rerun-if-env-changed=WEDGE_WASM_TARGET_DIR");
    // The guests' sources, their shared helpers, their interface and their locked deps.
    for path in [
        modules_dir.join("wit"),
        modules_dir.join("sdk").join("src"),
        modules_dir.join("sdk").join("Cargo.toml"),
        workspace.join("Cargo.lock"),
    ] {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    for m in MODULES {
        println!(
            "cargo:rerun-if-changed={}",
            modules_dir.join(m).join("src").display()
        );
        println!(
            "cargo:rerun-if-changed={}",
            modules_dir.join(m).join("Cargo.toml").display()
        );
    }

    ensure_target_installed();

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args([
            "build",
            "--profile",
            "wasm-module",
            "--target",
            "wasm32-wasip2",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    for m in MODULES {
        cmd.args(["-p", m]);
    }
    // Do not leak the outer build's settings (clippy's wrapper, host rustflags, coverage
    // instrumentation) into the guest build.
    for var in [
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("failed to run cargo for the guest modules");
    if !status.success() {
        panic!(
            "building the guest modules failed; is the target installed? \
             run `rustup target add wasm32-wasip2`"
        );
    }

    let out_dir = target_dir.join("wasm32-wasip2").join("wasm-module");
    let mut index = String::new();
    for m in MODULES {
        let file = out_dir.join(format!("{}.wasm", m.replace('-', "_")));
        assert!(file.exists(), "{} was not built", file.display());
        index.push_str(&format!("    ({m:?}, {:?}),\n", file.display().to_string()));
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("modules.rs");
    std::fs::write(
        out,
        format!(
            "/// (name, path) of every built module.\npub const MODULES: &[(&str, &str)] = &[\n{index}];\n\
             /// Where `wasm-modules/build-guests` puts the modules written in other languages.\n\
             pub const GUESTS_DIR: &str = {:?};\n",
            workspace.join("target/wasm-modules/guests").display().to_string()
        ),
    )
    .expect("write modules.rs");
}

/// Installs the `wasm32-wasip2` standard library with rustup when it is missing, so a
/// fresh clone builds with nothing but `cargo`. Without rustup the build fails below with
/// a message saying what to install.
fn ensure_target_installed() {
    let Ok(out) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        return;
    };
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == "wasm32-wasip2")
    {
        return;
    }
    println!("cargo:warning=installing the wasm32-wasip2 target with rustup (once)");
    let _ = Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .status();
}
