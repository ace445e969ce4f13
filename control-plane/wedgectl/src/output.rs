//! Printing: tables for people, JSON for programs (`--output json` prints what the API
//! returned, filtered, so scripts see the API's own field names).

use std::time::{Duration, SystemTime};

use comfy_table::{Table, presets};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// A borderless table in the style of `kubectl get`.
pub fn table(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    t.set_header(headers.iter().map(|h| h.to_uppercase()));
    t
}

pub fn json(v: &Value) {
    // A Value always serializes.
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// A string field, or "" when absent.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => clean(s),
        other => other.to_string(),
    }
}

/// A string as it may reach a terminal: control characters (escape sequences a node, a
/// module or a device could put in a name, a reason or a log line) are shown escaped
/// (`\u{1b}`), never interpreted.
pub fn clean(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `k=v,k2=v2`.
pub fn labels(v: &Value) -> String {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{}={}", clean(k), text(v)))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// "3s", "5m", "2h" ago from an RFC 3339 time; "-" when absent or unreadable.
pub fn age(v: &Value) -> String {
    let Some(t) = v
        .as_str()
        .and_then(|s| humantime::parse_rfc3339_weak(s).ok())
    else {
        return "-".into();
    };
    let secs = SystemTime::now()
        .duration_since(t)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

pub fn bytes(v: &Value) -> String {
    let Some(mut n) = v.as_f64() else {
        return "-".into();
    };
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut i = 0;
    while n >= 1024.0 && i < units.len() - 1 {
        n /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{n:.1} {}", units[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_never_reach_the_terminal() {
        let hostile = Value::String("ok\u{1b}]0;pwned\u{7}\r\nfake line".into());
        let shown = text(&hostile);
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert!(shown.contains("\\u{1b}"), "{shown}");
        assert_eq!(text(&Value::String("plain".into())), "plain");
    }
}
