//! The gate in front of every network connection of Wedge's embedded brokers.
//!
//! rumqttd authenticates with a username/password callback at most and has no per-topic
//! rules. Wedge needs more on both of its brokers: the control plane's broker admits only
//! nodes holding a certificate from its CA and confines each to its own topics; a node's
//! local broker checks device passwords. A [`Gate`] does the transport handshake (TLS, in
//! the connection's own task, under the connection timeout: a client that never finishes
//! its handshake cannot stall the accept loop), decides about the CONNECT (refused with a
//! CONNACK return code, so the client learns why), and hands back a [`Session`] that every
//! PUBLISH and SUBSCRIBE of the connection is checked against ([`refused`]) before it
//! reaches the router. A packet the session does not allow ends the connection: MQTT 3.1.1
//! has no way to refuse a single PUBLISH. [`Session::ended`] resolving ends it too, at once
//! (a revoked credential).
//!
//! This crate is Wedge's; the patch to rumqttd (`vendor/rumqttd/patches/`, "gate") only
//! calls it, so the rules live here and not in somebody else's code. It depends on nothing
//! of rumqttd: a packet is described to it as a [`Request`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncWrite};

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The byte stream MQTT is read from once the gate has accepted a connection.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// An accepted connection: the stream MQTT is read from and the DER of the peer's
/// certificate, if the transport has one.
pub type Accepted = (Box<dyn Stream>, Option<Vec<u8>>);

/// What a client presented.
#[derive(Debug, Clone)]
pub struct Admission {
    /// DER of the client's (already verified) certificate, when the transport has one.
    pub peer_certificate: Option<Vec<u8>>,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The topic of the client's last will, if it set one.
    pub will_topic: Option<String>,
}

/// Why a CONNECT is refused; sent as the CONNACK return code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    BadUserNamePassword,
    NotAuthorized,
    ClientIdentifierNotValid,
}

/// Admission control for one listener.
pub trait Gate: Send + Sync + 'static {
    /// Turns an accepted TCP connection into the stream MQTT is read from (e.g. after a TLS
    /// handshake) and the peer certificate's DER, if any.
    fn accept(&self, stream: tokio::net::TcpStream) -> BoxFuture<std::io::Result<Accepted>>;

    /// Admits or refuses a CONNECT.
    fn admit(&self, admission: Admission) -> BoxFuture<Result<Arc<dyn Session>, Refusal>>;
}

/// The rules of one admitted connection.
pub trait Session: Send + Sync + 'static {
    fn may_publish(&self, topic: &str) -> bool;
    fn may_subscribe(&self, filter: &str) -> bool;
    /// Whether a PUBLISH to `topic` (already allowed by [`Session::may_publish`]) may set
    /// the retain flag: a retained message outlives the connection and reaches every later
    /// subscriber.
    fn may_retain(&self, _topic: &str) -> bool {
        true
    }
    /// Resolves when the connection must end now.
    fn ended(&self) -> BoxFuture<()>;
    /// The pace the connection reads at: while it is held, nothing more is read from the
    /// client (so nothing more is acknowledged). `None`: read as fast as the client sends.
    fn pace(&self) -> Option<Pace> {
        None
    }
}

/// Back-pressure shared by the connections of one broker: the consumer that lags holds it,
/// and every connection carrying it stops reading until it is released.
///
/// A QoS 1 PUBLISH is acknowledged as soon as the broker has appended it to its log, so a
/// consumer that cannot keep up has only one honest way to slow devices down: stop reading
/// from them. Their inflight windows then fill (no PUBACKs) and TCP does the rest; what was
/// already read is bounded by one read (at most the connection's inflight count of packets)
/// per connection.
#[derive(Debug, Clone)]
pub struct Pace {
    held: Arc<tokio::sync::watch::Sender<bool>>,
    holds: Arc<AtomicU64>,
}

impl Default for Pace {
    fn default() -> Self {
        Self {
            held: Arc::new(tokio::sync::watch::Sender::new(false)),
            holds: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Pace {
    /// Stops reading on every connection carrying this pace.
    pub fn hold(&self) {
        let changed = self
            .held
            .send_if_modified(|held| !std::mem::replace(held, true));
        if changed {
            self.holds.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lets them read again.
    pub fn release(&self) {
        self.held
            .send_if_modified(|held| std::mem::replace(held, false));
    }

    pub fn held(&self) -> bool {
        *self.held.borrow()
    }

    /// How many times it has been held.
    pub fn holds(&self) -> u64 {
        self.holds.load(Ordering::Relaxed)
    }

    /// Resolves once the pace is held (a connection waiting for its next packet stops
    /// waiting, so the hold applies to that packet too).
    pub fn holding(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.held.subscribe();
        async move {
            let _ = rx.wait_for(|held| *held).await;
        }
    }

    /// Resolves once the pace is not held.
    pub fn released(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.held.subscribe();
        async move {
            // An error means the sender is gone, which `self` (an Arc of it) rules out
            // while anyone can still hold it.
            let _ = rx.wait_for(|held| !*held).await;
        }
    }
}

/// A session that may do anything and never ends; it reads at `pace` when it has one.
#[derive(Debug, Clone, Default)]
pub struct Unrestricted {
    pub pace: Option<Pace>,
}

impl Session for Unrestricted {
    fn may_publish(&self, _: &str) -> bool {
        true
    }
    fn may_subscribe(&self, _: &str) -> bool {
        true
    }
    fn ended(&self) -> BoxFuture<()> {
        Box::pin(std::future::pending())
    }
    fn pace(&self) -> Option<Pace> {
        self.pace.clone()
    }
}

/// One packet of a gated connection, as far as the gate cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    Publish {
        topic: &'a str,
        retain: bool,
    },
    /// One filter of a SUBSCRIBE.
    Subscribe {
        filter: &'a str,
    },
}

/// Why `request` may not pass, described; `None` when it may. The broker runs it on every
/// packet a gated connection reads, before any enters the router.
pub fn refused(session: &dyn Session, request: Request<'_>) -> Option<String> {
    match request {
        Request::Publish { topic, .. } if !session.may_publish(topic) => {
            Some(format!("publish to {topic}"))
        }
        Request::Publish {
            topic,
            retain: true,
        } if !session.may_retain(topic) => Some(format!("retained publish to {topic}")),
        Request::Publish { .. } => None,
        // Shared subscriptions ($share/group/filter) are not offered on gated connections:
        // rumqttd's shared-subscription state is not bounded per client and its cleanup
        // path has panicked.
        Request::Subscribe { filter }
            if filter.starts_with("$share/") || !session.may_subscribe(filter) =>
        {
            Some(format!("subscribe to {filter}"))
        }
        Request::Subscribe { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct OwnTopics;

    impl Session for OwnTopics {
        fn may_publish(&self, topic: &str) -> bool {
            topic.starts_with("mine/")
        }
        fn may_subscribe(&self, filter: &str) -> bool {
            filter.starts_with("mine/")
        }
        fn may_retain(&self, topic: &str) -> bool {
            topic == "mine/status"
        }
        fn ended(&self) -> BoxFuture<()> {
            Box::pin(std::future::pending())
        }
    }

    #[test]
    fn the_session_decides_and_shared_subscriptions_never_pass() {
        let publish = |topic, retain| refused(&OwnTopics, Request::Publish { topic, retain });
        let subscribe = |filter| refused(&OwnTopics, Request::Subscribe { filter });
        assert_eq!(publish("mine/x", false), None);
        assert_eq!(publish("mine/status", true), None);
        assert_eq!(
            publish("mine/x", true).as_deref(),
            Some("retained publish to mine/x")
        );
        assert_eq!(
            publish("yours/x", false).as_deref(),
            Some("publish to yours/x")
        );
        assert_eq!(subscribe("mine/#"), None);
        assert_eq!(
            subscribe("yours/#").as_deref(),
            Some("subscribe to yours/#")
        );
        assert!(
            refused(
                &Unrestricted::default(),
                Request::Subscribe {
                    filter: "$share/g/x"
                }
            )
            .is_some()
        );
        assert_eq!(
            refused(
                &Unrestricted::default(),
                Request::Publish {
                    topic: "x",
                    retain: true
                }
            ),
            None
        );
    }

    #[tokio::test]
    async fn a_held_pace_is_released_once_and_counts_its_holds() {
        let pace = Pace::default();
        assert!(!pace.held());
        pace.released().await;

        pace.hold();
        pace.hold();
        assert!(pace.held());
        let waiting = pace.released();
        let early = tokio::time::timeout(std::time::Duration::from_millis(20), pace.released());
        assert!(early.await.is_err(), "released while held");

        pace.release();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("released after release()");
        assert!(!pace.held());
        assert_eq!(pace.holds(), 1, "a hold while held is the same hold");
    }
}
