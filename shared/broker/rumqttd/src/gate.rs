//! Wedge patch: a gate in front of every network connection.
//!
//! rumqttd authenticates with a username/password callback at most and has no per-topic
//! rules. Wedge needs more on both of its brokers: the control plane's broker admits only
//! nodes holding a certificate from its CA and confines each to its own topics; a node's
//! local broker checks device passwords. A [`Gate`] in [`ConnectionSettings`](crate::ConnectionSettings)
//! does the transport handshake (TLS, in a task of the connection's own, with the
//! connection timeout: a client that never finishes its handshake cannot stall the accept
//! loop), decides about the CONNECT (refused with a CONNACK return code, so the client
//! learns why), and hands back a [`Session`] that every PUBLISH and SUBSCRIBE of the
//! connection is checked against, before it reaches the router. A packet the session does not allow ends the connection:
//! MQTT 3.1.1 has no way to refuse a single PUBLISH. [`Session::ended`] resolving ends it too,
//! at once (a revoked credential). Gated connections always get clean sessions and may not
//! use shared subscriptions (`$share/…`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use crate::link::network::N as Stream;

use crate::protocol::Packet;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

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
    fn accept(
        &self,
        stream: tokio::net::TcpStream,
    ) -> BoxFuture<std::io::Result<(Box<dyn Stream>, Option<Vec<u8>>)>>;

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
}

/// A session that may do anything and never ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unrestricted;

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
}

/// The first packet in `packets` the session does not allow, described; `None` when all
/// may pass. The broker runs it on every packet a gated connection reads, before any enters
/// the router; public so that the fuzz targets check this very function.
pub fn refused<'a>(
    session: &dyn Session,
    packets: impl Iterator<Item = &'a Packet>,
) -> Option<String> {
    for packet in packets {
        match packet {
            Packet::Publish(publish, _) => {
                let topic = String::from_utf8_lossy(&publish.topic);
                if !session.may_publish(&topic) {
                    return Some(format!("publish to {topic}"));
                }
                if publish.retain && !session.may_retain(&topic) {
                    return Some(format!("retained publish to {topic}"));
                }
            }
            Packet::Subscribe(subscribe, _) => {
                // Shared subscriptions ($share/group/filter) are not offered on gated
                // connections: rumqttd's shared-subscription state is not bounded per
                // client and its cleanup path has panicked.
                if let Some(f) = subscribe
                    .filters
                    .iter()
                    .find(|f| f.path.starts_with("$share/") || !session.may_subscribe(&f.path))
                {
                    return Some(format!("subscribe to {}", f.path));
                }
            }
            _ => {}
        }
    }
    None
}
