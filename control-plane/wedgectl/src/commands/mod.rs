//! One module per group of commands.

pub mod deploy;
pub mod identity;
pub mod keys;
pub mod modules;
pub mod nodes;
pub mod rollout;
pub mod scaffold;
pub mod telemetry;
