//! `wedgectl module new NAME --lang rust|js|python`: a ready module project (the WIT
//! included, one build command), and `wedgectl module run`, which runs a module locally with
//! `wedge-node module run` (the node's own host and limits; wedgectl links no WebAssembly
//! runtime).
//!
//! The templates (`wedgectl/templates/`) are compiled in, with `{{name}}` replaced; the WIT
//! is the one nodes implement (`wasm-modules/wit/wedge.wit`), so a project made by this
//! wedgectl matches the nodes of the same release.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::{Failure, Result};

/// A module project's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Js,
    Python,
}

const WIT: &str = include_str!("../../../../wasm-modules/wit/wedge.wit");

impl Lang {
    /// (path, template) of the project's files besides the WIT and README.
    fn files(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Lang::Rust => &[
                (
                    "Cargo.toml",
                    include_str!("../../templates/rust/Cargo.toml"),
                ),
                (
                    "src/lib.rs",
                    include_str!("../../templates/rust/src/lib.rs"),
                ),
                (".gitignore", "target/\n"),
            ],
            Lang::Js => &[
                (
                    "package.json",
                    include_str!("../../templates/js/package.json"),
                ),
                ("app.js", include_str!("../../templates/js/app.js")),
                (".gitignore", "node_modules/\n*.wasm\n"),
            ],
            Lang::Python => &[
                ("app.py", include_str!("../../templates/python/app.py")),
                (
                    "requirements.txt",
                    include_str!("../../templates/python/requirements.txt"),
                ),
                (".gitignore", ".venv/\n__pycache__/\n*.wasm\n"),
            ],
        }
    }

    /// The commands that build the project, and the component they make.
    pub fn build(self, name: &str) -> (Vec<String>, String) {
        match self {
            Lang::Rust => (
                vec![
                    "rustup target add wasm32-wasip2".into(),
                    "cargo build --release --target wasm32-wasip2".into(),
                ],
                format!(
                    "target/wasm32-wasip2/release/{}.wasm",
                    name.replace('-', "_")
                ),
            ),
            Lang::Js => (
                vec!["npm install".into(), "npm run build".into()],
                format!("{name}.wasm"),
            ),
            Lang::Python => (
                vec![
                    "python3 -m venv .venv".into(),
                    ".venv/bin/pip install -r requirements.txt".into(),
                    format!(
                        ".venv/bin/componentize-py -d wit -w module componentize app -o {name}.wasm"
                    ),
                ],
                format!("{name}.wasm"),
            ),
        }
    }
}

/// Checks a module name: it names a directory, a Cargo package and an npm package.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        bail!(
            "module name {name:?}: use lowercase letters, digits and '-', starting with a letter"
        );
    }
    Ok(())
}

/// Writes a new project for module `name` in `dir` (default: `./name`), which must not exist.
pub fn new(name: &str, lang: Lang, dir: Option<&Path>) -> Result<()> {
    check_name(name).map_err(Failure::Input)?;
    let dir = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(name));
    write_project(name, lang, &dir).map_err(Failure::Input)?;
    let (steps, wasm) = lang.build(name);
    println!("created {} ({lang:?}); build and run it:", dir.display());
    println!("  cd {}", dir.display());
    for step in steps {
        println!("  {step}");
    }
    println!("  echo 'sensors/a 72' | wedgectl module run {wasm} --config '{{\"threshold\": 50}}'");
    Ok(())
}

fn write_project(name: &str, lang: Lang, dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    let readme = readme(name, lang);
    let mut files: Vec<(&str, String)> = lang
        .files()
        .iter()
        .map(|(path, text)| (*path, text.replace("{{name}}", name)))
        .collect();
    files.push(("wit/wedge.wit", WIT.to_string()));
    files.push(("README.md", readme));
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn readme(name: &str, lang: Lang) -> String {
    let (steps, wasm) = lang.build(name);
    format!(
        "# {name}\n\nA Wedge module ({lang:?}). Build:\n\n```sh\n{}\n```\n\n\
         Run it on this machine with the node's host and limits (each input line is \
         `TOPIC PAYLOAD`; what it publishes and emits is printed as JSON lines):\n\n```sh\n\
         printf 'sensors/a 20\\nsensors/a 72\\n' | wedgectl module run {wasm} --config '{{\"threshold\": 50}}'\n```\n\n\
         Deploy it:\n\n```sh\nwedgectl modules push {wasm} --name {name} --version 1\n```\n\n\
         then a deployment naming `module: {name}@1` (`wedgectl deploy -f`). The interface \
         is `wit/wedge.wit`.\n",
        steps.join("\n")
    )
}

/// Runs `wedge-node module run FILE ARGS…`: the `wedge-node` next to this wedgectl, else
/// the one on `PATH`.
pub fn run(file: &Path, args: &[String]) -> Result<()> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("wedge-node")))
        .filter(|p| p.exists());
    let program = beside.unwrap_or_else(|| PathBuf::from("wedge-node"));
    let status = Command::new(&program)
        .args(["module", "run"])
        .arg(file)
        .args(args)
        .status()
        .map_err(|e| {
            Failure::Input(anyhow::anyhow!(
                "cannot run {} ({e}): `wedgectl module run` needs the wedge-node binary \
                 beside wedgectl or on PATH",
                program.display()
            ))
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(Failure::Outcome(format!("the module failed ({status})")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_projects() {
        assert!(check_name("too-hot2").is_ok());
        for bad in ["", "Hot", "1hot", "a_b", "../x", "a b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        for lang in [Lang::Rust, Lang::Js, Lang::Python] {
            let project = dir.path().join(format!("{lang:?}"));
            write_project("too-hot", lang, &project).unwrap();
            let wit = std::fs::read_to_string(project.join("wit/wedge.wit")).unwrap();
            assert!(wit.contains("world module"));
            for (path, _) in lang.files() {
                let text = std::fs::read_to_string(project.join(path)).unwrap();
                assert!(!text.contains("{{name}}"), "{path}");
            }
            // An existing directory is never overwritten.
            assert!(write_project("too-hot", lang, &project).is_err());
        }
    }
}
