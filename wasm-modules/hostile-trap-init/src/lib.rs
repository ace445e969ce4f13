//! Hostile fixture: traps in `init`, every time; or, with config `{"refuse_bytes": N}`,
//! refuses to start with an error message N bytes long (the node must cut it).

// wit-bindgen's generated glue between the component ABI and Rust is unsafe by nature.
#![allow(unsafe_code)]

wit_bindgen::generate!({
    path: "../wit",
    world: "module",
});

struct TrapInit;

impl Guest for TrapInit {
    fn init(config: String) -> Result<(), String> {
        if let Some(n) = number(&config, "refuse_bytes") {
            return Err("x".repeat(n));
        }
        panic!("hostile-trap-init traps in init")
    }

    fn on_message(_topic: String, _payload: Vec<u8>) -> Result<(), String> {
        Ok(())
    }

    fn on_tick(_now_ms: u64) -> Result<(), String> {
        Ok(())
    }
}

/// The number in `{"key": N}` (a fixture's whole config), without a JSON parser.
fn number(config: &str, key: &str) -> Option<usize> {
    let rest = config.split_once(&format!("\"{key}\":"))?.1;
    rest.trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

export!(TrapInit);
