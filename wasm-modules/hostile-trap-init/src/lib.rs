//! Hostile fixture: traps in `init`, every time; or, with config `{"refuse_bytes": N}`,
//! refuses to start with an error message N bytes long (the node must cut it).

use wedge_sdk::Module;

struct TrapInit;

impl Module for TrapInit {
    fn init(config: &str) -> Result<Self, String> {
        if let Some(n) = wedge_sdk::config_number(config, "refuse_bytes") {
            return Err("x".repeat(usize::try_from(n).map_err(|e| e.to_string())?));
        }
        panic!("hostile-trap-init traps in init")
    }
}

wedge_sdk::module!(TrapInit);
