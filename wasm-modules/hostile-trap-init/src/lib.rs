//! Hostile fixture: traps in `init`, every time.

// wit-bindgen's generated glue between the component ABI and Rust is unsafe by nature.
#![allow(unsafe_code)]

wit_bindgen::generate!({
    path: "../wit",
    world: "module",
});

struct TrapInit;

impl Guest for TrapInit {
    fn init(_config: String) -> Result<(), String> {
        panic!("hostile-trap-init traps in init")
    }

    fn on_message(_topic: String, _payload: Vec<u8>) -> Result<(), String> {
        Ok(())
    }

    fn on_tick(_now_ms: u64) -> Result<(), String> {
        Ok(())
    }
}

export!(TrapInit);
