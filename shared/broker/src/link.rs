//! An in-process connection to the embedded broker (QoS 0), split into a publisher that
//! any thread may use and a receiver driven by one async task.

use std::future::Future as _;
use std::sync::{Arc, Mutex};

use rumqttd::Notification;
use rumqttd::local::{LinkRx, LinkTx};

/// Why a link operation failed.
#[derive(Debug, thiserror::Error)]
#[error("local broker link: {0}")]
pub struct LinkError(String);

/// Publishes and subscribes on the embedded broker. Cheap to clone; blocking only while
/// the broker's router queue is full.
#[derive(Clone)]
pub struct LocalPublisher {
    tx: Arc<Mutex<LinkTx>>,
}

impl std::fmt::Debug for LocalPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalPublisher")
    }
}

impl LocalPublisher {
    fn with(&self, f: impl FnOnce(&mut LinkTx) -> Result<(), String>) -> Result<(), LinkError> {
        // A poisoned lock only means another thread panicked mid-call; the link itself
        // is still consistent (each call pushes one whole packet).
        let mut tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut tx).map_err(LinkError)
    }

    pub fn publish(&self, topic: impl Into<String>, payload: Vec<u8>) -> Result<(), LinkError> {
        self.with(|tx| {
            tx.publish(topic.into(), payload)
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }

    pub fn subscribe(&self, filter: &str) -> Result<(), LinkError> {
        self.with(|tx| {
            tx.subscribe(filter.to_string())
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }

    pub fn unsubscribe(&self, filter: &str) -> Result<(), LinkError> {
        self.with(|tx| {
            tx.unsubscribe(filter.to_string())
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }
}

/// One message delivered to the link.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Shared by every module the message goes to.
    pub topic: Arc<str>,
    /// Shared with the broker's log: no copy is made until a module call lowers it.
    pub payload: bytes::Bytes,
    /// Whether it was published at QoS 1 or 2: its publisher was (or will be) told it was
    /// delivered, so it must not be dropped. The link itself receives at QoS 0.
    pub acknowledged: bool,
}

/// Receives the messages that match the link's subscriptions.
///
/// The broker hands the link its messages in batches; [`Self::try_next`] takes the rest of
/// a batch without waiting, so a reader can handle a batch at a time.
pub struct LocalReceiver {
    rx: LinkRx,
    /// The broker unscheduled the link while [`Self::try_next`] read (it cannot wait):
    /// the next [`Self::next`] tells the broker we are ready again, first.
    owe_wake: bool,
}

impl std::fmt::Debug for LocalReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalReceiver")
    }
}

/// What one notification from the broker means to the reader.
enum Step {
    Deliver(Delivery),
    /// The broker stopped scheduling the link: it must be woken or delivery stalls.
    Unscheduled,
    Nothing,
    Closed,
}

impl LocalReceiver {
    /// The next message; `None` when the broker is gone.
    pub async fn next(&mut self) -> Option<Delivery> {
        loop {
            if self.owe_wake {
                if self.rx.wake().await.is_err() {
                    return None;
                }
                self.owe_wake = false;
            }
            match step(self.rx.next().await) {
                Step::Deliver(delivery) => return Some(delivery),
                Step::Unscheduled => self.owe_wake = true,
                Step::Nothing => {}
                Step::Closed => return None,
            }
        }
    }

    /// The next message if one is ready now (the rest of the broker's batch); `None`
    /// otherwise, and then [`Self::next`] waits for more.
    pub fn try_next(&mut self) -> Option<Delivery> {
        if self.owe_wake {
            return None;
        }
        loop {
            // Polled once: LinkRx::next completes in its first poll when a batch is cached
            // or signalled, and takes nothing when it is pending, so dropping it loses nothing.
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            let polled = std::pin::pin!(self.rx.next()).as_mut().poll(&mut cx);
            let std::task::Poll::Ready(next) = polled else {
                return None;
            };
            match step(next) {
                Step::Deliver(delivery) => return Some(delivery),
                Step::Unscheduled => {
                    self.owe_wake = true;
                    return None;
                }
                Step::Nothing => {}
                // `next` says so too.
                Step::Closed => return None,
            }
        }
    }
}

fn step(next: Result<Option<Notification>, rumqttd::local::LinkError>) -> Step {
    match next {
        Ok(Some(Notification::Forward(forward))) => Step::Deliver(Delivery {
            topic: Arc::from(String::from_utf8_lossy(&forward.publish.topic).as_ref()),
            payload: forward.publish.payload,
            acknowledged: forward.published_qos != rumqttd::protocol::QoS::AtMostOnce,
        }),
        // The router stops scheduling a link whose buffer it filled; it must be told we
        // are ready again or delivery stalls for good.
        Ok(Some(Notification::Unschedule)) => Step::Unscheduled,
        Ok(Some(_)) | Ok(None) => Step::Nothing,
        Err(e) => {
            tracing::warn!(error = %e, "local broker link closed");
            Step::Closed
        }
    }
}

pub(crate) fn split(tx: LinkTx, rx: LinkRx) -> (LocalPublisher, LocalReceiver) {
    (
        LocalPublisher {
            tx: Arc::new(Mutex::new(tx)),
        },
        LocalReceiver {
            rx,
            owe_wake: false,
        },
    )
}
