//! What the control plane sends nodes: desired states (retained), telemetry
//! acknowledgements, blob chunks and certificate replies. A handle on the node link's MQTT
//! client, below the domain rooms that send (reconcile) and the inbound handlers that
//! answer; it never reads.

use rumqttc::{AsyncClient, QoS};
use wedge_proto::encode;
use wedge_proto::messages::{BlobReply, CertReply, DesiredState, TelemetryAck};
use wedge_proto::topics::{self, NodeTopic};

/// Publishes to nodes on behalf of the control plane. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    client: AsyncClient,
}

impl Outbox {
    /// An outbox publishing through `client` (the node link's MQTT client).
    pub(crate) fn new(client: AsyncClient) -> Self {
        Self { client }
    }

    /// Publishes to one of `node`'s downward topics, at least once.
    async fn send(
        &self,
        kind: NodeTopic,
        node: &str,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), String> {
        self.client
            .publish(kind.for_node(node), QoS::AtLeastOnce, retain, payload)
            .await
            .map_err(|e| e.to_string())
    }

    /// Publishes a node's desired state, retained.
    pub async fn desired(&self, node: &str, state: &DesiredState) -> Result<(), String> {
        self.send(NodeTopic::Desired, node, true, encode(state))
            .await
    }

    pub(crate) async fn telemetry_ack(&self, node: &str, ack: &TelemetryAck) -> Result<(), String> {
        self.send(NodeTopic::TelemetryAck, node, false, encode(ack))
            .await
    }

    pub(crate) async fn blob(&self, node: &str, reply: &BlobReply) -> Result<(), String> {
        self.send(NodeTopic::BlobData, node, false, encode(reply))
            .await
    }

    /// Answers a certificate request: on the node's own reply topic, or on the enrollment
    /// topic for `node` when the request came from an enrollment connection.
    pub(crate) async fn cert_reply(
        &self,
        node: &str,
        enroll: bool,
        reply: &CertReply,
    ) -> Result<(), String> {
        let topic = if enroll {
            topics::enroll_reply(node)
        } else {
            NodeTopic::CertReply.for_node(node)
        };
        self.client
            .publish(topic, QoS::AtLeastOnce, false, encode(reply))
            .await
            .map_err(|e| e.to_string())
    }
}
