//! Hostile fixture: grows its memory without bound on every message. The node's memory
//! limit must stop it.

// wit-bindgen's generated glue between the component ABI and Rust is unsafe by nature.
#![allow(unsafe_code)]

wit_bindgen::generate!({
    path: "../wit",
    world: "module",
});

struct Hog;

impl Guest for Hog {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn on_message(_topic: String, _payload: Vec<u8>) -> Result<(), String> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![1u8; 1024 * 1024]);
            std::hint::black_box(&hoard);
        }
    }

    fn on_tick(_now_ms: u64) -> Result<(), String> {
        Ok(())
    }
}

export!(Hog);
