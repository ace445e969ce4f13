//! Hostile fixture: on every message, publishes to the local broker as fast as it can,
//! ignoring every refusal. The node's publish rate limit and call deadline must contain it.
//! With config `{"payload_bytes": N}` each payload is N bytes (the node refuses payloads
//! over its local broker's limit).

// wit-bindgen's generated glue between the component ABI and Rust is unsafe by nature.
#![allow(unsafe_code)]

wit_bindgen::generate!({
    path: "../wit",
    world: "module",
});

use wedge::module::host;

struct Flood;

static PAYLOAD_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(256);

impl Guest for Flood {
    fn init(config: String) -> Result<(), String> {
        if let Some(n) = config
            .split_once("\"payload_bytes\":")
            .and_then(|(_, rest)| {
                rest.trim_start()
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            })
        {
            PAYLOAD_BYTES.store(n, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    fn on_message(_topic: String, _payload: Vec<u8>) -> Result<(), String> {
        let payload = vec![0x55u8; PAYLOAD_BYTES.load(std::sync::atomic::Ordering::Relaxed)];
        loop {
            let _ = host::publish("flood/spam", &payload);
        }
    }

    fn on_tick(_now_ms: u64) -> Result<(), String> {
        Ok(())
    }
}

export!(Flood);
