//! Layers run one way: in each binary's library no top-level module reaches (through a
//! `crate::` path, tests and comments aside) a module that reaches it back. A circle means
//! two rooms call each other and the answer they share belongs in a room below both.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module → the top-level modules its code names through `crate::`.
fn imports(src: &Path) -> anyhow::Result<BTreeMap<String, BTreeSet<String>>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let module = top_module(src, &path);
            let text = std::fs::read_to_string(&path)?;
            // Tests may reach anywhere.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let code: Vec<&str> = code
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect();
            let edges = graph.entry(module.clone()).or_default();
            for target in crate_paths(&code.join("\n")) {
                if target != module {
                    edges.insert(target);
                }
            }
        }
    }
    Ok(graph)
}

/// `src/fleet.rs` → `fleet`, `src/link/inbound.rs` → `link`, `src/lib.rs` → `crate`.
fn top_module(src: &Path, file: &Path) -> String {
    let rel: PathBuf = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let first = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    match first.as_str() {
        "lib" | "main" => "crate".into(),
        _ => first,
    }
}

/// The first segment after each `crate::` in `code`, including each path of a (nested,
/// multi-line) group `crate::{a, b::{c, d}}`.
fn crate_paths(code: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            out.push(ident(rest));
            continue;
        };
        // The group's top-level items: split at commas outside nested braces.
        let (mut depth, mut start) = (0usize, 0usize);
        for (j, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    out.push(ident(&group[start..j]));
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.push(ident(&group[start..j]));
                    start = j + 1;
                }
                _ => {}
            }
        }
    }
    out.retain(|m| !m.is_empty() && m.chars().next().is_some_and(|c| c.is_ascii_lowercase()));
    out
}

/// A circle in `graph`, if any, as the modules along it.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_string());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|start| visit(start, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_import_circles_in_either_binary() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for krate in ["control-plane", "edge-node"] {
        let graph = imports(&root.join(krate).join("src"))?;
        assert!(graph.len() > 5, "{krate}: read {} modules", graph.len());
        if let Some(found) = circle(&graph) {
            panic!("{krate}: import circle {}", found.join(" → "));
        }
    }
    Ok(())
}

#[test]
fn a_circle_is_found() {
    let graph = BTreeMap::from([
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["c".to_string()])),
        ("c".to_string(), BTreeSet::from(["a".to_string()])),
    ]);
    assert_eq!(circle(&graph).map(|c| c.len()), Some(4));
    assert_eq!(
        crate_paths(
            "use crate::{\n    fleet::Fleet,\n    store::{self, Store},\n    time::now_ms,\n};"
        ),
        ["fleet", "store", "time"]
    );
    assert_eq!(crate_paths("let x = crate::time::now_ms();"), ["time"]);
}

/// Guests are their logic only: every module in `wasm-modules/` registers itself with the
/// SDK's `module!` and carries neither generated bindings nor `unsafe` of its own.
#[test]
fn every_module_uses_the_sdk() -> anyhow::Result<()> {
    let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wasm-modules");
    let mut seen = 0;
    for entry in std::fs::read_dir(&modules)? {
        let lib = entry?.path().join("src/lib.rs");
        let name = lib.display().to_string();
        if name.contains("/sdk/") || name.contains("/catalog/") || !lib.exists() {
            continue;
        }
        let text = std::fs::read_to_string(&lib)?;
        assert!(
            text.contains("wedge_sdk::module!("),
            "{name} does not use the SDK"
        );
        for own in ["wit_bindgen", "unsafe", "export!("] {
            let found = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .any(|l| l.contains(own) && !l.contains("wedge_sdk::module!"));
            assert!(!found, "{name} has its own {own}");
        }
        seen += 1;
    }
    assert!(seen >= 11, "read {seen} modules");
    Ok(())
}
