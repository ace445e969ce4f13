//! An in-process connection to the embedded broker (QoS 0), split into a publisher that
//! any thread may use and a receiver driven by one async task.

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
    pub topic: String,
    /// Shared with the broker's log: no copy is made until a module call lowers it.
    pub payload: bytes::Bytes,
    /// Whether it was published at QoS 1 or 2: its publisher was (or will be) told it was
    /// delivered, so it must not be dropped. The link itself receives at QoS 0.
    pub acknowledged: bool,
}

/// Receives the messages that match the link's subscriptions.
pub struct LocalReceiver {
    rx: LinkRx,
}

impl std::fmt::Debug for LocalReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalReceiver")
    }
}

impl LocalReceiver {
    /// The next message; `None` when the broker is gone.
    pub async fn next(&mut self) -> Option<Delivery> {
        loop {
            match self.rx.next().await {
                Ok(Some(Notification::Forward(forward))) => {
                    let topic = String::from_utf8_lossy(&forward.publish.topic).into_owned();
                    return Some(Delivery {
                        topic,
                        payload: forward.publish.payload,
                        acknowledged: forward.published_qos != rumqttd::protocol::QoS::AtMostOnce,
                    });
                }
                // The router stops scheduling a link whose buffer it filled; it must be
                // told we are ready again or delivery stalls for good.
                Ok(Some(Notification::Unschedule)) => {
                    if self.rx.wake().await.is_err() {
                        return None;
                    }
                }
                Ok(Some(_)) | Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "local broker link closed");
                    return None;
                }
            }
        }
    }
}

pub(crate) fn split(tx: LinkTx, rx: LinkRx) -> (LocalPublisher, LocalReceiver) {
    (
        LocalPublisher {
            tx: Arc::new(Mutex::new(tx)),
        },
        LocalReceiver { rx },
    )
}
