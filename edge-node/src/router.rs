//! Hands every message on the local broker to the modules whose subscriptions match.
//!
//! The node's in-process link subscribes to `#` once and matches filters itself, instead
//! of subscribing to each module's filters: with overlapping filters (`sensors/#` and
//! `sensors/temp`) the broker would deliver one message once per filter, and each module
//! must see it exactly once.
//!
//! ## Back-pressure
//! Each module has a bounded queue (`[limits] queue`). What happens when it is full depends
//! on what the publisher was promised:
//! - **QoS 0**: the message is dropped for that module and counted (`dropped` in the API,
//!   `wedge_node_module_dropped_total`); other modules still get it.
//! - **QoS 1 and 2**: the broker has acknowledged it, so it is not dropped. The router holds
//!   the devices' [`Pace`] — the local broker stops reading from every device connection,
//!   so no further PUBLISH is acknowledged — and waits for room, at most [`WAIT_MAX`]. A
//!   queue that is three quarters full already holds the pace, so devices slow down
//!   before anything has to wait; the pace is released once every queue that held it is
//!   at most half full. A module that takes nothing for [`WAIT_MAX`] (stuck compiling,
//!   restarting in back-off) is skipped: that message is dropped for it and counted, and
//!   the others go on.
//!
//! Messages the node's own modules publish come over the in-process link at QoS 0 and are
//! never waited for: a module that fills its own input could otherwise stall the router.
//!
//! ## Batches
//! The broker hands the link its messages in batches. The router takes a whole batch (up to
//! [`BATCH`]) per wake-up and dispatches it under one look at the routes, instead of going
//! through the select loop, the route table's lock and the pace check once per message.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wedge_broker::{Delivery, LocalReceiver, Pace};
use wedge_proto::topics::matches;

use crate::runtime::Message;
use crate::runtime::instance::Inbox;

/// Longest the router waits for room for one acknowledged message in one module's queue.
pub const WAIT_MAX: Duration = Duration::from_secs(10);
/// Most messages dispatched per wake-up before shutdown and the pace are looked at again.
pub const BATCH: usize = 256;
/// While held, how often the router looks whether the queues have drained.
const RELEASE_CHECK: Duration = Duration::from_millis(5);

/// One module's subscriptions and where its messages go.
#[derive(Debug, Clone)]
pub struct Route {
    pub module: String,
    pub filters: Vec<String>,
    pub inbox: Inbox,
}

/// The routes in force; the agent replaces them when modules change.
#[derive(Debug, Clone, Default)]
pub struct RouteTable(Arc<RwLock<Vec<Route>>>);

/// A message that found a full queue and must wait for room in it.
#[derive(Debug)]
pub struct Waiting {
    pub module: String,
    pub inbox: Inbox,
    pub message: Message,
}

impl RouteTable {
    pub fn replace(&self, routes: Vec<Route>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = routes;
    }

    /// Offers the message to every matching module without blocking. A full queue drops a
    /// QoS 0 message (counted); an acknowledged message is handed back to wait for room.
    /// `pressed` gets each queue an acknowledged message filled past three quarters.
    pub fn dispatch(&self, delivery: Delivery, pressed: &mut Vec<Inbox>) -> (usize, Vec<Waiting>) {
        dispatch(&self.read(), delivery, pressed)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Route>> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// [`RouteTable::dispatch`] with the routes already read.
fn dispatch(
    routes: &[Route],
    delivery: Delivery,
    pressed: &mut Vec<Inbox>,
) -> (usize, Vec<Waiting>) {
    let message = Message {
        topic: delivery.topic,
        payload: delivery.payload,
    };
    let mut delivered = 0;
    let mut waiting = Vec::new();
    for route in routes {
        if !route.filters.iter().any(|f| matches(f, &message.topic)) {
            continue;
        }
        delivered += 1;
        if !delivery.acknowledged {
            route.inbox.offer(message.clone());
            continue;
        }
        match route.inbox.try_offer(message.clone()) {
            None => {
                let (len, room) = route.inbox.fill();
                if len * 4 >= room * 3 && !pressed.iter().any(|i| i.same(&route.inbox)) {
                    pressed.push(route.inbox.clone());
                }
            }
            Some(message) => waiting.push(Waiting {
                module: route.module.clone(),
                inbox: route.inbox.clone(),
                message,
            }),
        }
    }
    (delivered, waiting)
}

/// Dispatches `first` and what else the broker has ready, up to [`BATCH`] messages; stops
/// at the first message that must wait for room (the caller waits before going on, so no
/// later message overtakes it).
fn dispatch_batch(
    table: &RouteTable,
    receiver: &mut LocalReceiver,
    first: Delivery,
    pressed: &mut Vec<Inbox>,
) -> Vec<Waiting> {
    let routes = table.read();
    let (_, mut waiting) = dispatch(&routes, first, pressed);
    for _ in 1..BATCH {
        if !waiting.is_empty() {
            break;
        }
        let Some(delivery) = receiver.try_next() else {
            break;
        };
        waiting = dispatch(&routes, delivery, pressed).1;
    }
    waiting
}

/// The router's hold on the devices: which queues hold it.
struct Hold {
    pace: Pace,
    pressed: Vec<Inbox>,
    holding: bool,
}

impl Hold {
    /// Holds the pace while any queue is pressed.
    fn update(&mut self) {
        if self.pressed.is_empty() && !self.holding {
            return;
        }
        self.pressed.retain(|inbox| {
            let (len, room) = inbox.fill();
            !inbox.closed() && len * 2 > room
        });
        self.holding = !self.pressed.is_empty();
        if self.holding {
            self.pace.hold();
        } else {
            self.pace.release();
        }
    }

    async fn wait(&mut self, waiting: Vec<Waiting>) {
        for w in waiting {
            if !self.pressed.iter().any(|i| i.same(&w.inbox)) {
                self.pressed.push(w.inbox.clone());
            }
            self.holding = true;
            self.pace.hold();
            match tokio::time::timeout(WAIT_MAX, w.inbox.wait_send(w.message)).await {
                Ok(true) => {}
                // The instance is gone (replaced or removed); its successor has the route.
                Ok(false) => w.inbox.count_drop(),
                Err(_) => {
                    w.inbox.count_drop();
                    tracing::warn!(
                        module = w.module,
                        waited_s = WAIT_MAX.as_secs(),
                        "a module took no message for too long; an acknowledged message was \
                         dropped for it"
                    );
                }
            }
        }
    }
}

/// Runs until `shutdown` or until the broker link closes. `pace` is the devices' pace (the
/// local broker's gate hands it to every device connection).
pub async fn run(
    mut receiver: LocalReceiver,
    table: RouteTable,
    pace: Pace,
    shutdown: CancellationToken,
) {
    let mut hold = Hold {
        pace,
        pressed: Vec::new(),
        holding: false,
    };
    loop {
        let held = !hold.pressed.is_empty();
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = receiver.next() => next,
            _ = tokio::time::sleep(RELEASE_CHECK), if held => {
                hold.update();
                continue;
            }
        };
        let Some(delivery) = next else {
            tracing::error!("local broker link closed; local messages no longer reach modules");
            break;
        };
        let waiting = dispatch_batch(&table, &mut receiver, delivery, &mut hold.pressed);
        if !waiting.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = hold.wait(waiting) => {}
            }
        }
        hold.update();
    }
    // Devices must not stay paused by a router that is gone.
    hold.pace.release();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::runtime::instance::Queue;

    fn delivery(topic: &str, acknowledged: bool) -> Delivery {
        Delivery {
            topic: topic.into(),
            payload: bytes::Bytes::from_static(b"70"),
            acknowledged,
        }
    }

    fn route(name: &str, filter: &str, queue: &Queue) -> Route {
        Route {
            module: name.into(),
            filters: vec![filter.into()],
            inbox: queue.inbox(),
        }
    }

    #[test]
    fn a_full_queue_drops_qos0_counts_it_and_hands_acknowledged_messages_back() {
        let (a, b) = (
            Queue::new(4, Default::default(), Default::default()),
            Queue::new(4, Default::default(), Default::default()),
        );
        let table = RouteTable::default();
        table.replace(vec![route("a", "s/#", &a), route("b", "s/x", &b)]);
        let mut pressed = Vec::new();

        // Two acknowledged messages: a is at half, nothing pressed yet.
        for _ in 0..2 {
            let (n, waiting) = table.dispatch(delivery("s/x", true), &mut pressed);
            assert_eq!((n, waiting.len()), (2, 0));
        }
        assert!(pressed.is_empty());
        // The third fills both to three quarters: both press.
        table.dispatch(delivery("s/x", true), &mut pressed);
        assert_eq!(pressed.len(), 2);
        // Only a matches s/y; QoS 0 fills it, then is dropped and counted.
        table.dispatch(delivery("s/y", false), &mut pressed);
        table.dispatch(delivery("s/y", false), &mut pressed);
        assert_eq!(a.stats().dropped.load(Ordering::Relaxed), 1);
        // An acknowledged message for a full queue waits; for b (room left) it is queued.
        let (_, waiting) = table.dispatch(delivery("s/x", true), &mut pressed);
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting[0].module, "a");
        assert_eq!(&*waiting[0].message.topic, "s/x");
        assert_eq!(b.inbox().fill(), (4, 4));
        assert_eq!(pressed.len(), 2, "each queue presses once");
    }

    #[tokio::test]
    async fn the_pace_is_held_while_a_queue_is_pressed_and_released_at_half() {
        let queue = Queue::new(8, Default::default(), Default::default());
        let pace = Pace::default();
        let mut hold = Hold {
            pace: pace.clone(),
            pressed: vec![queue.inbox()],
            holding: false,
        };
        let message = || Message {
            topic: "t".into(),
            payload: bytes::Bytes::new(),
        };
        for _ in 0..8 {
            assert!(queue.inbox().try_offer(message()).is_none());
        }
        hold.update();
        assert!(pace.held());
        // The wait ends as soon as the module takes one.
        let Queue { rx, .. } = queue;
        let inbox = hold.pressed[0].clone();
        let taker = std::thread::spawn(move || {
            rx.recv().unwrap();
            rx
        });
        hold.wait(vec![Waiting {
            module: "m".into(),
            inbox: inbox.clone(),
            message: message(),
        }])
        .await;
        let rx = taker.join().unwrap();
        assert_eq!(inbox.fill().0, 8);
        hold.update();
        assert!(pace.held(), "still full");
        for _ in 0..4 {
            rx.try_recv().unwrap();
        }
        hold.update();
        assert!(!pace.held(), "released at half");
        assert_eq!(pace.holds(), 1);
    }
}
