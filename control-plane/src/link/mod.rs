//! The node link: the control plane's MQTT session with its nodes: heartbeats, wills and blob requests in; desired
//! states and blob chunks out.
//!
//! The control plane is an ordinary MQTT client (rumqttc) of the broker, embedded or
//! external, so both setups run the same code. rumqttc's event loop must never wait on
//! our handlers (a handler waiting to publish while the loop waits on the handler is a
//! deadlock), so incoming messages go to two handler tasks with `try_send` over bounded
//! queues, one for heartbeats and certificate requests and one for telemetry, blobs and
//! events, each with a per-node share ([`lanes`]); a full queue or share drops the message
//! and counts it. Every inbound message is either repeated by its sender (heartbeats,
//! telemetry until acknowledged) or retried on a timeout (blob requests).

//!
//! - [`session`]: MQTT I/O: connect, subscribe, reconnect with back-off; each message's
//!   topic parsed and offered to a lane.
//! - [`lanes`]: two bounded inbound queues with a per-node share (fairness).
//! - [`inbound`]: the handler tasks: decode, dispatch to the domain rooms, answer through
//!   the outbox ([`crate::outbox`]).
//! - [`liveness`]: whether the handlers run and move (readiness).

mod inbound;
mod lanes;
mod liveness;
mod session;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use rumqttc::{AsyncClient, MqttOptions};

use crate::fleet::Fleet;
use crate::outbox::Outbox;
use crate::reconcile::Reconciler;
use crate::rollout::RolloutEngine;
use crate::store::Store;

pub use session::LinkSession;

/// Counters of the session.
#[derive(Debug, Default)]
pub struct Counters {
    /// Live heartbeats processed.
    pub heartbeats: AtomicU64,
    pub decode_errors: AtomicU64,
    pub dropped_inbound: AtomicU64,
    pub impersonation: AtomicU64,
    pub telemetry_stored: AtomicU64,
    pub telemetry_duplicates: AtomicU64,
    pub telemetry_lost: AtomicU64,
    /// Acknowledgements sent for telemetry batches.
    pub telemetry_acks: AtomicU64,
    /// Whether our session is connected to the broker (readiness).
    pub connected: AtomicBool,
    /// Times our session connected to the broker: 1 in a healthy run; more means it was
    /// cut off (a broker restart, or a client taking its id).
    pub connects: AtomicU64,
    /// Whether the inbound handlers run and move (readiness).
    pub liveness: liveness::Liveness,
}

/// What the session's handler needs.
#[derive(Debug, Clone)]
pub struct Context {
    pub store: Store,
    pub fleet: Arc<Fleet>,
    pub reconciler: Arc<Reconciler>,
    pub rollouts: Arc<RolloutEngine>,
    pub outbox: Outbox,
    pub counters: Arc<Counters>,
    pub identity: Option<Arc<crate::identity::NodeIdentities>>,
    pub precompiler: Arc<crate::precompile::Precompiler>,
}

/// Creates the client; [`LinkSession::run`] drives it.
pub fn connect(
    broker: (&str, u16),
    client_id: &str,
    max_payload: usize,
    tls: Option<Arc<rustls::ClientConfig>>,
    credentials: Option<(String, String)>,
) -> (Outbox, LinkSession) {
    let mut opts = MqttOptions::new(client_id, broker.0, broker.1);
    if let Some((user, password)) = credentials {
        opts.set_credentials(user, password);
    }
    if let Some(tls) = tls {
        opts.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls),
        ));
    }
    opts.set_keep_alive(Duration::from_secs(10));
    opts.set_clean_session(true);
    // rumqttc's default limit is 10 KiB and an oversize packet kills its event loop.
    opts.set_max_packet_size(max_payload + 1024, max_payload + 1024);
    opts.set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    let mut net = eventloop.network_options();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    (
        Outbox::new(client.clone()),
        LinkSession { client, eventloop },
    )
}
