use serde::Deserialize;
use wedge_sdk::{Module, host};

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TooHot {
    threshold: f64,
    alert_topic: String,
}

impl Module for TooHot {
    fn init(config: &str) -> Result<Self, String> {
        wedge_sdk::config(config)
    }

    fn on_message(&mut self, topic: &str, payload: &[u8]) -> Result<(), String> {
        match wedge_sdk::reading(payload) {
            Some(v) if v > self.threshold => {
                let alert = format!(r#"{{"topic":"{topic}","value":{v}}}"#);
                host::publish(&self.alert_topic, alert.as_bytes())
            }
            _ => Ok(()),
        }
    }
}

wedge_sdk::module!(TooHot);

// Cargo builds an example as a program; a module has no `main`. The test
// `the_readme_module_is_this_example` keeps the lines above equal to wasm-modules/README.md.
fn main() {}
