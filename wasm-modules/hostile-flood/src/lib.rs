//! Hostile fixture: on every message, publishes to the local broker as fast as it can,
//! ignoring every refusal. The node's publish rate limit and call deadline must contain it.

// wit-bindgen's generated glue between the component ABI and Rust is unsafe by nature.
#![allow(unsafe_code)]

wit_bindgen::generate!({
    path: "../wit",
    world: "module",
});

use wedge::module::host;

struct Flood;

impl Guest for Flood {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn on_message(_topic: String, _payload: Vec<u8>) -> Result<(), String> {
        let payload = [0x55u8; 256];
        loop {
            let _ = host::publish("flood/spam", &payload);
        }
    }

    fn on_tick(_now_ms: u64) -> Result<(), String> {
        Ok(())
    }
}

export!(Flood);
