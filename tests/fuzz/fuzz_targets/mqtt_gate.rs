//! The broker's MQTT 3.1.1 parser and the gate together, as a gated connection runs them:
//! the bytes a client sends are cut into packets, and each read's packets are checked
//! against a node's session before any could reach the router. Never a panic; and whatever
//! the gate lets through is a node's own upward topic (the rules the control plane's
//! `NodeSession` applies, checked here independently of the session's code).
#![no_main]

use bytes::BytesMut;
use rumqttd::gate::{BoxFuture, Session, refused};
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::{Packet, Protocol};
use wedge_proto::topics::{self, NodeTopic};

const NODE: &str = "edge-1";
/// The control plane's default `mqtt_max_payload`, so large packets are parsed too.
const MAX_PACKET: usize = 1024 * 1024;

struct NodeRules;

impl Session for NodeRules {
    fn may_publish(&self, topic: &str) -> bool {
        matches!(topics::parse(topic), Some((node, kind)) if node == NODE && kind.from_node())
    }
    fn may_subscribe(&self, filter: &str) -> bool {
        matches!(topics::parse(filter), Some((node, kind)) if node == NODE && !kind.from_node())
    }
    fn may_retain(&self, topic: &str) -> bool {
        topic == NodeTopic::Status.for_node(NODE)
    }
    fn ended(&self) -> BoxFuture<()> {
        Box::pin(std::future::pending())
    }
}

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let mut stream = BytesMut::from(input);
    let mut packets = Vec::new();
    let mut protocol = V4;
    while let Ok(packet) = protocol.read_mut(&mut stream, MAX_PACKET) {
        packets.push(packet);
    }
    if refused(&NodeRules, packets.iter()).is_some() {
        return;
    }
    for packet in &packets {
        match packet {
            Packet::Publish(publish, _) => {
                let topic = std::str::from_utf8(&publish.topic).unwrap_or("");
                let own = format!("wedge/v1/nodes/{NODE}/");
                assert!(
                    topic.starts_with(&own),
                    "a publish to {topic:?} got through"
                );
                assert!(
                    !publish.retain || topic == NodeTopic::Status.for_node(NODE),
                    "a retained publish to {topic:?} got through"
                );
            }
            Packet::Subscribe(subscribe, _) => {
                for f in &subscribe.filters {
                    assert!(
                        f.path.starts_with(&format!("wedge/v1/nodes/{NODE}/")),
                        "a subscription to {:?} got through",
                        f.path
                    );
                }
            }
            _ => {}
        }
    }
});
