//! `threshold-alert`: publishes an alert when a reading goes above a threshold.
//!
//! Config: `{"threshold": <number>, "alert_topic": "<topic>"}`.
//!
//! A reading is a payload that is a JSON number, or a JSON object with a numeric `"value"`.
//! For a reading `v > threshold` the module publishes
//! `{"topic": <source topic>, "value": v, "threshold": t}` to `alert_topic`. Anything else is
//! ignored and counted (the count is logged every 100 ignored messages); it is never fatal.

use serde::Deserialize;

use wedge_sdk::{Level, Module, host};

/// The configuration a deployment passes to `init`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub threshold: f64,
    pub alert_topic: String,
}

/// The module's logic, apart from the host, so it is unit tested natively.
#[derive(Debug)]
pub struct Detector {
    config: Config,
    ignored: u64,
}

/// What to do with one message.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Publish this alert payload to the configured topic.
    Alert(Vec<u8>),
    /// A reading at or below the threshold.
    Normal,
    /// Not a reading.
    Ignored,
}

impl Detector {
    pub fn new(config_json: &str) -> Result<Self, String> {
        let config: Config =
            serde_json::from_str(config_json).map_err(|e| format!("invalid config: {e}"))?;
        if !config.threshold.is_finite() {
            return Err("invalid config: threshold must be a finite number".into());
        }
        if config.alert_topic.is_empty() || config.alert_topic.contains(['+', '#']) {
            return Err(
                "invalid config: alert_topic must be a topic name without wildcards".into(),
            );
        }
        Ok(Self { config, ignored: 0 })
    }

    pub fn alert_topic(&self) -> &str {
        &self.config.alert_topic
    }

    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    pub fn handle(&mut self, topic: &str, payload: &[u8]) -> Outcome {
        let Some(value) = wedge_sdk::reading(payload) else {
            self.ignored += 1;
            return Outcome::Ignored;
        };
        if value > self.config.threshold {
            let alert = serde_json::json!({
                "topic": topic,
                "value": value,
                "threshold": self.config.threshold,
            });
            Outcome::Alert(alert.to_string().into_bytes())
        } else {
            Outcome::Normal
        }
    }
}

impl Module for Detector {
    fn init(config: &str) -> Result<Self, String> {
        let detector = Detector::new(config)?;
        let (threshold, topic) = (detector.config.threshold, detector.alert_topic());
        host::log(
            Level::Info,
            &format!("threshold-alert ready: alerts above {threshold} go to {topic}"),
        );
        Ok(detector)
    }

    fn on_message(&mut self, topic: &str, payload: &[u8]) -> Result<(), String> {
        match self.handle(topic, payload) {
            Outcome::Alert(alert) => host::publish(self.alert_topic(), &alert),
            Outcome::Normal => Ok(()),
            Outcome::Ignored => {
                if self.ignored() % 100 == 1 {
                    let count = self.ignored();
                    host::log(
                        Level::Warn,
                        &format!(
                            "ignored a payload on {topic} that is not a reading ({count} so far)"
                        ),
                    );
                }
                Ok(())
            }
        }
    }
}

wedge_sdk::module!(Detector);

#[cfg(test)]
mod tests {
    use super::*;

    fn detector() -> Detector {
        Detector::new(r#"{"threshold": 50, "alert_topic": "alerts/temp"}"#).unwrap()
    }

    #[test]
    fn alerts_above_threshold_only() {
        let mut d = detector();
        assert_eq!(d.handle("s/1", b"10"), Outcome::Normal);
        assert_eq!(d.handle("s/1", b"50"), Outcome::Normal);
        let Outcome::Alert(a) = d.handle("s/1", b"60") else {
            panic!("expected an alert")
        };
        let a: serde_json::Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(
            a,
            serde_json::json!({"topic": "s/1", "value": 60.0, "threshold": 50.0})
        );
        assert!(matches!(
            d.handle("s/2", br#"{"value": 99, "unit": "C"}"#),
            Outcome::Alert(_)
        ));
    }

    #[test]
    fn ignores_and_counts_non_readings() {
        let mut d = detector();
        for p in [
            &b"\"junk\""[..],
            b"not json",
            b"{\"value\": \"x\"}",
            b"[1]",
            b"",
        ] {
            assert_eq!(d.handle("s", p), Outcome::Ignored);
        }
        assert_eq!(d.ignored(), 5);
    }

    #[test]
    fn rejects_bad_config() {
        assert!(Detector::new("{}").is_err());
        assert!(Detector::new(r#"{"threshold": 1, "alert_topic": "a/#"}"#).is_err());
        assert!(Detector::new(r#"{"threshold": "x", "alert_topic": "a"}"#).is_err());
    }
}
