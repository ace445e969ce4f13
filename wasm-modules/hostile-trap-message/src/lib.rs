//! Hostile fixture: starts fine, traps on every message.

// wit-bindgen's generated glue between the component ABI and Rust is unsafe by nature.
#![allow(unsafe_code)]

wit_bindgen::generate!({
    path: "../wit",
    world: "module",
});

struct TrapMessage;

impl Guest for TrapMessage {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn on_message(topic: String, _payload: Vec<u8>) -> Result<(), String> {
        panic!("hostile-trap-message traps on {topic}")
    }

    fn on_tick(_now_ms: u64) -> Result<(), String> {
        Ok(())
    }
}

export!(TrapMessage);
