//! Wedge patch: a gate in front of every network connection.
//!
//! The traits and the rules are Wedge's own (the `wedge-gate` crate); this module only
//! re-exports them and describes rumqttd's packets to them. With a gate in
//! [`ConnectionSettings`](crate::ConnectionSettings) the handshake runs in the connection's
//! own task, the CONNECT is admitted or refused with a CONNACK return code, and every
//! packet a connection reads is checked before any of it enters the router. Gated
//! connections always get clean sessions. Without a gate nothing changes.

pub use wedge_gate::{
    Admission, BoxFuture, Gate, Pace, Refusal, Request, Session, Stream, Unrestricted,
};

use crate::protocol::Packet;

/// The first packet in `packets` the session does not allow, described; `None` when all
/// may pass. Public so that the fuzz targets check this very function.
pub fn refused<'a>(
    session: &dyn Session,
    packets: impl Iterator<Item = &'a Packet>,
) -> Option<String> {
    for packet in packets {
        let refusal = match packet {
            Packet::Publish(publish, _) => {
                let topic = String::from_utf8_lossy(&publish.topic);
                let retain = publish.retain;
                wedge_gate::refused(session, Request::Publish { topic: &topic, retain })
            }
            Packet::Subscribe(subscribe, _) => subscribe.filters.iter().find_map(|f| {
                wedge_gate::refused(session, Request::Subscribe { filter: &f.path })
            }),
            _ => None,
        };
        if refusal.is_some() {
            return refusal;
        }
    }
    None
}
