//! Hostile fixture: grows its memory without bound on every message. The node's memory
//! limit must stop it. With config `{"handles": N}` it instead leaks N WASI handles on every
//! message: each is an entry in the host's resource table, host memory outside the module's
//! own limit, so the node must bound the table too.

// wit-bindgen's generated glue between the component ABI and Rust is unsafe by nature.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

wit_bindgen::generate!({
    path: "../wit",
    world: "module",
});

struct Hog;

static HANDLES: AtomicUsize = AtomicUsize::new(0);

impl Guest for Hog {
    fn init(config: String) -> Result<(), String> {
        if let Some(n) = config.split_once("\"handles\":").and_then(|(_, rest)| {
            rest.trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        }) {
            HANDLES.store(n, Ordering::Relaxed);
        }
        Ok(())
    }

    fn on_message(_topic: String, _payload: Vec<u8>) -> Result<(), String> {
        let handles = HANDLES.load(Ordering::Relaxed);
        if handles > 0 {
            for _ in 0..handles {
                std::mem::forget(wasip2::cli::stdout::get_stdout());
            }
            return Ok(());
        }
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
