//! `zscore-anomaly`: flags readings far from their topic's running mean.
//!
//! Config: `{"k": <number>, "alert_topic": "<topic>", "min_samples": N}` (`k` default 3,
//! `min_samples` default 10). For each reading (a JSON number or an object with a numeric
//! `"value"`), the module computes `z = (v - mean) / stddev` against the topic's statistics
//! so far; when at least `min_samples` readings were seen and `|z| > k`, it publishes
//! `{"topic", "value", "mean", "stddev", "z"}` to `alert_topic`. Then the reading joins the
//! statistics (Welford's running mean and variance), kept per topic in the module's
//! key-value store so they survive restarts and redeploys.

use serde::Deserialize;
use wedge_sdk::reading;

use wedge_sdk::{Module, host};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_k")]
    pub k: f64,
    pub alert_topic: String,
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
}

fn default_k() -> f64 {
    3.0
}

fn default_min_samples() -> u64 {
    10
}

/// Running statistics of one topic (Welford).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, Deserialize)]
pub struct Running {
    pub n: u64,
    pub mean: f64,
    pub m2: f64,
}

impl Running {
    pub fn stddev(&self) -> f64 {
        if self.n < 2 {
            0.0
        } else {
            (self.m2 / (self.n - 1) as f64).sqrt()
        }
    }

    pub fn push(&mut self, v: f64) {
        self.n += 1;
        let delta = v - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (v - self.mean);
    }
}

/// The anomaly to publish for reading `v`, if it is one; `stats` are the topic's figures
/// before `v`.
pub fn check(config: &Config, topic: &str, stats: &Running, v: f64) -> Option<Vec<u8>> {
    let sd = stats.stddev();
    if stats.n < config.min_samples || sd == 0.0 {
        return None;
    }
    let z = (v - stats.mean) / sd;
    (z.abs() > config.k).then(|| {
        serde_json::json!({"topic": topic, "value": v, "mean": stats.mean, "stddev": sd, "z": z})
            .to_string()
            .into_bytes()
    })
}

pub fn parse_config(json: &str) -> Result<Config, String> {
    let config: Config = serde_json::from_str(json).map_err(|e| format!("invalid config: {e}"))?;
    if !(config.k.is_finite() && config.k > 0.0) {
        return Err("invalid config: k must be a positive number".into());
    }
    if config.alert_topic.is_empty() || config.alert_topic.contains(['+', '#']) {
        return Err("invalid config: alert_topic must be a topic name without wildcards".into());
    }
    Ok(config)
}

/// The module: its configuration (each topic's figures live in the key-value store, so they
/// survive restarts).
pub struct ZScore {
    config: Config,
}

impl Module for ZScore {
    fn init(config: &str) -> Result<Self, String> {
        Ok(Self {
            config: parse_config(config)?,
        })
    }

    fn on_message(&mut self, topic: &str, payload: &[u8]) -> Result<(), String> {
        let Some(v) = reading(payload) else {
            return Err(format!("not a reading on {topic}"));
        };
        let key = format!("stats/{topic}");
        let mut stats: Running = host::kv_get(&key)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if let Some(anomaly) = check(&self.config, topic, &stats, v) {
            host::publish(&self.config.alert_topic, &anomaly)?;
        }
        stats.push(v);
        let bytes = serde_json::to_vec(&stats).map_err(|e| e.to_string())?;
        host::kv_set(&key, &bytes)
    }
}

wedge_sdk::module!(ZScore);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_only_outliers_after_enough_samples() {
        let config =
            parse_config(r#"{"k": 3, "alert_topic": "anomalies", "min_samples": 5}"#).unwrap();
        let mut stats = Running::default();
        for v in [10.0, 11.0, 9.0, 10.0] {
            assert_eq!(check(&config, "t", &stats, v), None);
            stats.push(v);
        }
        // Four samples: not enough, even for an outlier.
        assert_eq!(check(&config, "t", &stats, 100.0), None);
        stats.push(10.5);
        assert_eq!(check(&config, "t", &stats, 10.2), None);
        let anomaly: serde_json::Value =
            serde_json::from_slice(&check(&config, "t", &stats, 100.0).unwrap()).unwrap();
        assert_eq!(anomaly["topic"], "t");
        assert!(anomaly["z"].as_f64().unwrap() > 3.0);
    }

    #[test]
    fn welford_matches_the_textbook() {
        let mut r = Running::default();
        for v in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] {
            r.push(v);
        }
        assert!((r.mean - 5.0).abs() < 1e-12);
        assert!((r.stddev() - 2.138_089_935).abs() < 1e-6);
    }

    #[test]
    fn config_checks() {
        assert!(parse_config(r#"{"alert_topic": "a"}"#).is_ok());
        assert!(parse_config(r#"{"k": -1, "alert_topic": "a"}"#).is_err());
        assert!(parse_config(r#"{"k": 1, "alert_topic": "a/#"}"#).is_err());
    }
}
