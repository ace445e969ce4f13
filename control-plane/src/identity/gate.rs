//! The broker's gate: TLS, who may connect, and the topics each connection may use.
//!
//! Topic confinement is enforced here, inside our copy of rumqttd (its gate patch), rather
//! than by signing every message: the broker already knows who is on each connection from
//! the TLS handshake, a check per PUBLISH costs a string comparison, and a refused packet
//! never reaches another subscriber. Signed messages would cost a signature per telemetry
//! batch on small devices and still let a node flood others' topics.
//!
//! - A node (client certificate, common name = node id) must use its node id as MQTT
//!   client id (no taking over another node's session), may set a last will only on its
//!   own status topic, publish only the kinds a node sends under `wedge/v1/nodes/{id}/`,
//!   and subscribe only to its own topics; only its status may be retained. Anything else
//!   ends its connection.
//! - The control plane's own client (the certificate made at this start) may do anything.
//! - A client without a certificate may only enroll: password = a valid bootstrap token
//!   that covers the node id it asks for (its client id), an id nobody holds a valid
//!   certificate for; one request topic and one reply topic, for at most a minute.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use wedge_broker::{Admission, BoxFuture, Gate, Refusal, Session, Stream, Unrestricted};
use wedge_proto::topics::{self, NodeTopic};

use super::{EnrollRefusal, NodeIdentities};
use crate::time::now_ms;

/// How long an enrollment connection may stay.
const ENROLL_SESSION: Duration = Duration::from_secs(60);

pub struct NodeGate {
    identity: Arc<NodeIdentities>,
}

impl NodeGate {
    pub fn new(identity: Arc<NodeIdentities>) -> Self {
        Self { identity }
    }
}

impl Gate for NodeGate {
    fn accept(
        &self,
        stream: tokio::net::TcpStream,
    ) -> BoxFuture<std::io::Result<(Box<dyn Stream>, Option<Vec<u8>>)>> {
        let config = self.identity.server.clone();
        Box::pin(async move {
            let (stream, peer) = wedge_pki::accept(config, stream).await?;
            Ok((Box::new(stream) as Box<dyn Stream>, peer))
        })
    }

    fn admit(&self, admission: Admission) -> BoxFuture<Result<Arc<dyn Session>, Refusal>> {
        let result = admit(&self.identity, admission);
        Box::pin(async move { result })
    }
}

fn admit(identity: &Arc<NodeIdentities>, a: Admission) -> Result<Arc<dyn Session>, Refusal> {
    let Some(der) = a.peer_certificate else {
        return admit_enrollment(identity, &a.client_id, a.password.as_deref(), a.will_topic);
    };
    let id = wedge_pki::inspect(&der).map_err(|_| Refusal::NotAuthorized)?;
    if let Some(service) = id.service() {
        if service == "control-plane" && identity.is_service(&id.fingerprint) {
            return Ok(Arc::new(Unrestricted::default()));
        }
        tracing::warn!(
            service,
            "a service certificate not made by this control plane"
        );
        return Err(Refusal::NotAuthorized);
    }
    let node = id.common_name;
    if topics::validate_id(&node).is_err() {
        return Err(Refusal::NotAuthorized);
    }
    if a.client_id != node {
        tracing::warn!(
            node,
            client_id = a.client_id,
            "client id is not the certificate's node"
        );
        return Err(Refusal::ClientIdentifierNotValid);
    }
    if identity.is_revoked(&node, id.issued_ms) {
        tracing::warn!(node, "revoked certificate refused");
        return Err(Refusal::NotAuthorized);
    }
    if let Some(will) = &a.will_topic
        && *will != NodeTopic::Status.for_node(&node)
    {
        tracing::warn!(node, will, "last will on a foreign topic refused");
        return Err(Refusal::NotAuthorized);
    }
    Ok(Arc::new(NodeSession {
        changes: identity.changes(),
        identity: identity.clone(),
        issued_ms: id.issued_ms,
        not_after: id.not_after,
        node,
    }))
}

fn admit_enrollment(
    identity: &NodeIdentities,
    node: &str,
    password: Option<&str>,
    will: Option<String>,
) -> Result<Arc<dyn Session>, Refusal> {
    if topics::validate_id(node).is_err() || will.is_some() {
        return Err(Refusal::ClientIdentifierNotValid);
    }
    if let Err(e) = identity.may_enroll(node, password.unwrap_or_default(), now_ms()) {
        tracing::warn!(node, error = %e, "enrollment refused");
        return Err(match e {
            EnrollRefusal::Token(_) => Refusal::BadUserNamePassword,
            EnrollRefusal::Revoked(_) => Refusal::NotAuthorized,
            // "Identifier rejected": the id is taken. Refused at CONNECT, before the
            // session could take over the enrolled node's (same client id).
            EnrollRefusal::Enrolled(_) => Refusal::ClientIdentifierNotValid,
        });
    }
    Ok(Arc::new(EnrollSession {
        request: topics::enroll_request(node),
        reply: topics::enroll_reply(node),
    }))
}

/// An enrolled node's connection.
pub struct NodeSession {
    node: String,
    issued_ms: u64,
    not_after: SystemTime,
    identity: Arc<NodeIdentities>,
    changes: tokio::sync::watch::Receiver<u64>,
}

impl Session for NodeSession {
    fn may_publish(&self, topic: &str) -> bool {
        matches!(topics::parse(topic), Some((node, kind)) if node == self.node && kind.from_node())
    }

    fn may_subscribe(&self, filter: &str) -> bool {
        matches!(topics::parse(filter), Some((node, kind)) if node == self.node && !kind.from_node())
    }

    /// Only its status (heartbeat, goodbye) is retained, so a control plane that starts
    /// later sees it; nothing else a node sends is meant to outlive its connection.
    fn may_retain(&self, topic: &str) -> bool {
        topic == NodeTopic::Status.for_node(&self.node)
    }

    /// Ends at revocation, or when the certificate expires (the node has renewed long
    /// before and reconnects with the new one).
    fn ended(&self) -> BoxFuture<()> {
        let mut changes = self.changes.clone();
        let identity = self.identity.clone();
        let node = self.node.clone();
        let issued = self.issued_ms;
        let left = self
            .not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        Box::pin(async move {
            let revoked = async {
                loop {
                    if identity.is_revoked(&node, issued) {
                        return;
                    }
                    if changes.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                _ = revoked => tracing::warn!(node, "revoked: connection cut"),
                _ = tokio::time::sleep(left) => tracing::info!(node, "certificate expired: connection ended"),
            }
        })
    }
}

/// A connection that may only ask for its first certificate.
pub struct EnrollSession {
    request: String,
    reply: String,
}

impl Session for EnrollSession {
    fn may_publish(&self, topic: &str) -> bool {
        topic == self.request
    }

    fn may_subscribe(&self, filter: &str) -> bool {
        filter == self.reply
    }

    fn may_retain(&self, _: &str) -> bool {
        false
    }

    fn ended(&self) -> BoxFuture<()> {
        Box::pin(tokio::time::sleep(ENROLL_SESSION))
    }
}
