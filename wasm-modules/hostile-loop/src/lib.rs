//! Hostile fixture: never returns from `on-message`. The node's call deadline must stop it.

// wit-bindgen's generated glue between the component ABI and Rust is unsafe by nature.
#![allow(unsafe_code)]

wit_bindgen::generate!({
    path: "../wit",
    world: "module",
});

struct Loop;

impl Guest for Loop {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn on_message(_topic: String, _payload: Vec<u8>) -> Result<(), String> {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }

    fn on_tick(_now_ms: u64) -> Result<(), String> {
        Ok(())
    }
}

export!(Loop);
