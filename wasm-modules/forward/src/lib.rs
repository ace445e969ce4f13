//! `forward`: emits each matching message upstream unchanged, optionally 1 in N.
//!
//! Config (all optional): `{"stream": "<name>", "sample": N}`. Defaults: stream
//! `"forward"`, sample 1 (every message). With `sample` N, the 1st, (N+1)th, … message is
//! emitted.

// wit-bindgen's generated glue between the component ABI and Rust is unsafe by nature.
#![allow(unsafe_code)]

use std::cell::RefCell;

use serde::Deserialize;

wit_bindgen::generate!({
    path: "../wit",
    world: "module",
});

use wedge::module::host;

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
        let config: Config = wedge_guest_kit::config(config_json)?;
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

thread_local! {
    static SAMPLER: RefCell<Option<Sampler>> = const { RefCell::new(None) };
}

struct Forward;

impl Guest for Forward {
    fn init(config: String) -> Result<(), String> {
        let sampler = Sampler::new(&config)?;
        SAMPLER.with(|s| *s.borrow_mut() = Some(sampler));
        Ok(())
    }

    fn on_message(_topic: String, payload: Vec<u8>) -> Result<(), String> {
        SAMPLER.with(|s| {
            let mut guard = s.borrow_mut();
            let sampler = guard.as_mut().ok_or("not initialised")?;
            if sampler.take() {
                host::emit(&sampler.config.stream, &payload)?;
            }
            Ok(())
        })
    }

    fn on_tick(_now_ms: u64) -> Result<(), String> {
        Ok(())
    }
}

export!(Forward);

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
