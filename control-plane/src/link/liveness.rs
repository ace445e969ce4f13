//! Whether the inbound lanes' handlers are alive and moving, for `/readyz`.
//!
//! A control plane whose MQTT session is connected but whose handler task has ended (a bug
//! that panics, in a build that unwinds) or hangs on one message (a store that stopped
//! answering) looks healthy while it drops every heartbeat: the fleet goes offline and no
//! probe says why. Each handler holds an [`Alive`] guard that clears its flag when the
//! task ends, however it ends, and marks when it started the message it is on; readiness
//! fails for a lane that is gone or has been on one message longer than [`STUCK_AFTER`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The inbound lanes, in the order of [`super::lanes::Lanes::new`]'s receivers.
pub const LANES: [&str; 2] = ["control", "bulk"];

/// How long one message may take before the lane counts as stuck. Far above any honest
/// message's cost (a telemetry batch's flush, a blob window's read).
pub const STUCK_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct Liveness {
    alive: [AtomicBool; LANES.len()],
    /// When the lane's handler started its current message (ms, our clock); 0: idle.
    busy_since_ms: [AtomicU64; LANES.len()],
}

impl Liveness {
    /// What keeps the inbound path from being ready, if anything.
    pub fn problem(&self, now_ms: u64) -> Option<String> {
        for (i, lane) in LANES.iter().enumerate() {
            if !self.alive[i].load(Ordering::Relaxed) {
                return Some(format!(
                    "the inbound handler of the {lane} lane is not running"
                ));
            }
            let since = self.busy_since_ms[i].load(Ordering::Relaxed);
            if since != 0 && now_ms.saturating_sub(since) > STUCK_AFTER.as_millis() as u64 {
                return Some(format!(
                    "the inbound handler of the {lane} lane has been on one message for {} s",
                    now_ms.saturating_sub(since) / 1000
                ));
            }
        }
        None
    }
}

/// Held by a lane's handler for as long as it runs.
pub struct Alive {
    counters: Arc<super::Counters>,
    lane: usize,
}

impl Alive {
    pub fn new(counters: Arc<super::Counters>, lane: usize) -> Self {
        counters.liveness.alive[lane].store(true, Ordering::Relaxed);
        Self { counters, lane }
    }

    /// The handler starts a message at `now_ms`.
    pub fn busy(&self, now_ms: u64) {
        self.counters.liveness.busy_since_ms[self.lane].store(now_ms.max(1), Ordering::Relaxed);
    }

    /// The handler is done with its message.
    pub fn idle(&self) {
        self.counters.liveness.busy_since_ms[self.lane].store(0, Ordering::Relaxed);
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.counters.liveness.alive[self.lane].store(false, Ordering::Relaxed);
        self.idle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::Counters;

    #[tokio::test]
    async fn a_handler_that_ends_or_hangs_makes_the_path_unready() {
        let counters = Arc::new(Counters::default());
        assert!(
            counters.liveness.problem(1).is_some(),
            "nothing started yet"
        );
        let control = Alive::new(counters.clone(), 0);
        let bulk = Alive::new(counters.clone(), 1);
        assert_eq!(counters.liveness.problem(1_000), None);

        // One message taking longer than STUCK_AFTER.
        bulk.busy(1_000);
        assert_eq!(counters.liveness.problem(2_000), None);
        let late = 1_000 + STUCK_AFTER.as_millis() as u64 + 1;
        let problem = counters.liveness.problem(late).unwrap_or_default();
        assert!(
            problem.contains("bulk lane has been on one message"),
            "{problem}"
        );
        bulk.idle();
        assert_eq!(counters.liveness.problem(late), None);

        // A handler task that panics drops its guard while unwinding.
        let task = tokio::spawn(async move {
            let _control = control;
            panic!("a bug in a handler");
        });
        assert!(task.await.is_err());
        let problem = counters.liveness.problem(late).unwrap_or_default();
        assert!(problem.contains("control lane is not running"), "{problem}");
        drop(bulk);
    }
}
