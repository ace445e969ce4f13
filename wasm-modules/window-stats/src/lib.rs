//! `window-stats`: min, max, mean and count of the readings on each topic over a tumbling
//! window; on every tick it emits one record per topic seen in the window and starts a new
//! window. The deployment's `tick_ms` is the window length.
//!
//! Config (optional): `{"stream": "<name>"}`, default `"window-stats"`. A reading is a JSON
//! number or an object with a numeric `"value"`; other payloads are ignored and counted.
//! A record: `{"topic", "min", "max", "mean", "count", "window_end_ms"}`.

use serde::Deserialize;
use wedge_sdk::reading;

use std::collections::BTreeMap;
use wedge_sdk::{Module, host};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub stream: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            stream: "window-stats".into(),
        }
    }
}

/// Running figures of one topic in the current window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: u64,
}

/// The current window.
#[derive(Debug, Default)]
pub struct Window {
    topics: BTreeMap<String, Figures>,
    pub ignored: u64,
}

impl Window {
    pub fn add(&mut self, topic: &str, payload: &[u8]) {
        let Some(v) = reading(payload) else {
            self.ignored += 1;
            return;
        };
        let f = self.topics.entry(topic.to_string()).or_insert(Figures {
            min: v,
            max: v,
            sum: 0.0,
            count: 0,
        });
        f.min = f.min.min(v);
        f.max = f.max.max(v);
        f.sum += v;
        f.count += 1;
    }

    /// Closes the window: one JSON record per topic; the next window starts empty.
    pub fn close(&mut self, now_ms: u64) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.topics)
            .into_iter()
            .map(|(topic, f)| {
                serde_json::json!({
                    "topic": topic,
                    "min": f.min,
                    "max": f.max,
                    "mean": f.sum / f.count as f64,
                    "count": f.count,
                    "window_end_ms": now_ms,
                })
                .to_string()
                .into_bytes()
            })
            .collect()
    }
}

/// The module: its configuration and the current window.
pub struct WindowStats {
    config: Config,
    window: Window,
}

impl Module for WindowStats {
    fn init(config: &str) -> Result<Self, String> {
        let config: Config = wedge_sdk::config(config)?;
        Ok(Self {
            config,
            window: Window::default(),
        })
    }

    fn on_message(&mut self, topic: &str, payload: &[u8]) -> Result<(), String> {
        self.window.add(topic, payload);
        Ok(())
    }

    fn on_tick(&mut self, now_ms: u64) -> Result<(), String> {
        for record in self.window.close(now_ms) {
            host::emit(&self.config.stream, &record)?;
        }
        Ok(())
    }
}

wedge_sdk::module!(WindowStats);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_per_topic_and_reset() {
        let mut w = Window::default();
        for p in [&b"1"[..], b"5", br#"{"value": 3}"#, b"\"x\""] {
            w.add("a", p);
        }
        w.add("b", b"-2");
        let records: Vec<serde_json::Value> = w
            .close(99)
            .iter()
            .map(|r| serde_json::from_slice(r).unwrap())
            .collect();
        assert_eq!(
            records,
            vec![
                serde_json::json!({"topic": "a", "min": 1.0, "max": 5.0, "mean": 3.0, "count": 3, "window_end_ms": 99}),
                serde_json::json!({"topic": "b", "min": -2.0, "max": -2.0, "mean": -2.0, "count": 1, "window_end_ms": 99}),
            ]
        );
        assert_eq!(w.ignored, 1);
        assert!(w.close(100).is_empty());
    }
}
