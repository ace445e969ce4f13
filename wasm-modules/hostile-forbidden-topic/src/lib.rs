//! Hostile fixture: tries to publish where it may not (another node's uplink topic and a
//! topic outside its allowed prefixes) and reports what the host answered.

use wedge_sdk::{Module, host};

struct Forbidden;

impl Module for Forbidden {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Forbidden)
    }

    fn on_message(&mut self, _topic: &str, payload: &[u8]) -> Result<(), String> {
        let uplink = host::publish("wedge/v1/nodes/someone-else/status", payload);
        let actuator = host::publish("actuators/valve", payload);
        match (uplink, actuator) {
            (Err(a), Err(b)) => Err(format!("refused as expected: {a}; {b}")),
            _ => Err("a forbidden publish was accepted".into()),
        }
    }
}

wedge_sdk::module!(Forbidden);
