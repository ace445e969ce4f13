//! Hostile fixture: grows its memory without bound on every message. The node's memory
//! limit must stop it. With config `{"handles": N}` it instead leaks N WASI handles on every
//! message: each is an entry in the host's resource table, host memory outside the module's
//! own limit, so the node must bound the table too.

use wedge_sdk::Module;

struct Hog {
    handles: u64,
}

impl Module for Hog {
    fn init(config: &str) -> Result<Self, String> {
        let handles = wedge_sdk::config_number(config, "handles").unwrap_or(0);
        Ok(Self { handles })
    }

    fn on_message(&mut self, _topic: &str, _payload: &[u8]) -> Result<(), String> {
        if self.handles > 0 {
            for _ in 0..self.handles {
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
}

wedge_sdk::module!(Hog);
