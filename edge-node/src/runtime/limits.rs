//! What one instance may use (pure): the store limits wasmtime enforces, with the node
//! setting each comes from, and rate limits for host calls.

use std::time::Instant;

use wasmtime::{StoreLimits, StoreLimitsBuilder};

/// The resources one instance may hold. A module compiled from JavaScript or Python is a
/// component of several core instances (componentize-py: 14; componentize-js: 5) with its
/// tables and memories, where a Rust module has one or two; the defaults admit both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceLimits {
    /// Bytes of one linear memory (`limits.memory_bytes`).
    pub memory_bytes: usize,
    /// Core instances (`limits.instances`).
    pub instances: usize,
    /// Tables (`limits.tables`).
    pub tables: usize,
    /// Linear memories (`limits.memories`).
    pub memories: usize,
}

impl InstanceLimits {
    pub fn store_limits(&self) -> StoreLimits {
        StoreLimitsBuilder::new()
            .memory_size(self.memory_bytes)
            .instances(self.instances)
            .tables(self.tables)
            .memories(self.memories)
            .trap_on_grow_failure(true)
            .build()
    }

    /// For a wasmtime error that is one of these limits, which setting to raise: wasmtime
    /// names the count, not our setting.
    pub fn setting_hint(&self, error: &str) -> Option<String> {
        const NODE: &str = "the node's [limits]";
        const BOTH: &str = "the deployment's limits or the node's [limits]";
        let (setting, value, where_) = if error.contains("instance count too high") {
            ("limits.instances", self.instances, NODE)
        } else if error.contains("table count too high") {
            ("limits.tables", self.tables, NODE)
        } else if error.contains("memory count too high") {
            ("limits.memories", self.memories, NODE)
        } else if error.contains("forcing trap when growing memory") {
            ("limits.memory_bytes", self.memory_bytes, BOTH)
        } else {
            return None;
        };
        Some(format!("over {setting} = {value} (raise it in {where_})"))
    }
}

/// A token bucket: `rate` tokens a second, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn limit_errors_name_their_setting() {
        let limits = InstanceLimits {
            memory_bytes: 1 << 20,
            instances: 10,
            tables: 20,
            memories: 4,
        };
        let hint = limits.setting_hint("resource limit exceeded: instance count too high at 11");
        assert!(hint.unwrap().contains("limits.instances = 10"));
        let named = |e: &str| limits.setting_hint(e).unwrap_or_default();
        assert!(named("table count too high at 21").contains("limits.tables"));
        assert!(named("memory count too high at 5").contains("limits.memories"));
        assert!(named("forcing trap when growing memory to 9 bytes").contains("memory_bytes"));
        assert!(limits.setting_hint("wasm trap: unreachable").is_none());
    }

    #[test]
    fn allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5, t0);
        assert_eq!((0..10).filter(|_| b.take(t0)).count(), 5);
        assert!(!b.take(t0));
        assert!(b.take(t0 + Duration::from_millis(100)));
        assert!(!b.take(t0 + Duration::from_millis(100)));
        // Idle time refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.take(later)).count(), 5);
    }
}
