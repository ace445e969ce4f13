//! Hands every message on the local broker to the modules whose subscriptions match.
//!
//! The node's in-process link subscribes to `#` once and matches filters itself, instead
//! of subscribing to each module's filters: with overlapping filters (`sensors/#` and
//! `sensors/temp`) the broker would deliver one message once per filter, and each module
//! must see it exactly once.

use std::sync::{Arc, RwLock};

use tokio_util::sync::CancellationToken;
use wedge_broker::LocalReceiver;
use wedge_proto::topics::matches;

use crate::runtime::Message;
use crate::runtime::instance::Inbox;

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

impl RouteTable {
    pub fn replace(&self, routes: Vec<Route>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = routes;
    }

    /// Offers the message to every matching module; never blocks.
    pub fn dispatch(&self, topic: &str, payload: &[u8]) -> usize {
        let routes = self.0.read().unwrap_or_else(|p| p.into_inner());
        let mut delivered = 0;
        for route in routes.iter() {
            if route.filters.iter().any(|f| matches(f, topic)) {
                route.inbox.offer(Message {
                    topic: topic.to_string(),
                    payload: payload.to_vec(),
                });
                delivered += 1;
            }
        }
        delivered
    }
}

/// Runs until `shutdown` or until the broker link closes.
pub async fn run(mut receiver: LocalReceiver, table: RouteTable, shutdown: CancellationToken) {
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = receiver.next() => next,
        };
        let Some((topic, payload)) = next else {
            tracing::error!("local broker link closed; local messages no longer reach modules");
            return;
        };
        table.dispatch(&topic, &payload);
    }
}
