//! Hostile fixture: starts fine, traps on every message.

use wedge_sdk::Module;

struct TrapMessage;

impl Module for TrapMessage {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(TrapMessage)
    }

    fn on_message(&mut self, topic: &str, _payload: &[u8]) -> Result<(), String> {
        panic!("hostile-trap-message traps on {topic}")
    }
}

wedge_sdk::module!(TrapMessage);
