//! Hostile fixture: never returns from `on-message`. The node's call deadline must stop it.

use wedge_sdk::Module;

struct Loop;

impl Module for Loop {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Loop)
    }

    fn on_message(&mut self, _topic: &str, _payload: &[u8]) -> Result<(), String> {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

wedge_sdk::module!(Loop);
