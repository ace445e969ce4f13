//! `forward`: emits each matching message upstream unchanged, optionally 1 in N.
//!
//! Config (all optional): `{"stream": "<name>", "sample": N}`. Defaults: stream
//! `"forward"`, sample 1 (every message). With `sample` N, the 1st, (N+1)th, … message is
//! emitted.

use serde::Deserialize;

use wedge_sdk::{Module, host};

/// The module's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub stream: String,
    pub sample: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            stream: "forward".into(),
            sample: 1,
        }
    }
}

/// Decides which messages go upstream.
#[derive(Debug)]
pub struct Sampler {
    config: Config,
    seen: u64,
}

impl Sampler {
    pub fn new(config_json: &str) -> Result<Self, String> {
        let config: Config = wedge_sdk::config(config_json)?;
        if config.sample == 0 {
            return Err("invalid config: sample must be at least 1".into());
        }
        Ok(Self { config, seen: 0 })
    }

    /// Whether this message is emitted.
    pub fn take(&mut self) -> bool {
        let take = self.seen.is_multiple_of(self.config.sample);
        self.seen += 1;
        take
    }
}

impl Module for Sampler {
    fn init(config: &str) -> Result<Self, String> {
        Sampler::new(config)
    }

    fn on_message(&mut self, _topic: &str, payload: &[u8]) -> Result<(), String> {
        if self.take() {
            host::emit(&self.config.stream, payload)?;
        }
        Ok(())
    }
}

wedge_sdk::module!(Sampler);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_one_in_n() {
        let mut s = Sampler::new(r#"{"sample": 3}"#).unwrap();
        let taken: Vec<bool> = (0..7).map(|_| s.take()).collect();
        assert_eq!(taken, [true, false, false, true, false, false, true]);
        let mut all = Sampler::new("{}").unwrap();
        assert!((0..5).all(|_| all.take()));
        assert_eq!(all.config.stream, "forward");
        assert!(Sampler::new(r#"{"sample": 0}"#).is_err());
        assert!(Sampler::new(r#"{"nope": 1}"#).is_err());
    }
}
