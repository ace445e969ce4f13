//! Hostile fixture: tries to publish where it may not (another node's uplink topic and a
//! topic outside its allowed prefixes) and reports what the host answered.

// wit-bindgen's generated glue between the component ABI and Rust is unsafe by nature.
#![allow(unsafe_code)]

wit_bindgen::generate!({
    path: "../wit",
    world: "module",
});

use wedge::module::host;

struct Forbidden;

impl Guest for Forbidden {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn on_message(_topic: String, payload: Vec<u8>) -> Result<(), String> {
        let uplink = host::publish("wedge/v1/nodes/someone-else/status", &payload);
        let actuator = host::publish("actuators/valve", &payload);
        match (uplink, actuator) {
            (Err(a), Err(b)) => Err(format!("refused as expected: {a}; {b}")),
            _ => Err("a forbidden publish was accepted".into()),
        }
    }

    fn on_tick(_now_ms: u64) -> Result<(), String> {
        Ok(())
    }
}

export!(Forbidden);
