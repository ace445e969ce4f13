//! `wedgectl deploy -f FILE`: the deployments a file declares, applied one by one.
//!
//! A file holds one deployment (the fields of `POST /api/v1/deployments`), or a list under
//! `deployments` (`[[deployments]]` in TOML); a YAML file may also hold several documents
//! separated by `---`. Applying is idempotent: the control plane creates a revision only
//! when a deployment's spec changed.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;

use crate::client::Client;
use crate::output::{self, Format, text};
use crate::{Failure, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FileFormat {
    Toml,
    Yaml,
    Json,
}

impl FileFormat {
    fn of(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "toml" => Some(Self::Toml),
            "yaml" | "yml" => Some(Self::Yaml),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// The deployments in `text`, in file order.
pub fn parse(text: &str, format: FileFormat) -> anyhow::Result<Vec<Value>> {
    let docs: Vec<Value> = match format {
        FileFormat::Toml => vec![toml::from_str(text)?],
        FileFormat::Json => vec![serde_json::from_str(text)?],
        FileFormat::Yaml => serde_yaml_ng::Deserializer::from_str(text)
            .map(Value::deserialize)
            .filter(|d| !matches!(d, Ok(Value::Null)))
            .collect::<std::result::Result<_, _>>()?,
    };
    let mut out = Vec::new();
    for doc in docs {
        match doc {
            Value::Object(mut map) if map.contains_key("deployments") => {
                match map.remove("deployments") {
                    Some(Value::Array(list)) => out.extend(list),
                    _ => bail!("\"deployments\" must be a list"),
                }
                if !map.is_empty() {
                    let keys: Vec<_> = map.keys().collect();
                    bail!("unexpected keys beside \"deployments\": {keys:?}");
                }
            }
            Value::Object(map) => out.push(Value::Object(map)),
            other => bail!("expected a deployment or a list of them, found {other}"),
        }
    }
    for (i, d) in out.iter().enumerate() {
        if !d.is_object() || !d["name"].is_string() {
            bail!("deployment {} has no \"name\"", i + 1);
        }
    }
    if out.is_empty() {
        bail!("the file declares no deployment");
    }
    Ok(out)
}

pub async fn apply(
    client: &Client,
    out: Format,
    file: &Path,
    format: Option<FileFormat>,
) -> Result<()> {
    let input = if file == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read standard input")
            .map(|_| s)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
    }
    .map_err(Failure::Input)?;
    let format = format
        .or_else(|| FileFormat::of(file))
        .unwrap_or(FileFormat::Yaml);
    let deployments = parse(&input, format)
        .with_context(|| format!("{} is not a valid deployment file", file.display()))
        .map_err(Failure::Input)?;

    let mut applied = Vec::new();
    let mut failed = 0;
    for d in deployments {
        let name = text(&d["name"]);
        match client.post_json("/api/v1/deployments", &d).await {
            Ok(answer) => {
                if out == Format::Table {
                    let verb = if answer.status == 201 {
                        "created"
                    } else {
                        "unchanged"
                    };
                    println!(
                        "deployment/{name} revision {} {verb}",
                        text(&answer.body["revision"])
                    );
                }
                applied.push(answer.body);
            }
            Err(e @ crate::client::Error::Unreachable { .. }) => return Err(e.into()),
            Err(e) => {
                eprintln!("deployment/{name}: {e}");
                failed += 1;
            }
        }
    }
    if out == Format::Json {
        output::json(&Value::Array(applied));
    }
    if failed > 0 {
        return Err(Failure::Outcome(format!(
            "{failed} deployment(s) not applied"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn toml_yaml_and_json_say_the_same() {
        let toml = r#"
name = "alert"
module = "threshold-alert@1"
subscriptions = ["sensors/#"]
[selector.labels]
site = "berlin"
[config]
threshold = 50
[strategy]
canary = 1
batch = "25%"
"#;
        let yaml = r#"
name: alert
module: threshold-alert@1
subscriptions: ["sensors/#"]
selector: {labels: {site: berlin}}
config: {threshold: 50}
strategy: {canary: 1, batch: "25%"}
"#;
        let t = parse(toml, FileFormat::Toml).unwrap();
        let y = parse(yaml, FileFormat::Yaml).unwrap();
        assert_eq!(t, y);
        let j = parse(&t[0].to_string(), FileFormat::Json).unwrap();
        assert_eq!(t, j);
    }

    #[test]
    fn lists_and_documents() {
        let toml = "[[deployments]]\nname = \"a\"\n[[deployments]]\nname = \"b\"\n";
        assert_eq!(parse(toml, FileFormat::Toml).unwrap().len(), 2);
        let yaml = "name: a\n---\nname: b\n---\n";
        assert_eq!(parse(yaml, FileFormat::Yaml).unwrap().len(), 2);
        let yaml = "deployments:\n  - name: a\n  - name: b\n";
        assert_eq!(parse(yaml, FileFormat::Yaml).unwrap().len(), 2);
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        for (text, format, want) in [
            ("name = ", FileFormat::Toml, "TOML"),
            ("module: m", FileFormat::Yaml, "no \"name\""),
            ("- 1\n- 2", FileFormat::Yaml, "expected a deployment"),
            ("", FileFormat::Yaml, "no deployment"),
            ("deployments: 3", FileFormat::Yaml, "must be a list"),
        ] {
            let e = format!("{:#}", parse(text, format).unwrap_err());
            assert!(
                e.contains(want) || (want == "TOML" && !e.is_empty()),
                "{text:?}: {e}"
            );
        }
    }
}
