//! Hostile fixture: on every message, publishes to the local broker as fast as it can,
//! ignoring every refusal. The node's publish rate limit and call deadline must contain it.
//! With config `{"payload_bytes": N}` each payload is N bytes (the node refuses payloads
//! over its local broker's limit).

use wedge_sdk::{Module, host};

struct Flood {
    payload: Vec<u8>,
}

impl Module for Flood {
    fn init(config: &str) -> Result<Self, String> {
        let bytes = wedge_sdk::config_number(config, "payload_bytes").unwrap_or(256);
        Ok(Self {
            payload: vec![0x55; usize::try_from(bytes).map_err(|e| e.to_string())?],
        })
    }

    fn on_message(&mut self, _topic: &str, _payload: &[u8]) -> Result<(), String> {
        loop {
            let _ = host::publish("flood/spam", &self.payload);
        }
    }
}

wedge_sdk::module!(Flood);
